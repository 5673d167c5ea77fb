/*
** future.c: loom.Future, the result of a task that runs in another
** thread; completion watchers; loom.wait and loom.as_completed over
** futures and threads.
**
** Ownership: a future is a refcounted loom_object. Its boxes, the pool
** queue holding it and the worker running it each hold a reference. Its
** result (values, or the error value) is owned by the future; a reference
** to the future itself inside it is not counted. Done-callbacks are kept
** as encoded copies until they run.
**
** Locks: f->mu guards everything below it in the struct. It is a leaf,
** except that watchers fire inside it and take their own leaf lock (a
** multiwait's mu). No Lua runs and no error is raised under f->mu:
** results are encoded before it is taken, callbacks run after it is
** released, in the state of the thread that completed the future (a
** worker, or the thread that cancelled it).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

enum { F_PENDING, F_RUNNING, F_CANCELLED, F_FINISHED };
static const char *const state_names[] = {"pending", "running", "cancelled",
                                          "finished"};

typedef struct callback {
  loom_msg *fn;
  struct callback *next;
} callback;

struct loom_future {
  loom_object obj;
  atomic_int done; /* state is F_CANCELLED or F_FINISHED (a hint for spins) */
  void (*free_extra)(void *);
  pthread_mutex_t mu;
  pthread_cond_t cv; /* broadcast when done; made by the first sleeper */
  int has_cv;
  int state;
  int failed;       /* finished with an error (one is the error value) */
  int interrupted;  /* interrupt() reached the task while it ran */
  int nres;         /* values in one (1) or many (otherwise) */
  loom_value one;
  loom_msg *many;
  char *traceback;  /* of the error, and where it ran: for string errors */
  char *where;
  loom_thread *worker; /* while running; the worker outlives the task */
  callback *callbacks, *last_cb;
  loom_watch *watchers;
  _Alignas(max_align_t) unsigned char extra[];
};

static const loom_class future_class;

/* ------------------------------------------------------------------ */
/* watch lists                                                          */

void loom__watch_link(loom_watch **head, loom_watch *w) {
  w->prev = NULL;
  w->next = *head;
  if (*head) (*head)->prev = w;
  *head = w;
  w->linked = 1;
}

void loom__watch_unlink(loom_watch **head, loom_watch *w) {
  if (!w->linked) return;
  if (w->prev) w->prev->next = w->next; else *head = w->next;
  if (w->next) w->next->prev = w->prev;
  w->linked = 0;
}

void loom__watch_fire_all(loom_watch **head, int failed) {
  while (*head) {
    loom_watch *w = *head;
    loom__watch_unlink(head, w);
    w->fire(w, failed);
  }
}

/* ------------------------------------------------------------------ */
/* the object                                                           */

/*
** Futures come from slabs of SLAB_BLOCKS blocks (the size of the first
** future asked for; other sizes from calloc). A pool makes and frees
** futures by the hundred thousand, and glibc's small bins made such bursts
** twice as slow round after round (chunks reused from fragmented bins);
** slabs keep them out of the bins. A slab whose blocks are all free is
** returned to malloc, except SLAB_KEEP of them kept for the next burst.
** (With LOOM_SYSTEM_HEAP, as in `make asan`, every future is a calloc
** block, so that AddressSanitizer sees each one.)
** slab_mu guards every slab's free list and count, and the lists below;
** it is a leaf, taken from any thread that makes or frees a future.
*/
#define SLAB_BLOCKS 128
#define SLAB_KEEP 4

typedef struct slab slab;
typedef union bhdr { /* before each block: its slab (NULL: from calloc) */
  slab *owner;
  /* never read: aligns the block after the header */
  /* cppcheck-suppress unusedStructMember */
  max_align_t align;
} bhdr;

struct slab {
  slab *prev, *next; /* the slabs with a free block */
  bhdr *free;        /* free blocks, linked through their owner field */
  int used;
  _Alignas(max_align_t) unsigned char mem[];
};

static pthread_mutex_t slab_mu = PTHREAD_MUTEX_INITIALIZER;
static slab *partial;     /* slabs with a free block */
static size_t slab_block; /* block size served (0 until the first) */
static int slab_empty;    /* slabs in `partial` with no block in use */

static size_t stride_of(size_t size) {
  size_t a = _Alignof(max_align_t);
  return (sizeof(bhdr) + size + a - 1) / a * a;
}

static void slab_link(slab *s) {
  s->prev = NULL;
  s->next = partial;
  if (partial) partial->prev = s;
  partial = s;
}

static void slab_unlink(slab *s) {
  if (s->prev) s->prev->next = s->next; else partial = s->next;
  if (s->next) s->next->prev = s->prev;
}

static slab *slab_new(size_t size) {
  size_t stride = stride_of(size);
  slab *s = (slab *)malloc(sizeof *s + stride * SLAB_BLOCKS);
  if (s == NULL) return NULL;
  s->used = 0;
  s->free = NULL;
  for (int i = SLAB_BLOCKS - 1; i >= 0; i--) {
    bhdr *h = (bhdr *)(s->mem + stride * (size_t)i);
    h->owner = (slab *)s->free; /* the free list reuses the owner field */
    s->free = h;
  }
  return s;
}

static void *block_alloc(size_t size) {
  pthread_mutex_lock(&slab_mu);
  if (slab_block == 0) slab_block = size;
#ifdef LOOM_SYSTEM_HEAP /* sanitizer builds: a malloc block per future */
  int ours = 0;
#else
  int ours = size == slab_block;
#endif
  bhdr *h = NULL;
  if (ours && partial == NULL) {
    pthread_mutex_unlock(&slab_mu);
    slab *s = slab_new(size);
    if (s == NULL) return NULL;
    pthread_mutex_lock(&slab_mu);
    slab_link(s);
    slab_empty++;
  }
  if (ours) {
    slab *s = partial;
    h = s->free;
    s->free = (bhdr *)h->owner;
    if (s->used++ == 0) slab_empty--;
    if (s->free == NULL) slab_unlink(s);
    h->owner = s;
  }
  pthread_mutex_unlock(&slab_mu);
  if (!ours) {
    h = (bhdr *)calloc(1, sizeof *h + size);
    if (h == NULL) return NULL;
    h->owner = NULL;
    return h + 1;
  }
  return memset(h + 1, 0, size);
}

static void block_free(void *p) {
  bhdr *h = (bhdr *)p - 1;
  slab *s = h->owner;
  if (s == NULL) {
    free(h);
    return;
  }
  slab *release = NULL;
  pthread_mutex_lock(&slab_mu);
  if (s->free == NULL) slab_link(s);
  h->owner = (slab *)s->free;
  s->free = h;
  if (--s->used == 0 && ++slab_empty > SLAB_KEEP) {
    slab_unlink(s);
    slab_empty--;
    release = s;
  }
  pthread_mutex_unlock(&slab_mu);
  free(release);
}

static void free_result(loom_future *f) {
  loom__value_free(&f->one);
  loom__msg_free(f->many);
  f->many = NULL;
  f->nres = 0;
}

static void future_destroy(loom_object *o) {
  loom_future *f = (loom_future *)o;
  if (f->free_extra) f->free_extra(f->extra);
  free_result(f);
  free(f->traceback);
  free(f->where);
  for (callback *c = f->callbacks, *n; c; c = n) {
    n = c->next;
    loom__msg_free(c->fn);
    free(c);
  }
  pthread_mutex_destroy(&f->mu);
  if (f->has_cv) pthread_cond_destroy(&f->cv);
  block_free(f);
}

loom_future *loom__future_new(size_t extra, void (*free_extra)(void *)) {
  loom_future *f = (loom_future *)block_alloc(sizeof(loom_future) + extra);
  if (f == NULL) return NULL;
  if (pthread_mutex_init(&f->mu, NULL) != 0) {
    block_free(f);
    return NULL;
  }
  loom__object_init(&f->obj, &future_class);
  atomic_init(&f->done, 0);
  f->free_extra = free_extra;
  return f;
}

void *loom__future_extra(loom_future *f) {
  return f->extra;
}

loom_future *loom__test_future(lua_State *L, int idx) {
  return (loom_future *)loom__test_object(L, idx, &future_class);
}

/* Argument 1 of a method (see loom__bind_methods). */
static loom_future *check_future(lua_State *L, int idx) {
  (void)idx;
  return (loom_future *)loom__check_self(L, &future_class);
}

static char *dup_str(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* ------------------------------------------------------------------ */
/* completing                                                           */

/* Protected: runs one callback, a copy decoded here, with the future. */
static int call_copied(lua_State *L) {
  loom_msg *m = (loom_msg *)lua_touserdata(L, 1);
  loom_future *f = (loom_future *)lua_touserdata(L, 2);
  lua_settop(L, 0);
  loom__decode(L, m);
  loom__push_object(L, &f->obj);
  lua_call(L, 1, 0);
  return 0;
}

static void report_callback_error(lua_State *L) {
  const char *msg = NULL;
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    msg = lua_pushfstring(L, "%s\n%s", luaL_tolstring(L, -2, NULL),
                          lua_tostring(L, -2) ? lua_tostring(L, -2) : "");
  } else {
    msg = luaL_tolstring(L, -1, NULL);
  }
  fprintf(stderr, "exception calling callback for loom.Future:\n%s\n",
          msg ? msg : "(error object)");
  fflush(stderr);
}

/* Runs the callbacks taken off a completed future, each in protected
** mode: an error is reported on stderr and never reaches the completer. */
static void run_callbacks(lua_State *L, loom_future *f, callback *list) {
  int top = lua_gettop(L);
  while (list) {
    callback *c = list;
    list = c->next;
    if (lua_checkstack(L, 8)) {
      lua_pushcfunction(L, loom__traceback_handler);
      lua_pushcfunction(L, call_copied);
      lua_pushlightuserdata(L, c->fn);
      lua_pushlightuserdata(L, f);
      if (lua_pcall(L, 2, 0, top + 1) != LUA_OK) report_callback_error(L);
      lua_settop(L, top);
    }
    loom__msg_free(c->fn);
    free(c);
  }
}

/* Moves f to a final state (f->mu held); returns the callbacks to run. */
static callback *complete_locked(loom_future *f, int state) {
  f->state = state;
  f->worker = NULL;
  atomic_store_explicit(&f->done, 1, memory_order_release);
  if (f->has_cv) pthread_cond_broadcast(&f->cv);
  loom__watch_fire_all(&f->watchers, state == F_FINISHED && f->failed);
  callback *list = f->callbacks;
  f->callbacks = f->last_cb = NULL;
  return list;
}

int loom__future_start(loom_future *f) {
  pthread_mutex_lock(&f->mu);
  int ok = f->state == F_PENDING;
  if (ok) {
    f->state = F_RUNNING;
    f->worker = loom__self();
  }
  pthread_mutex_unlock(&f->mu);
  return ok;
}

/* What a completion stores, encoded before f->mu is taken. */
typedef struct outcome {
  int failed, nres, cancelled;
  loom_value one;
  loom_msg *many;
  char *traceback, *where;
} outcome;

static void store_outcome(loom_future *f, outcome *o) {
  free_result(f);
  f->failed = o->failed;
  f->nres = o->nres;
  f->one = o->one;
  f->many = o->many;
  free(f->traceback);
  free(f->where);
  f->traceback = o->traceback;
  f->where = o->where;
}

static void finish_with(lua_State *L, loom_future *f, outcome *o) {
  pthread_mutex_lock(&f->mu);
  /* an interrupted task that ended by its cancellation is cancelled */
  int state = (o->cancelled && f->interrupted) ? F_CANCELLED : F_FINISHED;
  if (f->state == F_CANCELLED || f->state == F_FINISHED) { /* already over */
    pthread_mutex_unlock(&f->mu);
    loom__value_free(&o->one);
    loom__msg_free(o->many);
    free(o->traceback);
    free(o->where);
    return;
  }
  store_outcome(f, o);
  if (f->worker != NULL && f->worker == loom__self())
    loom__thread_clear_cancel(); /* an interrupt belongs to this task only */
  callback *list = complete_locked(f, state);
  pthread_mutex_unlock(&f->mu);
  run_callbacks(L, f, list);
}

/* Drops the frames of the worker's own C loop from the end of a
** traceback: what is left ends with the task. */
static void trim_c_frames(char *tb) {
  static const char frame[] = "\n\t[C]: in ?";
  size_t n = sizeof frame - 1;
  if (tb == NULL) return;
  size_t len = strlen(tb);
  while (len >= n && memcmp(tb + len - n, frame, n) == 0) len -= n;
  tb[len] = '\0';
}

void loom__future_finish(lua_State *L, loom_future *f, int ok, int first,
                         int n) {
  outcome o;
  memset(&o, 0, sizeof o);
  first = lua_absindex(L, first);
  if (ok) {
    o.nres = n;
    if (n == 1) loom__value_set_owned(L, first, &o.one, "results", &f->obj);
    else o.many = loom__encode_owned(L, first, n, "results", &f->obj);
  } else {
    o.failed = 1;
    o.nres = 1;
    o.cancelled = loom__is_error(L, first, "cancelled");
    loom__value_set_owned(L, first, &o.one, "error", &f->obj);
    if (lua_type(L, first) == LUA_TSTRING) {
      o.traceback = dup_str(lua_tostring(L, first + 1));
      trim_c_frames(o.traceback);
      o.where = loom__thread_name(loom__self());
    }
  }
  finish_with(L, f, &o);
}

void loom__future_fail(lua_State *L, loom_future *f, const char *kind,
                       const char *message) {
  outcome o;
  memset(&o, 0, sizeof o);
  o.failed = 1;
  o.nres = 1;
  loom__push_error(L, kind, "%s", message);
  loom__value_set(L, -1, &o.one, "error");
  lua_pop(L, 1);
  pthread_mutex_lock(&f->mu);
  if (f->state == F_RUNNING || f->state == F_PENDING) f->worker = NULL;
  pthread_mutex_unlock(&f->mu);
  finish_with(L, f, &o);
}

int loom__future_cancel(lua_State *L, loom_future *f) {
  pthread_mutex_lock(&f->mu);
  int state = f->state;
  callback *list = NULL;
  if (state == F_PENDING) list = complete_locked(f, F_CANCELLED);
  pthread_mutex_unlock(&f->mu);
  if (state == F_PENDING) run_callbacks(L, f, list);
  return state == F_PENDING || state == F_CANCELLED;
}

/* ------------------------------------------------------------------ */
/* methods                                                              */

#define SPIN_SECONDS 50e-6

/* Waits until f is done or the deadline passes; 1 if done. */
static int wait_done(lua_State *L, loom_future *f, int has_timeout,
                     const struct timespec *dl, double timeout) {
  double spin = has_timeout && timeout < SPIN_SECONDS ? timeout : SPIN_SECONDS;
  if (loom__spin_until(&f->done, spin)) return 1;
  int rc = 0;
  pthread_mutex_lock(&f->mu);
  int self_wait = f->state == F_RUNNING && f->worker != NULL &&
                  f->worker == loom__self();
  int nomem = 0;
  if (!f->has_cv && !atomic_load_explicit(&f->done, memory_order_relaxed)) {
    if (loom__cond_init(&f->cv) == 0) f->has_cv = 1;
    else nomem = 1;
  }
  while (!self_wait && !nomem && !atomic_load_explicit(&f->done, memory_order_relaxed) &&
         rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = loom__wait(&f->obj, &f->cv, &f->mu, has_timeout ? dl : NULL);
  int done = atomic_load_explicit(&f->done, memory_order_relaxed);
  pthread_mutex_unlock(&f->mu);
  if (self_wait)
    luaL_error(L, "a task cannot wait for its own future (it would deadlock)");
  if (nomem) luaL_error(L, "not enough memory");
  if (!done && rc == LOOM_CANCELLED) loom__raise_cancelled(L);
  return done;
}

/* Waits as result()/exception() do; returns the final state. */
static int await(lua_State *L, loom_future *f) {
  struct timespec dl;
  int has = loom__opt_deadline(L, 2, &dl);
  double timeout = has ? (double)lua_tonumber(L, 2) : 0;
  if (!wait_done(L, f, has, &dl, timeout))
    loom__raise(L, "timeout", "future did not finish in %s seconds",
                lua_tostring(L, 2));
  /* done: the result fields are final and only read from here on */
  pthread_mutex_lock(&f->mu);
  int state = f->state;
  pthread_mutex_unlock(&f->mu);
  if (state == F_CANCELLED) loom__raise(L, "cancelled", "future was cancelled");
  return state;
}

/* Pushes the error value of a failed future; a string gets where it ran
** and its traceback, as Thread:result does. */
static void push_error(lua_State *L, loom_future *f) {
  loom__value_push(L, &f->one);
  if (lua_type(L, -1) == LUA_TSTRING && f->where != NULL) {
    lua_pushfstring(L, "%s\n(in thread '%s')%s%s", lua_tostring(L, -1),
                    f->where, f->traceback && *f->traceback ? " " : "",
                    f->traceback ? f->traceback : "");
    lua_remove(L, -2);
  }
}

static int future_result(lua_State *L) {
  loom_future *f = check_future(L, 1);
  await(L, f);
  lua_settop(L, 1);
  if (f->failed) {
    push_error(L, f);
    return lua_error(L);
  }
  if (f->nres == 1) {
    loom__value_push(L, &f->one);
    return 1;
  }
  return loom__decode(L, f->many);
}

static int future_exception(lua_State *L) {
  loom_future *f = check_future(L, 1);
  await(L, f);
  lua_settop(L, 1);
  if (!f->failed) return 0;
  push_error(L, f);
  return 1;
}

static int read_state(loom_future *f) {
  pthread_mutex_lock(&f->mu);
  int s = f->state;
  pthread_mutex_unlock(&f->mu);
  return s;
}

static int future_done(lua_State *L) {
  int s = read_state(check_future(L, 1));
  lua_pushboolean(L, s == F_CANCELLED || s == F_FINISHED);
  return 1;
}

static int future_running(lua_State *L) {
  lua_pushboolean(L, read_state(check_future(L, 1)) == F_RUNNING);
  return 1;
}

static int future_cancelled(lua_State *L) {
  lua_pushboolean(L, read_state(check_future(L, 1)) == F_CANCELLED);
  return 1;
}

static int future_cancel(lua_State *L) {
  loom_future *f = check_future(L, 1);
  loom__to_any_object(L, 1); /* callbacks here get this very box */
  lua_pushboolean(L, loom__future_cancel(L, f));
  return 1;
}

/* Beyond Python: stops a running task cooperatively. Its worker's next
** blocking loom call (or its Lua code, in a pool made with cancel_hook)
** raises the cancellation error; a pending future is just cancelled. */
int loom__future_interrupt(lua_State *L, loom_future *f) {
  pthread_mutex_lock(&f->mu);
  int state = f->state;
  loom_thread *worker = NULL;
  if (state == F_RUNNING && f->worker != NULL) {
    f->interrupted = 1;
    worker = f->worker;
    /* raised under f->mu: the worker clears it under f->mu when the task
    ** ends, so it can never reach the worker's next task */
    atomic_fetch_add_explicit(loom__thread_cancel_flag(worker), 1,
                              memory_order_seq_cst);
    loom__retain((loom_object *)worker);
  }
  pthread_mutex_unlock(&f->mu);
  if (worker != NULL) {
    loom__thread_wake(worker);
    loom__release((loom_object *)worker);
    return 1;
  }
  if (state == F_PENDING || state == F_CANCELLED)
    return loom__future_cancel(L, f);
  return 0;
}

static int future_interrupt(lua_State *L) {
  loom_future *f = check_future(L, 1);
  loom__to_any_object(L, 1); /* callbacks here get this very box */
  lua_pushboolean(L, loom__future_interrupt(L, f));
  return 1;
}

static int future_add_done_callback(lua_State *L) {
  loom_future *f = check_future(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  callback *c = NULL;
  if (!atomic_load_explicit(&f->done, memory_order_acquire)) {
    loom_msg *m = loom__encode(L, 2, 1, "callback");
    c = (callback *)malloc(sizeof *c);
    if (c == NULL) {
      loom__msg_free(m);
      return luaL_error(L, "not enough memory");
    }
    c->fn = m;
    c->next = NULL;
    pthread_mutex_lock(&f->mu);
    int done = f->state == F_CANCELLED || f->state == F_FINISHED;
    if (!done) {
      if (f->last_cb) f->last_cb->next = c; else f->callbacks = c;
      f->last_cb = c;
      c = NULL;
    }
    pthread_mutex_unlock(&f->mu);
    if (c == NULL) return 0;
    loom__msg_free(c->fn);
    free(c);
  }
  /* already done: at once, here, the function itself */
  lua_pushcfunction(L, loom__traceback_handler);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 0, 3) != LUA_OK) report_callback_error(L);
  return 0;
}

static int future_tostring(lua_State *L) {
  loom_object *o = loom__test_object(L, 1, &future_class);
  if (o == NULL) {
    lua_pushliteral(L, "loom.Future (closed)");
    return 1;
  }
  loom_future *f = (loom_future *)o;
  pthread_mutex_lock(&f->mu);
  int state = f->state, failed = f->failed;
  pthread_mutex_unlock(&f->mu);
  lua_pushfstring(L, "loom.Future(%s%s): %p", state_names[state],
                  state == F_FINISHED ? (failed ? ", error" : ", ok") : "",
                  (void *)f);
  return 1;
}

/* ------------------------------------------------------------------ */
/* waiting for many: loom.wait and loom.as_completed                    */

typedef struct mwnode {
  loom_watch w;
  loom_object *o;  /* a future or a thread, referenced */
  int is_thread;
  int done, failed;
  struct multiwait *mw;
} mwnode;

/* Watches n objects; done ones are queued in completion order. The
** iterator or call that made it holds a reference, and a canceller may
** hold one while it wakes the waiter (wait.c). */
typedef struct multiwait {
  loom_object obj;
  pthread_mutex_t mu; /* done, failed, the queue; inside a watched object's */
  pthread_cond_t cv;
  int n, ndone, nfailed;
  int qhead, qtail, yielded;
  int *queue;
  mwnode nodes[];
} multiwait;

static void multiwait_destroy(loom_object *o) {
  multiwait *mw = (multiwait *)o;
  for (int i = 0; i < mw->n; i++) {
    mwnode *nd = &mw->nodes[i];
    if (nd->o == NULL) continue;
    if (nd->is_thread) loom__thread_unwatch(nd->o, &nd->w);
    else loom__future_unwatch(nd->o, &nd->w);
    loom__release(nd->o);
  }
  pthread_mutex_destroy(&mw->mu);
  pthread_cond_destroy(&mw->cv);
  free(mw->queue);
  free(mw);
}

static const loom_class multiwait_class = {"loom.multiwait", multiwait_destroy,
                                           NULL, NULL, NULL};

/* __gc of the plain userdata that owns a multiwait's reference. */
static int multiwait_box_gc(lua_State *L) {
  multiwait **box = (multiwait **)luaL_testudata(L, 1, "loom.multiwait");
  if (box != NULL && *box != NULL) {
    loom_object *o = &(*box)->obj;
    *box = NULL;
    loom__release(o);
  }
  return 0;
}

static void mark_done(multiwait *mw, int i, int failed) {
  mwnode *nd = &mw->nodes[i];
  nd->done = 1;
  nd->failed = failed;
  mw->ndone++;
  mw->nfailed += failed;
  mw->queue[mw->qtail++] = i;
}

static void node_fire(loom_watch *w, int failed) {
  mwnode *nd = (mwnode *)w;
  multiwait *mw = nd->mw;
  pthread_mutex_lock(&mw->mu);
  mark_done(mw, (int)(nd - mw->nodes), failed);
  pthread_cond_broadcast(&mw->cv);
  pthread_mutex_unlock(&mw->mu);
}

/* Starts watching node i (its object set); marks it done at once when it
** already is. */
static void watch_node(multiwait *mw, int i) {
  mwnode *nd = &mw->nodes[i];
  int failed = 0, done;
  nd->w.fire = node_fire;
  nd->mw = mw;
  done = nd->is_thread ? loom__thread_watch(nd->o, &nd->w, &failed)
                      : loom__future_watch(nd->o, &nd->w, &failed);
  if (done) {
    pthread_mutex_lock(&mw->mu);
    mark_done(mw, i, failed);
    pthread_mutex_unlock(&mw->mu);
  }
}

/* From the sequence at idx, pushes a table of the distinct futures and
** threads in order (duplicates dropped, Python's set semantics) and
** returns a multiwait over them; its box is pushed above that table. */
static multiwait *new_multiwait(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer len = luaL_len(L, idx);
  luaL_argcheck(L, len >= 0 && len <= 10000000, idx, "too many futures");
  lua_createtable(L, (int)len, 0); /* distinct objects */
  int list = lua_gettop(L);
  lua_createtable(L, 0, (int)len); /* seen */
  int n = 0;
  for (lua_Integer i = 1; i <= len; i++) {
    lua_geti(L, idx, i);
    if (loom__test_future(L, -1) == NULL && loom__test_thread(L, -1) == NULL)
      luaL_argerror(L, idx, lua_pushfstring(L, "item %d is not a loom.Future "
                    "or loom.Thread: %s", (int)i, luaL_typename(L, -1)));
    lua_pushvalue(L, -1);
    if (lua_rawget(L, list + 1) != LUA_TNIL) {
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, list + 1);
    lua_rawseti(L, list, ++n);
  }
  lua_pop(L, 1);
  multiwait *mw = (multiwait *)calloc(1, sizeof *mw + (size_t)n * sizeof(mwnode));
  int *queue = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
  if (mw == NULL || queue == NULL || pthread_mutex_init(&mw->mu, NULL) != 0) {
    free(mw);
    free(queue);
    luaL_error(L, "not enough memory");
  }
  if (loom__cond_init(&mw->cv) != 0) {
    pthread_mutex_destroy(&mw->mu);
    free(mw);
    free(queue);
    luaL_error(L, "not enough memory");
  }
  loom__object_init(&mw->obj, &multiwait_class);
  mw->queue = queue;
  /* owned by a plain userdata whose __gc releases it, so an error below
  ** or an abandoned iteration frees it */
  multiwait **box = (multiwait **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = mw;
  if (luaL_newmetatable(L, "loom.multiwait")) {
    lua_pushcfunction(L, multiwait_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "loom.multiwait");
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    loom_object *o = loom__test_thread(L, -1);
    mwnode *nd = &mw->nodes[i];
    nd->is_thread = o != NULL;
    nd->o = o != NULL ? o : (loom_object *)loom__test_future(L, -1);
    loom__retain(nd->o);
    mw->n = i + 1;
    lua_pop(L, 1);
    watch_node(mw, i);
  }
  return mw;
}

int loom__future_watch(loom_object *o, loom_watch *w, int *failed) {
  loom_future *f = (loom_future *)o;
  pthread_mutex_lock(&f->mu);
  int done = f->state == F_CANCELLED || f->state == F_FINISHED;
  *failed = f->state == F_FINISHED && f->failed;
  if (!done) loom__watch_link(&f->watchers, w);
  pthread_mutex_unlock(&f->mu);
  return done;
}

void loom__future_unwatch(loom_object *o, loom_watch *w) {
  loom_future *f = (loom_future *)o;
  pthread_mutex_lock(&f->mu);
  loom__watch_unlink(&f->watchers, w);
  pthread_mutex_unlock(&f->mu);
}

/* Waits (mw->mu held) until pred holds or the deadline passes; returns
** 0, ETIMEDOUT or LOOM_CANCELLED. */
static int mw_wait(multiwait *mw, const struct timespec *dl, int has) {
  return loom__wait(&mw->obj, &mw->cv, &mw->mu, has ? dl : NULL);
}

/* as_completed iterator: upvalues 1 the distinct objects, 2 the box,
** 3 the deadline (a number, or nil) */
static int as_completed_next(lua_State *L) {
  multiwait *mw = *(multiwait **)lua_touserdata(L, lua_upvalueindex(2));
  if (mw->yielded == mw->n) return 0;
  struct timespec dl;
  int has = !lua_isnil(L, lua_upvalueindex(3));
  if (has) {
    double left = lua_tonumber(L, lua_upvalueindex(3)) - loom__now();
    loom__deadline_after(left > 0 ? left : 0, &dl);
  }
  int rc = 0, idx = -1;
  pthread_mutex_lock(&mw->mu);
  while (mw->qhead == mw->qtail && rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = mw_wait(mw, &dl, has);
  if (mw->qhead < mw->qtail) idx = mw->queue[mw->qhead++];
  int unfinished = mw->n - mw->ndone;
  pthread_mutex_unlock(&mw->mu);
  if (idx < 0) {
    if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
    return loom__raise(L, "timeout", "%d (of %d) futures unfinished",
                       unfinished, mw->n);
  }
  mw->yielded++;
  lua_rawgeti(L, lua_upvalueindex(1), idx + 1);
  return 1;
}

/* loom.as_completed(futures[, timeout]): for f in ... do */
static int l_as_completed(lua_State *L) {
  struct timespec unused;
  luaL_checktype(L, 1, LUA_TTABLE);
  int has = loom__opt_deadline(L, 2, &unused);
  double end = has ? loom__now() + (double)lua_tonumber(L, 2) : 0;
  lua_settop(L, 1);
  new_multiwait(L, 1); /* list at 2, box at 3 */
  if (has) lua_pushnumber(L, end); else lua_pushnil(L);
  lua_pushcclosure(L, as_completed_next, 3);
  return 1;
}

enum { RW_ALL, RW_FIRST, RW_EXCEPTION };

/* loom.wait(futures[, {timeout=, return_when=}]) -> done, not_done */
static int l_wait(lua_State *L) {
  struct timespec dl;
  int has = 0, when = RW_ALL;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      int isnum;
      lua_Number s = lua_tonumberx(L, -1, &isnum);
      luaL_argcheck(L, isnum && s >= 0, 2,
                    "field 'timeout' must be a non-negative number");
      loom__deadline_after((double)s, &dl);
      has = 1;
    }
    if (lua_getfield(L, 2, "return_when") != LUA_TNIL) {
      static const char *const modes[] = {"ALL_COMPLETED", "FIRST_COMPLETED",
                                          "FIRST_EXCEPTION", NULL}; /* RW_* */
      const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
      for (when = 0; modes[when] != NULL && strcmp(modes[when], mode) != 0; when++) {}
      luaL_argcheck(L, modes[when] != NULL, 2, "field 'return_when' must be "
                    "loom.ALL_COMPLETED, loom.FIRST_COMPLETED or loom.FIRST_EXCEPTION");
    }
    lua_pop(L, 2);
  }
  lua_settop(L, 1);
  multiwait *mw = new_multiwait(L, 1); /* list at 2, box at 3 */
  int rc = 0;
  pthread_mutex_lock(&mw->mu);
  for (;;) {
    int enough = mw->ndone == mw->n ||
                 (when == RW_FIRST && mw->ndone > 0) ||
                 (when == RW_EXCEPTION && mw->nfailed > 0);
    if (enough || rc == ETIMEDOUT || rc == LOOM_CANCELLED) break;
    rc = mw_wait(mw, &dl, has);
  }
  pthread_mutex_unlock(&mw->mu);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_newtable(L);
  lua_newtable(L);
  int nd = 0, nn = 0;
  for (int i = 0; i < mw->n; i++) {
    pthread_mutex_lock(&mw->mu);
    int done = mw->nodes[i].done;
    pthread_mutex_unlock(&mw->mu);
    lua_rawgeti(L, 2, i + 1);
    if (done) lua_rawseti(L, 4, ++nd);
    else lua_rawseti(L, 5, ++nn);
  }
  return 2;
}

static const luaL_Reg future_methods[] = {
  {"result", future_result},
  {"exception", future_exception},
  {"done", future_done},
  {"running", future_running},
  {"cancelled", future_cancelled},
  {"cancel", future_cancel},
  {"interrupt", future_interrupt},
  {"add_done_callback", future_add_done_callback},
  {NULL, NULL}
};

static const luaL_Reg future_meta[] = {
  {"__tostring", future_tostring},
  {NULL, NULL}
};

static const loom_class future_class = {
  "loom.Future", future_destroy, future_methods, future_meta, NULL
};

static const luaL_Reg future_funcs[] = {
  {"wait", l_wait},
  {"as_completed", l_as_completed},
  {NULL, NULL}
};

void loom__open_future(lua_State *L) {
  loom__register_class(L, &future_class);
  loom__bind_methods(L, &future_class);
  luaL_setfuncs(L, future_funcs, 0);
  lua_pushliteral(L, "FIRST_COMPLETED");
  lua_setfield(L, -2, "FIRST_COMPLETED");
  lua_pushliteral(L, "FIRST_EXCEPTION");
  lua_setfield(L, -2, "FIRST_EXCEPTION");
  lua_pushliteral(L, "ALL_COMPLETED");
  lua_setfield(L, -2, "ALL_COMPLETED");
}
