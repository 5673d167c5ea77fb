/*
** sync.c: loom.Lock, RLock, Condition, Semaphore, BoundedSemaphore, Event,
** Barrier, and the guards (`<close>` values) of the lock-like ones.
**
** Every primitive is a refcounted loom_object shared by reference. The
** fast paths are atomics; each object also owns one pthread mutex `mu`
** and one condition variable `cv` used only to sleep (through loom__wait,
** so t:cancel() interrupts the sleep).
**
** Locks: each object's `mu` is a leaf: nothing else is taken while it is
** held (loom__wait takes the waiting thread's registration lock inside
** it, which wait.c allows). A Condition takes its own `mu` and, never at
** the same time, its lock's `mu`. No Lua error is ever raised with a `mu`
** held: every function unlocks, then raises.
**
** Wake-ups without lost signals (Lock, RLock, Semaphore): a sleeper bumps
** `waiters` (seq_cst) and then retries the atomic; a releaser stores the
** atomic (seq_cst) and then reads `waiters`. One of the two sees the
** other. A sleeper that leaves without taking what it was woken for
** (timeout, cancel) passes the wake-up on.
*/
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define SPIN 100 /* short adaptive spin before sleeping (uncontended ~ 1us) */

/* Identity of the caller for RLock ownership: loom.get_ident(), which is
** unique per loom thread even when loom reuses an OS thread. */
#define self_ident() loom__thread_ident()

/* Plain or cancellable sleep on cv; mu held. */
static int sleep_on(loom_object *owner, pthread_cond_t *cv, pthread_mutex_t *mu,
                    const struct timespec *dl, int cancellable) {
  if (cancellable) return loom__wait(owner, cv, mu, dl);
  int rc = dl ? pthread_cond_timedwait(cv, mu, dl) : pthread_cond_wait(cv, mu);
  return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* Reads acquire's (blocking, timeout) at idx, idx+1. Raises on misuse. */
static int opt_acquire_args(lua_State *L, int idx, struct timespec *ts,
                            int *has) {
  if (lua_gettop(L) < idx) { /* acquire(): the common case */
    *has = 0;
    return 1;
  }
  int blocking = lua_isnoneornil(L, idx) ? 1 : lua_toboolean(L, idx);
  if (!blocking && !lua_isnoneornil(L, idx + 1))
    luaL_argerror(L, idx + 1, "can't specify a timeout for a non-blocking call");
  *has = loom__opt_deadline(L, idx + 1, ts);
  return blocking;
}

/* The object at index 1. Every method and metamethod of these classes
** carries its class metatable as upvalue 1 (see bind_class), so the
** common case is one metatable comparison; anything else goes through
** the full check, which words the errors. */
static loom_object *fast_self(lua_State *L) {
  loom_object **box = (loom_object **)lua_touserdata(L, 1);
  if (box != NULL && *box != NULL && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return *box;
  }
  return NULL;
}

static loom_object *check_self(lua_State *L, const loom_class *cls) {
  loom_object *o = fast_self(L);
  return o != NULL ? o : loom__check_object(L, 1, cls);
}

#define CHECK(L, T, cls) ((T *)check_self((L), (cls)))

/* ------------------------------------------------------------------ */
/* corelock: the mutex under Lock and RLock                             */

typedef struct corelock {
  atomic_int state;   /* 0 free, 1 held */
  atomic_int waiters; /* threads in the slow path */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} corelock;

static int cl_init(corelock *c) {
  atomic_init(&c->state, 0);
  atomic_init(&c->waiters, 0);
  if (pthread_mutex_init(&c->mu, NULL) != 0) return -1;
  if (loom__cond_init(&c->cv) != 0) {
    pthread_mutex_destroy(&c->mu);
    return -1;
  }
  return 0;
}

static void cl_destroy(corelock *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

static inline int cl_try(corelock *c) {
  int z = 0;
  return atomic_compare_exchange_strong(&c->state, &z, 1);
}

/* 1 acquired, 0 not (non-blocking or timed out), LOOM_CANCELLED. */
static int cl_acquire(corelock *c, loom_object *owner, int blocking,
                      const struct timespec *dl, int cancellable) {
  if (cl_try(c)) return 1;
  if (!blocking) return 0;
  for (int i = 0; i < SPIN; i++) {
    LOOM_CPU_RELAX();
    if (atomic_load_explicit(&c->state, memory_order_relaxed) == 0 && cl_try(c))
      return 1;
  }
  int rc = 0, got = 0;
  pthread_mutex_lock(&c->mu);
  atomic_fetch_add(&c->waiters, 1);
  for (;;) {
    if (cl_try(c)) {
      got = 1;
      break;
    }
    if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) break;
    rc = sleep_on(owner, &c->cv, &c->mu, dl, cancellable);
  }
  atomic_fetch_sub(&c->waiters, 1);
  if (!got && atomic_load(&c->state) == 0 && atomic_load(&c->waiters) > 0)
    pthread_cond_signal(&c->cv); /* pass on a wake-up we may have taken */
  pthread_mutex_unlock(&c->mu);
  return got ? 1 : rc == LOOM_CANCELLED ? LOOM_CANCELLED : 0;
}

/* 0, or -1 when it was not held. */
static int cl_release(corelock *c) {
  if (atomic_exchange(&c->state, 0) == 0) return -1;
  if (atomic_load(&c->waiters) > 0) {
    pthread_mutex_lock(&c->mu);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* guards and with(): shared by every lock-like class                   */

/* How guard()/with() take and give back a lock-like object. acquire
** blocks without a deadline and raises only on cancellation; release
** never raises but says what was wrong. */
typedef struct lockops {
  void (*acquire)(lua_State *L, loom_object *o);
  const char *(*release)(loom_object *o); /* NULL, or what was wrong */
} lockops;

typedef struct guard {
  loom_object *o; /* a reference while the guard holds the lock */
  const lockops *ops;
} guard;

#define GUARD_META "loom.Guard"

/* __close and release(): gives the lock back once; later calls do nothing. */
static int guard_close(lua_State *L) {
  guard *g = (guard *)luaL_checkudata(L, 1, GUARD_META);
  loom_object *o = g->o;
  if (o == NULL) return 0;
  g->o = NULL;
  const char *err = g->ops->release(o);
  loom__release(o);
  if (err != NULL) return luaL_error(L, "%s", err);
  return 0;
}

/* __gc of a guard never closed: drops the reference, leaves the lock as
** it is (releasing at some later collection would hide the bug). */
static int guard_gc(lua_State *L) {
  guard *g = (guard *)luaL_testudata(L, 1, GUARD_META);
  if (g != NULL && g->o != NULL) {
    loom_object *o = g->o;
    g->o = NULL;
    loom__release(o);
  }
  return 0;
}

static int guard_tostring(lua_State *L) {
  guard *g = (guard *)luaL_checkudata(L, 1, GUARD_META);
  lua_pushfstring(L, "loom.Guard (%s)", g->o ? "holding" : "released");
  return 1;
}

static void register_guard(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__close", guard_close},
    {"__gc", guard_gc},
    {"__tostring", guard_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"release", guard_close},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, GUARD_META)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, GUARD_META); /* protected like the classes' */
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
}

/* obj:guard(): the guard is made (empty) before acquiring, so a
** cancellation while acquiring leaves nothing behind. */
static int push_guard(lua_State *L, loom_object *o, const lockops *ops) {
  guard *g = (guard *)lua_newuserdatauv(L, sizeof *g, 0);
  g->o = NULL;
  g->ops = ops;
  if (lua_type(L, lua_upvalueindex(2)) == LUA_TTABLE) {
    lua_pushvalue(L, lua_upvalueindex(2));
  } else if (luaL_getmetatable(L, GUARD_META) != LUA_TTABLE) {
    lua_pop(L, 1);
    register_guard(L);
    luaL_getmetatable(L, GUARD_META);
  }
  lua_setmetatable(L, -2);
  ops->acquire(L, o);
  loom__retain(o);
  g->o = o;
  return 1;
}

/* obj:with(fn, ...): fn's results; fn's error after releasing. */
static int do_with(lua_State *L, loom_object *o, const lockops *ops) {
  loom__check_callable(L, 2);
  int base = 1; /* results start above the object */
  ops->acquire(L, o);
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  const char *err = ops->release(o);
  if (status != LUA_OK) return lua_error(L); /* fn's error wins */
  if (err != NULL) return luaL_error(L, "%s", err);
  return lua_gettop(L) - base;
}

/* ------------------------------------------------------------------ */
/* Lock                                                                 */

typedef struct lock_obj {
  loom_object obj;
  corelock cl;
} lock_obj;

static const loom_class lock_class;

static void lock_destroy(loom_object *o) {
  lock_obj *k = (lock_obj *)o;
  cl_destroy(&k->cl);
  free(k);
}

static int l_Lock(lua_State *L) {
  lock_obj *k = (lock_obj *)malloc(sizeof *k);
  if (k == NULL || cl_init(&k->cl) != 0) {
    free(k);
    return luaL_error(L, "not enough memory for a loom.Lock");
  }
  loom__object_init(&k->obj, &lock_class);
  loom__push_owned(L, &k->obj);
  return 1;
}

static int lock_acquire(lua_State *L) {
  lock_obj *k = CHECK(L, lock_obj, &lock_class);
  struct timespec ts;
  int has, blocking = opt_acquire_args(L, 2, &ts, &has);
  int r = cl_acquire(&k->cl, &k->obj, blocking, has ? &ts : NULL, 1);
  if (r == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, r);
  return 1;
}

static const char *lock_release_obj(loom_object *o) {
  return cl_release(&((lock_obj *)o)->cl) != 0 ? "release unlocked lock" : NULL;
}

static void lock_acquire_obj(lua_State *L, loom_object *o) {
  lock_obj *k = (lock_obj *)o;
  if (cl_acquire(&k->cl, o, 1, NULL, 1) != 1) loom__raise_cancelled(L);
}

static const lockops lock_ops = {lock_acquire_obj, lock_release_obj};

static int release_result(lua_State *L, const char *err) {
  if (err != NULL) return luaL_error(L, "%s", err);
  return 0;
}

static int lock_release(lua_State *L) {
  lock_obj *k = CHECK(L, lock_obj, &lock_class);
  return release_result(L, lock_release_obj(&k->obj));
}

static int lock_locked(lua_State *L) {
  lock_obj *k = CHECK(L, lock_obj, &lock_class);
  lua_pushboolean(L, atomic_load(&k->cl.state) != 0);
  return 1;
}

static int lock_guard(lua_State *L) {
  return push_guard(L, &CHECK(L, lock_obj, &lock_class)->obj, &lock_ops);
}

static int lock_with(lua_State *L) {
  return do_with(L, &CHECK(L, lock_obj, &lock_class)->obj, &lock_ops);
}

static int lock_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  lock_obj *k = CHECK(L, lock_obj, &lock_class);
  lua_pushfstring(L, "loom.Lock (%s): %p",
                  atomic_load(&k->cl.state) ? "locked" : "unlocked", (void *)k);
  return 1;
}

static const luaL_Reg lock_methods[] = {
  {"acquire", lock_acquire},
  {"release", lock_release},
  {"locked", lock_locked},
  {"guard", lock_guard},
  {"with", lock_with},
  {NULL, NULL}
};

static const luaL_Reg lock_meta[] = {
  {"__tostring", lock_tostring},
  {NULL, NULL}
};

static const loom_class lock_class = {
  "loom.Lock", lock_destroy, lock_methods, lock_meta, NULL
};

/* ------------------------------------------------------------------ */
/* RLock                                                                */

typedef struct rlock_obj {
  loom_object obj;
  corelock cl;
  atomic_uint_fast64_t owner; /* self_ident() of the holder, 0 if free */
  /* recursion depth: only the owner writes it; atomic (relaxed) because
  ** tostring reads it from any thread */
  _Atomic(lua_Integer) count;
} rlock_obj;

static lua_Integer rl_count(rlock_obj *r) {
  return atomic_load_explicit(&r->count, memory_order_relaxed);
}

static void rl_set_count(rlock_obj *r, lua_Integer n) {
  atomic_store_explicit(&r->count, n, memory_order_relaxed);
}

static const loom_class rlock_class;

static void rlock_destroy(loom_object *o) {
  rlock_obj *r = (rlock_obj *)o;
  cl_destroy(&r->cl);
  free(r);
}

static int l_RLock(lua_State *L) {
  rlock_obj *r = (rlock_obj *)malloc(sizeof *r);
  if (r == NULL || cl_init(&r->cl) != 0) {
    free(r);
    return luaL_error(L, "not enough memory for a loom.RLock");
  }
  atomic_init(&r->owner, 0);
  atomic_init(&r->count, 0);
  loom__object_init(&r->obj, &rlock_class);
  loom__push_owned(L, &r->obj);
  return 1;
}

static int rlock_owned(rlock_obj *r) {
  return atomic_load_explicit(&r->owner, memory_order_relaxed) == self_ident();
}

/* 1, 0 or LOOM_CANCELLED, like cl_acquire. */
static int rlock_take(rlock_obj *r, int blocking, const struct timespec *dl) {
  if (rlock_owned(r)) {
    rl_set_count(r, rl_count(r) + 1);
    return 1;
  }
  int rc = cl_acquire(&r->cl, &r->obj, blocking, dl, 1);
  if (rc == 1) {
    atomic_store_explicit(&r->owner, self_ident(), memory_order_relaxed);
    rl_set_count(r, 1);
  }
  return rc;
}

static int rlock_acquire(lua_State *L) {
  rlock_obj *r = CHECK(L, rlock_obj, &rlock_class);
  struct timespec ts;
  int has, blocking = opt_acquire_args(L, 2, &ts, &has);
  int rc = rlock_take(r, blocking, has ? &ts : NULL);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, rc);
  return 1;
}

static const char *rlock_release_obj(loom_object *o) {
  rlock_obj *r = (rlock_obj *)o;
  if (!rlock_owned(r)) return "cannot release un-acquired lock";
  lua_Integer n = rl_count(r) - 1;
  rl_set_count(r, n);
  if (n == 0) {
    atomic_store_explicit(&r->owner, 0, memory_order_relaxed);
    cl_release(&r->cl);
  }
  return NULL;
}

static void rlock_acquire_obj(lua_State *L, loom_object *o) {
  if (rlock_take((rlock_obj *)o, 1, NULL) != 1) loom__raise_cancelled(L);
}

static const lockops rlock_ops = {rlock_acquire_obj, rlock_release_obj};

static int rlock_release(lua_State *L) {
  rlock_obj *r = CHECK(L, rlock_obj, &rlock_class);
  return release_result(L, rlock_release_obj(&r->obj));
}

static int rlock_locked(lua_State *L) {
  rlock_obj *r = CHECK(L, rlock_obj, &rlock_class);
  lua_pushboolean(L, atomic_load(&r->cl.state) != 0);
  return 1;
}

static int rlock_is_owned(lua_State *L) {
  lua_pushboolean(L, rlock_owned(CHECK(L, rlock_obj, &rlock_class)));
  return 1;
}

static int rlock_guard(lua_State *L) {
  return push_guard(L, &CHECK(L, rlock_obj, &rlock_class)->obj,
                    &rlock_ops);
}

static int rlock_with(lua_State *L) {
  return do_with(L, &CHECK(L, rlock_obj, &rlock_class)->obj, &rlock_ops);
}

/* Pushes what tostring says of the state of a Lock or an RLock: "locked"
** or "unlocked", and for an RLock its holder and recursion count (as
** Python's repr shows count=2). */
static const char *push_lock_state(lua_State *L, loom_object *o) {
  if (o->cls != &rlock_class)
    return lua_pushstring(L, atomic_load(&((lock_obj *)o)->cl.state)
                                 ? "locked" : "unlocked");
  rlock_obj *r = (rlock_obj *)o;
  uint64_t owner = atomic_load_explicit(&r->owner, memory_order_relaxed);
  lua_Integer count = rl_count(r);
  if (owner == 0) return lua_pushfstring(L, "unlocked, count=%I", count);
  if (owner == self_ident())
    return lua_pushfstring(L, "locked by this thread, count=%I", count);
  return lua_pushfstring(L, "locked by thread %I, count=%I",
                         (lua_Integer)owner, count);
}

static int rlock_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  rlock_obj *r = CHECK(L, rlock_obj, &rlock_class);
  lua_pushfstring(L, "loom.RLock (%s): %p", push_lock_state(L, &r->obj),
                  (void *)r);
  return 1;
}

static const luaL_Reg rlock_methods[] = {
  {"acquire", rlock_acquire},
  {"release", rlock_release},
  {"locked", rlock_locked},
  {"is_owned", rlock_is_owned},
  {"guard", rlock_guard},
  {"with", rlock_with},
  {NULL, NULL}
};

static const luaL_Reg rlock_meta[] = {
  {"__tostring", rlock_tostring},
  {NULL, NULL}
};

static const loom_class rlock_class = {
  "loom.RLock", rlock_destroy, rlock_methods, rlock_meta, NULL
};

/* ------------------------------------------------------------------ */
/* Condition                                                            */

typedef struct cwaiter {
  struct cwaiter *prev, *next;
  int notified;
} cwaiter;

typedef struct cond_obj {
  loom_object obj;
  pthread_mutex_t mu; /* the waiter list; never held with the lock's mu */
  pthread_cond_t cv;
  loom_object *lock;  /* a reference on a Lock or an RLock */
  int is_rlock;
  cwaiter *head, *tail; /* FIFO of waiters not yet notified */
} cond_obj;

static const loom_class cond_class;

static void cond_destroy(loom_object *o) {
  cond_obj *c = (cond_obj *)o;
  loom__release(c->lock);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

static int l_Condition(lua_State *L) {
  loom_object *lock = NULL;
  int is_rlock = 1;
  if (!lua_isnoneornil(L, 1)) {
    lock = loom__test_object(L, 1, &rlock_class);
    if (lock == NULL) {
      lock = loom__test_object(L, 1, &lock_class);
      is_rlock = 0;
    }
    if (lock == NULL) luaL_typeerror(L, 1, "loom.Lock or loom.RLock");
  } else {
    l_RLock(L);
    lock = loom__test_object(L, -1, &rlock_class);
  }
  cond_obj *c = (cond_obj *)calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "not enough memory for a loom.Condition");
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    free(c);
    return luaL_error(L, "cannot create a loom.Condition");
  }
  if (loom__cond_init(&c->cv) != 0) {
    pthread_mutex_destroy(&c->mu);
    free(c);
    return luaL_error(L, "cannot create a loom.Condition");
  }
  loom__retain(lock);
  c->lock = lock;
  c->is_rlock = is_rlock;
  loom__object_init(&c->obj, &cond_class);
  loom__push_owned(L, &c->obj);
  return 1;
}

static cond_obj *check_cond(lua_State *L) {
  return CHECK(L, cond_obj, &cond_class);
}

static int cond_owned(cond_obj *c) {
  if (c->is_rlock) return rlock_owned((rlock_obj *)c->lock);
  return atomic_load(&((lock_obj *)c->lock)->cl.state) != 0;
}

/* Releases the lock completely; returns what reacquire needs. */
static lua_Integer cond_release_all(cond_obj *c) {
  if (c->is_rlock) {
    rlock_obj *r = (rlock_obj *)c->lock;
    lua_Integer n = rl_count(r);
    rl_set_count(r, 0);
    atomic_store_explicit(&r->owner, 0, memory_order_relaxed);
    cl_release(&r->cl);
    return n;
  }
  cl_release(&((lock_obj *)c->lock)->cl);
  return 1;
}

/* Takes the lock back, whatever happens (also after a cancellation: the
** caller's guard or with() expects to hold it while the error unwinds). */
static void cond_reacquire(cond_obj *c, lua_Integer saved) {
  if (c->is_rlock) {
    rlock_obj *r = (rlock_obj *)c->lock;
    cl_acquire(&r->cl, &r->obj, 1, NULL, 0);
    atomic_store_explicit(&r->owner, self_ident(), memory_order_relaxed);
    rl_set_count(r, saved);
  } else {
    lock_obj *k = (lock_obj *)c->lock;
    cl_acquire(&k->cl, &k->obj, 1, NULL, 0);
  }
}

static void unlink_waiter(cond_obj *c, cwaiter *w) {
  if (w->prev) w->prev->next = w->next; else c->head = w->next;
  if (w->next) w->next->prev = w->prev; else c->tail = w->prev;
  w->prev = w->next = NULL;
}

/* One wait; returns 1 if notified, 0 on timeout; raises on cancel or
** when the lock is not held (never with a mutex held). */
static int cond_wait_once(lua_State *L, cond_obj *c, const struct timespec *dl) {
  if (!cond_owned(c)) luaL_error(L, "cannot wait on un-acquired lock");
  /* The waiter lives on this stack frame: it is unlinked (by a notifier,
  ** or below) before the frame ends, and nothing in between can raise. */
  cwaiter w = {NULL, NULL, 0};
  pthread_mutex_lock(&c->mu);
  w.prev = c->tail;
  // cppcheck-suppress autoVariables
  if (c->tail) c->tail->next = &w; else c->head = &w;
  // cppcheck-suppress autoVariables
  c->tail = &w;
  pthread_mutex_unlock(&c->mu);

  lua_Integer saved = cond_release_all(c);
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  while (!w.notified && rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = loom__wait(&c->obj, &c->cv, &c->mu, dl);
  int notified = w.notified;
  if (!notified) unlink_waiter(c, &w);
  pthread_mutex_unlock(&c->mu);
  cond_reacquire(c, saved);
  if (!notified && rc == LOOM_CANCELLED) loom__raise_cancelled(L);
  return notified;
}

static int cond_wait(lua_State *L) {
  cond_obj *c = check_cond(L);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  lua_pushboolean(L, cond_wait_once(L, c, has ? &ts : NULL));
  return 1;
}

/* wait_for(predicate[, timeout]) -> the predicate's last value */
static int cond_wait_for(lua_State *L) {
  cond_obj *c = check_cond(L);
  loom__check_callable(L, 2);
  struct timespec ts;
  int has = loom__opt_deadline(L, 3, &ts);
  lua_settop(L, 2);
  for (;;) {
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1)) break;
    if (has && loom__deadline_passed(&ts)) break;
    lua_pop(L, 1);
    cond_wait_once(L, c, has ? &ts : NULL);
  }
  return 1;
}

static int cond_notify_n(lua_State *L, cond_obj *c, lua_Integer n) {
  if (!cond_owned(c)) return luaL_error(L, "cannot notify on un-acquired lock");
  pthread_mutex_lock(&c->mu);
  int woke = 0;
  while (n > 0 && c->head != NULL) {
    cwaiter *w = c->head;
    unlink_waiter(c, w);
    w->notified = 1;
    woke = 1;
    n--;
  }
  if (woke) pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static int cond_notify(lua_State *L) {
  cond_obj *c = check_cond(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  return cond_notify_n(L, c, n);
}

static int cond_notify_all(lua_State *L) {
  return cond_notify_n(L, check_cond(L), LUA_MAXINTEGER);
}

static void cond_acquire_obj(lua_State *L, loom_object *o) {
  cond_obj *c = (cond_obj *)o;
  if (c->is_rlock) rlock_acquire_obj(L, c->lock);
  else lock_acquire_obj(L, c->lock);
}

static const char *cond_release_obj(loom_object *o) {
  cond_obj *c = (cond_obj *)o;
  return c->is_rlock ? rlock_release_obj(c->lock) : lock_release_obj(c->lock);
}

static const lockops cond_ops = {cond_acquire_obj, cond_release_obj};

static int cond_acquire(lua_State *L) {
  cond_obj *c = check_cond(L);
  struct timespec ts;
  int has, blocking = opt_acquire_args(L, 2, &ts, &has);
  int rc;
  if (c->is_rlock)
    rc = rlock_take((rlock_obj *)c->lock, blocking, has ? &ts : NULL);
  else
    rc = cl_acquire(&((lock_obj *)c->lock)->cl, c->lock, blocking,
                    has ? &ts : NULL, 1);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, rc);
  return 1;
}

static int cond_release(lua_State *L) {
  return release_result(L, cond_release_obj(&check_cond(L)->obj));
}

static int cond_guard(lua_State *L) {
  return push_guard(L, &check_cond(L)->obj, &cond_ops);
}

static int cond_with(lua_State *L) {
  return do_with(L, &check_cond(L)->obj, &cond_ops);
}

static int cond_index(lua_State *L) {
  cond_obj *c = check_cond(L);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "lock") == 0) {
    loom__push_object(L, c->lock);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int cond_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  cond_obj *c = check_cond(L);
  pthread_mutex_lock(&c->mu);
  lua_Integer waiters = 0;
  for (cwaiter *w = c->head; w != NULL; w = w->next) waiters++;
  pthread_mutex_unlock(&c->mu);
  lua_pushfstring(L, "loom.Condition (%s (%s), waiters=%I): %p",
                  c->lock->cls->name, push_lock_state(L, c->lock), waiters,
                  (void *)c);
  return 1;
}

static const luaL_Reg cond_methods[] = {
  {"acquire", cond_acquire},
  {"release", cond_release},
  {"wait", cond_wait},
  {"wait_for", cond_wait_for},
  {"notify", cond_notify},
  {"notify_all", cond_notify_all},
  {"guard", cond_guard},
  {"with", cond_with},
  {NULL, NULL}
};

static const luaL_Reg cond_meta[] = {
  {"__index", cond_index},
  {"__tostring", cond_tostring},
  {NULL, NULL}
};

static const loom_class cond_class = {
  "loom.Condition", cond_destroy, cond_methods, cond_meta, NULL
};

/* ------------------------------------------------------------------ */
/* Semaphore and BoundedSemaphore                                       */

typedef struct sem_obj {
  loom_object obj;
  atomic_llong value;
  atomic_int waiters;
  long long bound; /* initial value of a BoundedSemaphore, else -1 */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} sem_obj;

static const loom_class sem_class;
static const loom_class bsem_class;

static void sem_destroy(loom_object *o) {
  sem_obj *s = (sem_obj *)o;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

static int new_sem(lua_State *L, const loom_class *cls) {
  lua_Integer v = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, v >= 0, 1, "semaphore initial value must be >= 0");
  sem_obj *s = (sem_obj *)malloc(sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory for a %s", cls->name);
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    free(s);
    return luaL_error(L, "cannot create a %s", cls->name);
  }
  if (loom__cond_init(&s->cv) != 0) {
    pthread_mutex_destroy(&s->mu);
    free(s);
    return luaL_error(L, "cannot create a %s", cls->name);
  }
  atomic_init(&s->value, (long long)v);
  atomic_init(&s->waiters, 0);
  s->bound = cls == &bsem_class ? (long long)v : -1;
  loom__object_init(&s->obj, cls);
  loom__push_owned(L, &s->obj);
  return 1;
}

static int l_Semaphore(lua_State *L) { return new_sem(L, &sem_class); }
static int l_BoundedSemaphore(lua_State *L) { return new_sem(L, &bsem_class); }

/* Semaphore and BoundedSemaphore share their methods. */
static sem_obj *check_sem(lua_State *L) {
  loom_object *o = fast_self(L);
  if (o != NULL) return (sem_obj *)o;
  return (sem_obj *)loom__check_object(
      L, 1, luaL_testudata(L, 1, "loom.BoundedSemaphore") ? &bsem_class
                                                          : &sem_class);
}

static inline int sem_try(sem_obj *s) {
  long long v = atomic_load_explicit(&s->value, memory_order_relaxed);
  while (v > 0)
    if (atomic_compare_exchange_weak(&s->value, &v, v - 1)) return 1;
  return 0;
}

static int sem_take(sem_obj *s, int blocking, const struct timespec *dl) {
  if (sem_try(s)) return 1;
  if (!blocking) return 0;
  for (int i = 0; i < SPIN; i++) {
    LOOM_CPU_RELAX();
    if (atomic_load_explicit(&s->value, memory_order_relaxed) > 0 && sem_try(s))
      return 1;
  }
  int rc = 0, got = 0;
  pthread_mutex_lock(&s->mu);
  atomic_fetch_add(&s->waiters, 1);
  for (;;) {
    if (sem_try(s)) {
      got = 1;
      break;
    }
    if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) break;
    rc = loom__wait(&s->obj, &s->cv, &s->mu, dl);
  }
  atomic_fetch_sub(&s->waiters, 1);
  if (!got && atomic_load(&s->value) > 0 && atomic_load(&s->waiters) > 0)
    pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return got ? 1 : rc == LOOM_CANCELLED ? LOOM_CANCELLED : 0;
}

/* 0, or -1 when a BoundedSemaphore would go above its initial value. */
/* Adds n (>= 1); -1 when a bounded semaphore would exceed its bound, -2
** when the value would overflow. */
static int sem_give(sem_obj *s, long long n) {
  long long v = atomic_load(&s->value);
  do {
    if (s->bound >= 0 && n > s->bound - v) return -1;
    if (n > LLONG_MAX - v) return -2;
  } while (!atomic_compare_exchange_weak(&s->value, &v, v + n));
  int w = atomic_load(&s->waiters);
  if (w > 0) {
    pthread_mutex_lock(&s->mu);
    if (n >= w) pthread_cond_broadcast(&s->cv);
    else for (long long i = 0; i < n; i++) pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  return 0;
}

static int sem_acquire(lua_State *L) {
  sem_obj *s = check_sem(L);
  struct timespec ts;
  int has, blocking = opt_acquire_args(L, 2, &ts, &has);
  int rc = sem_take(s, blocking, has ? &ts : NULL);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, rc);
  return 1;
}

static int sem_release(lua_State *L) {
  sem_obj *s = check_sem(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1, 2, "n must be one or more");
  int rc = sem_give(s, (long long)n);
  if (rc == -1) return luaL_error(L, "Semaphore released too many times");
  if (rc == -2) return luaL_error(L, "Semaphore value would overflow");
  return 0;
}

static void sem_acquire_obj(lua_State *L, loom_object *o) {
  if (sem_take((sem_obj *)o, 1, NULL) != 1) loom__raise_cancelled(L);
}

static const char *sem_release_obj(loom_object *o) {
  switch (sem_give((sem_obj *)o, 1)) {
    case -1: return "Semaphore released too many times";
    case -2: return "Semaphore value would overflow";
    default: return NULL;
  }
}

static const lockops sem_ops = {sem_acquire_obj, sem_release_obj};

static int sem_guard(lua_State *L) {
  return push_guard(L, &check_sem(L)->obj, &sem_ops);
}

static int sem_with(lua_State *L) {
  return do_with(L, &check_sem(L)->obj, &sem_ops);
}

static int sem_index(lua_State *L) {
  sem_obj *s = check_sem(L);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "value") == 0) {
    lua_pushinteger(L, (lua_Integer)atomic_load(&s->value));
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int sem_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  sem_obj *s = check_sem(L);
  lua_Integer v = (lua_Integer)atomic_load(&s->value);
  if (s->bound >= 0) /* a BoundedSemaphore: value=2/3 */
    lua_pushfstring(L, "%s (value=%I/%I): %p", s->obj.cls->name, v,
                    (lua_Integer)s->bound, (void *)s);
  else
    lua_pushfstring(L, "%s (value=%I): %p", s->obj.cls->name, v, (void *)s);
  return 1;
}

static const luaL_Reg sem_methods[] = {
  {"acquire", sem_acquire},
  {"release", sem_release},
  {"guard", sem_guard},
  {"with", sem_with},
  {NULL, NULL}
};

static const luaL_Reg sem_meta[] = {
  {"__index", sem_index},
  {"__tostring", sem_tostring},
  {NULL, NULL}
};

static const loom_class sem_class = {
  "loom.Semaphore", sem_destroy, sem_methods, sem_meta, NULL
};

static const loom_class bsem_class = {
  "loom.BoundedSemaphore", sem_destroy, sem_methods, sem_meta, NULL
};

/* ------------------------------------------------------------------ */
/* Event                                                                */

typedef struct event_obj {
  loom_object obj;
  atomic_int flag;
  uint64_t gen; /* bumped by each set() that sets the flag; under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} event_obj;

static const loom_class event_class;

static void event_destroy(loom_object *o) {
  event_obj *e = (event_obj *)o;
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e);
}

static int l_Event(lua_State *L) {
  event_obj *e = (event_obj *)malloc(sizeof *e);
  if (e == NULL) return luaL_error(L, "not enough memory for a loom.Event");
  if (pthread_mutex_init(&e->mu, NULL) != 0) {
    free(e);
    return luaL_error(L, "cannot create a loom.Event");
  }
  if (loom__cond_init(&e->cv) != 0) {
    pthread_mutex_destroy(&e->mu);
    free(e);
    return luaL_error(L, "cannot create a loom.Event");
  }
  atomic_init(&e->flag, 0);
  e->gen = 0;
  loom__object_init(&e->obj, &event_class);
  loom__push_owned(L, &e->obj);
  return 1;
}

static event_obj *check_event(lua_State *L) {
  return CHECK(L, event_obj, &event_class);
}

static int event_set(lua_State *L) {
  event_obj *e = check_event(L);
  pthread_mutex_lock(&e->mu);
  if (!atomic_load_explicit(&e->flag, memory_order_relaxed)) {
    atomic_store(&e->flag, 1);
    e->gen++;
    pthread_cond_broadcast(&e->cv);
  }
  pthread_mutex_unlock(&e->mu);
  return 0;
}

static int event_clear(lua_State *L) {
  event_obj *e = check_event(L);
  pthread_mutex_lock(&e->mu);
  atomic_store(&e->flag, 0);
  pthread_mutex_unlock(&e->mu);
  return 0;
}

static int event_is_set(lua_State *L) {
  lua_pushboolean(L, atomic_load(&check_event(L)->flag));
  return 1;
}

static int event_wait(lua_State *L) {
  event_obj *e = check_event(L);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  int spin = (!has || lua_tonumber(L, 2) > 0) ? SPIN : 1;
  for (int i = 0; i < spin; i++) { /* a set() may be near */
    if (atomic_load_explicit(&e->flag, memory_order_acquire)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    LOOM_CPU_RELAX();
  }
  int rc = 0, ok;
  pthread_mutex_lock(&e->mu);
  if (atomic_load_explicit(&e->flag, memory_order_relaxed)) {
    ok = 1;
  } else {
    uint64_t g = e->gen;
    while (e->gen == g && rc != ETIMEDOUT && rc != LOOM_CANCELLED)
      rc = loom__wait(&e->obj, &e->cv, &e->mu, has ? &ts : NULL);
    ok = e->gen != g;
  }
  pthread_mutex_unlock(&e->mu);
  if (!ok && rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, ok);
  return 1;
}

static int event_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  event_obj *e = check_event(L);
  lua_pushfstring(L, "loom.Event (%s): %p",
                  atomic_load(&e->flag) ? "set" : "unset", (void *)e);
  return 1;
}

static const luaL_Reg event_methods[] = {
  {"set", event_set},
  {"clear", event_clear},
  {"is_set", event_is_set},
  {"wait", event_wait},
  {NULL, NULL}
};

static const luaL_Reg event_meta[] = {
  {"__tostring", event_tostring},
  {NULL, NULL}
};

static const loom_class event_class = {
  "loom.Event", event_destroy, event_methods, event_meta, NULL
};

/* ------------------------------------------------------------------ */
/* Barrier (a port of CPython's threading.Barrier)                      */

enum { B_FILLING, B_DRAINING, B_RESETTING, B_BROKEN, B_ACTION };

typedef struct barrier_obj {
  loom_object obj;
  pthread_mutex_t mu; /* everything below except the constants */
  pthread_cond_t cv;
  lua_Integer parties; /* constant */
  loom_msg *action;    /* constant; NULL when none */
  double timeout;      /* constant; < 0 when none */
  int state;
  lua_Integer count;   /* threads inside wait() */
  uint64_t runner;     /* self_ident() of the thread running the action */
  int break_next;      /* a party left while the last cycle finished: the
                          next cycle starts broken (reset clears it) */
} barrier_obj;

static const loom_class barrier_class;

static void barrier_destroy(loom_object *o) {
  barrier_obj *b = (barrier_obj *)o;
  loom__msg_free(b->action);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
  free(b);
}

static int l_Barrier(lua_State *L) {
  lua_Integer parties = luaL_checkinteger(L, 1);
  luaL_argcheck(L, parties >= 1, 1, "parties must be >= 1");
  double timeout = -1;
  if (!lua_isnoneornil(L, 3)) {
    lua_Number t = luaL_checknumber(L, 3);
    luaL_argcheck(L, t >= 0, 3, "timeout must be a non-negative number");
    timeout = (double)t;
  }
  int has_action = !lua_isnoneornil(L, 2);
  if (has_action) luaL_checktype(L, 2, LUA_TFUNCTION);
  barrier_obj *b = (barrier_obj *)calloc(1, sizeof *b);
  if (b == NULL || pthread_mutex_init(&b->mu, NULL) != 0) {
    free(b);
    return luaL_error(L, "not enough memory for a loom.Barrier");
  }
  if (loom__cond_init(&b->cv) != 0) {
    pthread_mutex_destroy(&b->mu);
    free(b);
    return luaL_error(L, "cannot create a loom.Barrier");
  }
  b->parties = parties;
  b->timeout = timeout;
  b->state = B_FILLING;
  loom__object_init(&b->obj, &barrier_class);
  loom__push_owned(L, &b->obj); /* from here the box owns b, also on error */
  /* the action may mention the barrier itself: owned, so not counted */
  if (has_action) b->action = loom__encode_owned(L, 2, 1, "action", &b->obj);
  return 1;
}

static barrier_obj *check_barrier(lua_State *L) {
  return CHECK(L, barrier_obj, &barrier_class);
}

static void barrier_break(barrier_obj *b) {
  b->state = B_BROKEN;
  pthread_cond_broadcast(&b->cv);
}

static int call_action(lua_State *L) {
  const loom_msg *m = (const loom_msg *)lua_touserdata(L, 1);
  lua_pop(L, 1);
  int n = loom__decode(L, m);
  lua_call(L, n - 1, 0);
  return 0;
}

/* how a barrier wait ended (not W_OK: that is access()'s, <unistd.h>) */
enum { BW_OK, BW_BROKEN, BW_CANCELLED, BW_ACTION };

/* wait() called by the barrier's own action (mu held; released here).
** Nothing can release it before the action returns, so, as in Python,
** the wait times out (after its timeout) and breaks the barrier. With no
** timeout it would never return: that raises at once. */
static int wait_in_action(lua_State *L, barrier_obj *b,
                          const struct timespec *dl) {
  if (dl == NULL) {
    pthread_mutex_unlock(&b->mu);
    return luaL_error(L, "cannot wait without a timeout on a barrier from "
                      "its own action (it would never return)");
  }
  int rc = 0;
  while (rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = loom__wait(&b->obj, &b->cv, &b->mu, dl);
  barrier_break(b);
  pthread_mutex_unlock(&b->mu);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  return loom__raise(L, "broken", "barrier is broken");
}

static int barrier_wait(lua_State *L) {
  barrier_obj *b = check_barrier(L);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  if (!has && b->timeout >= 0) {
    loom__deadline_after(b->timeout, &ts);
    has = 1;
  }
  lua_settop(L, 1);
  int rc = 0, err = BW_OK;
  pthread_mutex_lock(&b->mu);
  if (b->state == B_ACTION && b->runner == self_ident())
    return wait_in_action(L, b, has ? &ts : NULL);
  /* wait while the barrier drains, resets or runs its action */
  while (b->state == B_DRAINING || b->state == B_RESETTING ||
         b->state == B_ACTION) {
    rc = loom__wait(&b->obj, &b->cv, &b->mu, NULL);
    if (rc == LOOM_CANCELLED) {
      /* a party that leaves breaks the barrier: not the cycle that is
      ** ending (its parties passed), the one it was waiting to join, which
      ** may have begun by now */
      if (b->state == B_FILLING) barrier_break(b);
      else if (b->state != B_BROKEN) b->break_next = 1;
      pthread_mutex_unlock(&b->mu);
      return loom__raise_cancelled(L);
    }
  }
  if (b->state == B_BROKEN) {
    pthread_mutex_unlock(&b->mu);
    return loom__raise(L, "broken", "barrier is broken");
  }
  lua_Integer index = b->count++;
  if (index + 1 == b->parties) {
    if (b->action != NULL) {
      b->state = B_ACTION;
      b->runner = self_ident();
      pthread_mutex_unlock(&b->mu);
      lua_pushcfunction(L, call_action);
      lua_pushlightuserdata(L, b->action);
      int status = lua_pcall(L, 1, 0, 0); /* error value stays on top */
      pthread_mutex_lock(&b->mu);
      b->runner = 0;
      if (status != LUA_OK) {
        barrier_break(b);
        err = BW_ACTION;
      } else if (b->state == B_BROKEN) { /* the action aborted it */
        err = BW_BROKEN;
      }
    }
    if (err == BW_OK) {
      b->state = B_DRAINING;
      pthread_cond_broadcast(&b->cv);
    }
  } else {
    const struct timespec *dl = has ? &ts : NULL;
    for (;;) {
      if (b->state != B_FILLING && b->state != B_ACTION) break;
      if (rc == LOOM_CANCELLED) break;
      if (rc == ETIMEDOUT) {
        if (b->state == B_FILLING) break;
        dl = NULL; /* the action runs: as in Python, it finishes first */
      }
      rc = loom__wait(&b->obj, &b->cv, &b->mu, dl);
    }
    if (b->state == B_FILLING || b->state == B_ACTION) {
      barrier_break(b); /* timed out or cancelled */
      err = rc == LOOM_CANCELLED ? BW_CANCELLED : BW_BROKEN;
    } else if (b->state == B_BROKEN || b->state == B_RESETTING) {
      err = BW_BROKEN;
    }
  }
  /* leave: the last one out ends a drain or a reset */
  if (--b->count == 0 &&
      (b->state == B_DRAINING || b->state == B_RESETTING)) {
    if (b->break_next && b->state == B_DRAINING) barrier_break(b);
    else b->state = B_FILLING;
    b->break_next = 0;
    pthread_cond_broadcast(&b->cv);
  }
  pthread_mutex_unlock(&b->mu);
  switch (err) {
    case BW_BROKEN: return loom__raise(L, "broken", "barrier is broken");
    case BW_CANCELLED: return loom__raise_cancelled(L);
    case BW_ACTION: return lua_error(L);
    default: break;
  }
  lua_pushinteger(L, index);
  return 1;
}

/* Waits (mu held) until no other thread runs the action. Returns 0, 1
** if the caller is the action's own thread, or LOOM_CANCELLED. */
static int barrier_settle(barrier_obj *b) {
  uint64_t me = self_ident();
  while (b->state == B_ACTION) {
    if (b->runner == me) return 1;
    if (loom__wait(&b->obj, &b->cv, &b->mu, NULL) == LOOM_CANCELLED)
      return LOOM_CANCELLED;
  }
  return 0;
}

static int barrier_reset(lua_State *L) {
  barrier_obj *b = check_barrier(L);
  pthread_mutex_lock(&b->mu);
  int rc = barrier_settle(b);
  if (rc != 0) {
    pthread_mutex_unlock(&b->mu);
    if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
    return luaL_error(L, "cannot reset a barrier from its own action");
  }
  b->break_next = 0;
  if (b->count > 0) {
    if (b->state == B_FILLING || b->state == B_BROKEN) b->state = B_RESETTING;
  } else {
    b->state = B_FILLING;
  }
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static int barrier_abort(lua_State *L) {
  barrier_obj *b = check_barrier(L);
  pthread_mutex_lock(&b->mu);
  int rc = barrier_settle(b);
  if (rc == LOOM_CANCELLED) {
    pthread_mutex_unlock(&b->mu);
    return loom__raise_cancelled(L);
  }
  barrier_break(b);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static int barrier_index(lua_State *L) {
  barrier_obj *b = check_barrier(L);
  const char *k = lua_tostring(L, 2);
  if (k != NULL) {
    if (strcmp(k, "parties") == 0) {
      lua_pushinteger(L, b->parties);
      return 1;
    }
    if (strcmp(k, "broken") == 0 || strcmp(k, "n_waiting") == 0) {
      pthread_mutex_lock(&b->mu);
      int broken = b->state == B_BROKEN;
      lua_Integer n = b->state == B_FILLING ? b->count : 0;
      pthread_mutex_unlock(&b->mu);
      if (k[0] == 'b') lua_pushboolean(L, broken);
      else lua_pushinteger(L, n);
      return 1;
    }
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int barrier_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  barrier_obj *b = check_barrier(L);
  pthread_mutex_lock(&b->mu);
  int broken = b->state == B_BROKEN;
  lua_Integer n = b->state == B_FILLING ? b->count : 0;
  pthread_mutex_unlock(&b->mu);
  lua_pushfstring(L, "loom.Barrier (%s, waiters=%I/%I): %p",
                  broken ? "broken" : "ok", n, b->parties, (void *)b);
  return 1;
}

static const luaL_Reg barrier_methods[] = {
  {"wait", barrier_wait},
  {"reset", barrier_reset},
  {"abort", barrier_abort},
  {NULL, NULL}
};

static const luaL_Reg barrier_meta[] = {
  {"__index", barrier_index},
  {"__tostring", barrier_tostring},
  {NULL, NULL}
};

static const loom_class barrier_class = {
  "loom.Barrier", barrier_destroy, barrier_methods, barrier_meta, NULL
};

/* ------------------------------------------------------------------ */

static const luaL_Reg sync_funcs[] = {
  {"Lock", l_Lock},
  {"RLock", l_RLock},
  {"Condition", l_Condition},
  {"Semaphore", l_Semaphore},
  {"BoundedSemaphore", l_BoundedSemaphore},
  {"Event", l_Event},
  {"Barrier", l_Barrier},
  {NULL, NULL}
};

/* Registers cls, then gives its methods and metamethods two upvalues:
** the class metatable (check_self) and the guard metatable (push_guard). */
static void bind_class(lua_State *L, const loom_class *cls) {
  loom__register_class(L, cls);
  luaL_getmetatable(L, cls->name);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, -2);
  luaL_getmetatable(L, GUARD_META);
  luaL_setfuncs(L, cls->methods, 2);
  lua_pop(L, 1);
  if (cls->meta != NULL) {
    lua_pushvalue(L, -1);
    luaL_getmetatable(L, GUARD_META);
    luaL_setfuncs(L, cls->meta, 2);
  }
  lua_pop(L, 1);
}

void loom__open_sync(lua_State *L) {
  register_guard(L);
  bind_class(L, &lock_class);
  bind_class(L, &rlock_class);
  bind_class(L, &cond_class);
  bind_class(L, &sem_class);
  bind_class(L, &bsem_class);
  bind_class(L, &event_class);
  bind_class(L, &barrier_class);
  luaL_setfuncs(L, sync_funcs, 0);
}
