/*
** pool.c: loom.ThreadPoolExecutor, concurrent.futures on loom threads
** that each keep one lua_State for all the tasks they run.
**
** Ownership:
**   - The handle (a loom_object boxed in Lua states) holds one reference
**     on the core; every worker holds one while it runs. When the last
**     handle reference goes, the core is shut down without waiting: the
**     workers finish what is queued, then end (Python's rule).
**   - The core owns the queue of futures (one reference each), the worker
**     threads (one reference each, for interrupt, daemon marking and the
**     own-worker check) and the initializer's message.
**   - A task lives in its future's extra bytes: its code (refcounted
**     bytecode of a function whose only upvalues are the globals) or its
**     whole call as a message, and its arguments.
**
** Locks: c->mu guards everything in the core below it; it is taken alone
** (futures' locks and thread locks are taken only after it is released),
** except that cores_mu (the list of every core, for the exit) is taken
** before it, never inside. No Lua runs and no error is raised under
** either.
**
** Speed: a function whose upvalues are only the globals is dumped once per
** submitting state (cached by function) and loaded once per worker
** (cached by its code); other functions are copied whole with each task,
** as a thread's are. Arguments and a single result use the queue slots'
** inline values. Idle workers spin briefly before sleeping, and submit only
** signals when a worker sleeps.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom_internal.h"

#define SPIN_SECONDS 50e-6
#define CODE_CACHE 64     /* loaded functions a worker keeps */
#define SPINNERS 2        /* idle workers that may spin at once */
#define MAX_WORKERS 100000

/* Bytecode of a function whose upvalues are all the globals table. */
typedef struct code {
  atomic_int refs;
  int nups;
  size_t len;
  char bytes[];
} code;

static void code_release(code *k) {
  if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1)
    free(k);
}

typedef struct task {
  loom_future *next; /* the core's queue */
  code *code;        /* NULL: call holds the function and the arguments */
  loom_msg *call;    /* the arguments (code set, nargs > 1) */
  loom_value arg;    /* the argument (code set, nargs == 1) */
  int nargs;
} task;

static void task_free(void *p) {
  task *t = (task *)p;
  code_release(t->code);
  loom__msg_free(t->call);
  loom__value_free(&t->arg);
}

/* One per worker. A sleeping worker waits on its own cv until a submit
** pops it off the sleepers and sets woken: exactly one wake-up per task
** that needs one, and none while an awake worker can take the task. */
typedef struct wslot {
  pthread_cond_t cv;
  int woken;
  loom_thread *thread;  /* referenced */
  loom_future *current; /* what it runs now, for interrupt */
} wslot;

typedef struct core {
  loom_object obj; /* its own class: the owner of cv for loom__wait */
  pthread_mutex_t mu;
  pthread_cond_t idle_cv; /* shutdown(wait) sleeps until nworkers == 0 */
  atomic_int queued;      /* length of the queue (read alone as a hint) */
  loom_future *head, *tail;
  int spinning;    /* workers waiting for work without sleeping */
  int nsleep;      /* slots of the workers asleep, most recent last */
  int *sleepers;
  int waiting;     /* workers in take() (spinning or asleep) */
  int nworkers;    /* started (or being started) and not yet ended */
  int nthreads;    /* slots in use */
  int cap;
  wslot **slots;
  int max_workers, cancel_hook;
  int shutdown, exiting, broken;
  int nowait; /* shut down with wait=false: the exit does not wait */
  char *broken_msg;
  char *prefix;
  loom_msg *init;  /* initializer and initargs */
  loom_paths paths;
  struct core *prev, *next; /* every core, under cores_mu */
} core;

typedef struct pool {
  loom_object obj;
  core *c;
} pool;

static pthread_mutex_t cores_mu = PTHREAD_MUTEX_INITIALIZER;
static core *cores;
static int exit_started; /* under cores_mu */
static atomic_int pool_counter;

static const loom_class pool_class;
static const char code_meta[] = "loom.pool.code";

/* ------------------------------------------------------------------ */
/* the core                                                             */

static void core_destroy(loom_object *o) {
  core *c = (core *)o;
  pthread_mutex_lock(&cores_mu);
  if (c->prev) c->prev->next = c->next; else if (cores == c) cores = c->next;
  if (c->next) c->next->prev = c->prev;
  pthread_mutex_unlock(&cores_mu);
  for (loom_future *f = c->head, *n; f; f = n) {
    n = ((task *)loom__future_extra(f))->next;
    loom__release((loom_object *)f);
  }
  for (int i = 0; i < c->cap; i++) {
    if (c->slots[i] == NULL) continue;
    loom__release((loom_object *)c->slots[i]->thread);
    pthread_cond_destroy(&c->slots[i]->cv);
    free(c->slots[i]);
  }
  free(c->slots);
  free(c->sleepers);
  free(c->broken_msg);
  free(c->prefix);
  loom__msg_free(c->init);
  loom__paths_free(&c->paths);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->idle_cv);
  free(c);
}

static const loom_class core_class = {"loom.pool.core", core_destroy, NULL,
                                      NULL, NULL};

/* Wakes every sleeping worker; c->mu held. */
static void wake_all(core *c) {
  while (c->nsleep > 0) {
    wslot *w = c->slots[c->sleepers[--c->nsleep]];
    w->woken = 1;
    pthread_cond_signal(&w->cv);
  }
}

/* Marks c shut down and wakes its sleeping workers; c->mu held. */
static void shutdown_locked(core *c) {
  c->shutdown = 1;
  wake_all(c);
}

/* Takes the whole queue out of c (c->mu held). */
static loom_future *detach_queue(core *c) {
  loom_future *list = c->head;
  c->head = c->tail = NULL;
  atomic_store_explicit(&c->queued, 0, memory_order_relaxed);
  return list;
}

void loom__pools_exit(void) {
  pthread_mutex_lock(&cores_mu);
  exit_started = 1;
  for (core *c = cores; c; c = c->next) {
    pthread_mutex_lock(&c->mu);
    c->exiting = 1;
    shutdown_locked(c);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_unlock(&cores_mu);
}

/* ------------------------------------------------------------------ */
/* workers                                                              */

/* Up to SPINNERS idle workers wait a little for work before sleeping
** (a sleeper costs the submitter a wake-up, a system call). They yield
** the CPU while they wait: the submitter may need the core more. */
static void spin_for_work(core *c) {
  double end = loom__now() + SPIN_SECONDS;
  do {
    for (int i = 0; i < 32; i++) {
      if (atomic_load_explicit(&c->queued, memory_order_relaxed) > 0) return;
      LOOM_CPU_RELAX();
    }
    sched_yield();
  } while (loom__now() < end);
}

/* The next future to run, or NULL when the worker should end. */
static loom_future *take(core *c, int slot) {
  pthread_mutex_lock(&c->mu);
  wslot *w = c->slots[slot];
  w->current = NULL;
  c->waiting++;
  int spun = 0;
  for (;;) {
    loom_future *f = c->head;
    if (f != NULL && !c->broken) {
      task *t = (task *)loom__future_extra(f);
      c->head = t->next;
      if (c->head == NULL) c->tail = NULL;
      atomic_fetch_sub_explicit(&c->queued, 1, memory_order_relaxed);
      c->waiting--;
      w->current = f;
      pthread_mutex_unlock(&c->mu);
      return f;
    }
    if (c->shutdown || c->broken) break;
    if (!spun && c->spinning < SPINNERS) { /* work often comes within microseconds */
      spun = 1;
      c->spinning++;
      pthread_mutex_unlock(&c->mu);
      spin_for_work(c);
      pthread_mutex_lock(&c->mu);
      c->spinning--;
      continue;
    }
    c->sleepers[c->nsleep++] = slot;
    w->woken = 0;
    while (!w->woken) pthread_cond_wait(&w->cv, &c->mu);
  }
  c->waiting--;
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static void release_held(code **held) {
  for (int i = 0; i < CODE_CACHE; i++) {
    code_release(held[i]);
    held[i] = NULL;
  }
}

/* __gc of the worker's held codes: the cache keys are their addresses. */
static int held_gc(lua_State *L) {
  release_held((code **)lua_touserdata(L, 1));
  return 0;
}

/* Pushes the worker's function for k: loaded once, kept in the cache at
** stack index 1 (code address -> function) while index 2 holds k. */
static void push_code(lua_State *L, code *k) {
  if (lua_rawgetp(L, 1, k) == LUA_TFUNCTION) return;
  lua_pop(L, 1);
  code **held = (code **)lua_touserdata(L, 2);
  int n = 0;
  while (n < CODE_CACHE && held[n] != NULL) n++;
  if (n == CODE_CACHE) { /* full: start again */
    for (int i = 0; i < CODE_CACHE; i++) {
      lua_pushnil(L);
      lua_rawsetp(L, 1, held[i]);
    }
    release_held(held);
    n = 0;
  }
  if (luaL_loadbufferx(L, k->bytes, k->len, "=task", "b") != LUA_OK)
    lua_error(L);
  for (int i = 1; i <= k->nups; i++) {
    lua_pushglobaltable(L);
    lua_setupvalue(L, -2, i);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, 1, k);
  atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
  held[n] = k;
}

/* Protected, on a worker's stack [cache, held, future]: runs the task
** and completes its future. */
static int run_task(lua_State *L) {
  loom_future *f = (loom_future *)lua_touserdata(L, 3);
  task *t = (task *)loom__future_extra(f);
  lua_settop(L, 2);
  lua_pushcfunction(L, loom__traceback_handler);
  int h = lua_gettop(L);
  int nargs = t->nargs;
  if (t->code != NULL) {
    push_code(L, t->code);
    if (nargs == 1) loom__value_push(L, &t->arg);
    else if (nargs > 1) loom__decode(L, t->call);
  } else {
    nargs = loom__decode(L, t->call) - 1;
  }
  int status = lua_pcall(L, nargs, LUA_MULTRET, h);
  if (status == LUA_OK) {
    loom__future_finish(L, f, 1, h + 1, lua_gettop(L) - h);
  } else if (status == LUA_ERRRUN) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    loom__future_finish(L, f, 0, -2, 1);
  } else { /* the handler itself failed: a bare value */
    lua_pushnil(L);
    loom__future_finish(L, f, 0, -2, 1);
  }
  return 0;
}

/* Marks c broken (the initializer failed in a worker of state L) and
** fails everything queued. */
static void break_pool(lua_State *L, core *c, const char *why) {
  const char *msg = lua_pushfstring(L,
      "a thread initializer failed, the pool is not usable anymore: %s", why);
  char *copy = (char *)malloc(strlen(msg) + 1);
  if (copy) memcpy(copy, msg, strlen(msg) + 1);
  pthread_mutex_lock(&c->mu);
  loom_future *list = NULL;
  if (!c->broken) {
    c->broken = 1;
    c->broken_msg = copy;
    copy = NULL;
    list = detach_queue(c);
    wake_all(c);
  }
  pthread_mutex_unlock(&c->mu);
  free(copy);
  while (list) {
    loom_future *f = list;
    list = ((task *)loom__future_extra(f))->next;
    loom__future_fail(L, f, "broken", msg);
    loom__release((loom_object *)f);
  }
}

/* Protected: the initializer, with its arguments. */
static int run_initializer(lua_State *L) {
  core *c = (core *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_pushcfunction(L, loom__traceback_handler);
  int n = loom__decode(L, c->init);
  if (lua_pcall(L, n - 1, 0, 1) != LUA_OK) {
    if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      lua_pushfstring(L, "%s\n%s", luaL_tolstring(L, -2, NULL),
                      lua_tostring(L, -2) ? lua_tostring(L, -2) : "");
    }
    return lua_error(L);
  }
  return 0;
}

/* Protected: completes the future at 1 with the error value at 2. */
static int finish_failed(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L); /* no traceback */
  loom__future_finish(L, (loom_future *)lua_touserdata(L, 1), 0, 2, 1);
  return 0;
}

/* Running the task failed outside its function (an argument that cannot
** be decoded here, results that cannot be copied): its error value, on
** top, becomes the future's error. */
static void fail_task(lua_State *L, loom_future *f) {
  lua_pushcfunction(L, finish_failed);
  lua_pushlightuserdata(L, f);
  lua_pushvalue(L, -3);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) { /* the error value itself */
    lua_pushcfunction(L, finish_failed);
    lua_pushlightuserdata(L, f);
    lua_pushfstring(L, "task failed; its error could not be kept: %s",
                    lua_tostring(L, -3) ? lua_tostring(L, -3) : "?");
    lua_pcall(L, 2, 0, 0);
  }
}

/* Protected worker loop, on stack [core]. */
static int worker_loop(lua_State *L) {
  core *c = (core *)lua_touserdata(L, 1);
  int slot = (int)lua_tointeger(L, 2);
  lua_settop(L, 0);
  lua_newtable(L); /* 1: code cache */
  code **held = (code **)lua_newuserdatauv(L, CODE_CACHE * sizeof(code *), 0);
  memset(held, 0, CODE_CACHE * sizeof(code *));
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, held_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2); /* 2: held codes */
  if (c->init != NULL) {
    lua_pushcfunction(L, run_initializer);
    lua_pushlightuserdata(L, c);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      break_pool(L, c, luaL_tolstring(L, -1, NULL));
      return 0;
    }
  }
  loom_future *f;
  while ((f = take(c, slot)) != NULL) {
    if (loom__future_start(f)) {
      lua_settop(L, 2);
      lua_pushcfunction(L, run_task);
      lua_pushvalue(L, 1);
      lua_pushvalue(L, 2);
      lua_pushlightuserdata(L, f);
      if (lua_pcall(L, 3, 0, 0) != LUA_OK) /* decoding or copying failed */
        fail_task(L, f);
    }
    loom__release((loom_object *)f);
    lua_settop(L, 2);
  }
  return 0;
}

/* Ends worker `slot`'s part in c: also called when its thread could not
** make its state, so that shutdown does not wait for it. */
static void worker_end(core *c, int slot) {
  pthread_mutex_lock(&c->mu);
  c->slots[slot]->current = NULL;
  c->nworkers--;
  pthread_cond_broadcast(&c->idle_cv);
  pthread_mutex_unlock(&c->mu);
  loom__release(&c->obj);
}

static void worker_failed(void *ud) {
  void **arg = (void **)ud;
  core *c = (core *)arg[0];
  int slot = (int)(intptr_t)arg[1];
  free(arg);
  worker_end(c, slot);
}

/* A worker thread's body (a native loom thread). */
static int worker_main(lua_State *L) {
  void **arg = (void **)lua_touserdata(L, 1);
  core *c = (core *)arg[0];
  int slot = (int)(intptr_t)arg[1];
  free(arg);
  /* the worker names itself in its slot before it runs anything, so that
  ** its first task is already known as one of the pool's */
  loom_thread *self = loom__self();
  loom__retain((loom_object *)self);
  pthread_mutex_lock(&c->mu);
  c->slots[slot]->thread = self;
  int daemon = c->nowait;
  pthread_mutex_unlock(&c->mu);
  if (daemon) loom__thread_set_daemon(self); /* shutdown{wait=false} came first */
  lua_settop(L, 0);
  lua_pushcfunction(L, worker_loop);
  lua_pushlightuserdata(L, c);
  lua_pushinteger(L, slot);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: a pool worker failed: %s\n",
            lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    fflush(stderr);
  }
  worker_end(c, slot);
  return 0;
}

/* Starts worker number `slot` (reserved by the caller in nworkers);
** returns 0 or an errno. */
static int start_worker(core *c, int slot) {
  char name[128];
  snprintf(name, sizeof name, "%s_%d", c->prefix, slot);
  void **arg = (void **)malloc(2 * sizeof(void *));
  if (arg == NULL) return ENOMEM;
  arg[0] = c;
  arg[1] = (void *)(intptr_t)slot;
  loom__retain(&c->obj); /* the worker's */
  int err = 0;
  loom_thread *t = loom__thread_start_native(name, c->cancel_hook, &c->paths,
                                             worker_main, worker_failed, arg,
                                             &err);
  if (t == NULL) {
    free(arg);
    loom__release(&c->obj);
    return err;
  }
  loom__release((loom_object *)t); /* the worker keeps its own in its slot */
  return 0;
}

/* ------------------------------------------------------------------ */
/* submitting                                                           */

static int code_box_gc(lua_State *L) {
  code **box = (code **)luaL_testudata(L, 1, code_meta);
  if (box != NULL) {
    code_release(*box);
    *box = NULL;
  }
  return 0;
}

/* lua_dump's writer: appends to a growing code block (not a luaL_Buffer,
** which may not share the stack with the function being dumped). */
typedef struct dumpbuf {
  code *k;
  size_t cap;
} dumpbuf;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  dumpbuf *d = (dumpbuf *)ud;
  if (d->k->len + sz > d->cap) {
    size_t ncap = d->cap * 2 > d->k->len + sz ? d->cap * 2 : d->k->len + sz;
    code *k = (code *)realloc(d->k, sizeof *k + ncap);
    if (k == NULL) return 1; /* lua_dump stops and returns this */
    d->k = k;
    d->cap = ncap;
  }
  memcpy(d->k->bytes + d->k->len, p, sz);
  d->k->len += sz;
  return 0;
}

/* The code of the Lua function at idx when its only upvalues are the
** globals (a reference for the caller), else NULL. Called from submit,
** whose upvalue 2 is the state's cache (weak keys: function -> code). */
static code *code_of(lua_State *L, int idx) {
  if (lua_iscfunction(L, idx)) return NULL;
  int nups = 0;
  lua_pushglobaltable(L);
  while (lua_getupvalue(L, idx, nups + 1) != NULL) {
    int g = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (!g) {
      lua_pop(L, 1);
      return NULL;
    }
    nups++;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(2)); /* this state's cache */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    code *k = *(code **)lua_touserdata(L, -1);
    lua_pop(L, 2);
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
  }
  lua_pop(L, 1);
  code **box = (code **)lua_newuserdatauv(L, sizeof(code *), 0);
  *box = NULL;
  if (luaL_newmetatable(L, code_meta)) {
    lua_pushcfunction(L, code_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  dumpbuf d = {(code *)malloc(sizeof(code) + 256), 256};
  if (d.k == NULL) luaL_error(L, "not enough memory");
  d.k->len = 0;
  lua_pushvalue(L, idx);
  int failed = lua_dump(L, dump_writer, &d, 0);
  lua_pop(L, 1);
  if (failed) {
    free(d.k);
    luaL_error(L, "not enough memory");
  }
  code *k = d.k;
  atomic_init(&k->refs, 2); /* the box's and the caller's */
  k->nups = nups;
  *box = k;
  lua_pushvalue(L, idx);
  lua_insert(L, -2);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return k;
}

/* Argument 1 of a method (see loom__bind_methods). */
static pool *check_pool(lua_State *L) {
  return (pool *)loom__check_self(L, &pool_class);
}

/* Makes one more worker slot (c->mu held); 0 when out of memory. */
static int reserve_slot(core *c) {
  if (c->nthreads == c->cap) {
    int ncap = c->cap ? c->cap * 2 : 4;
    if (ncap > c->max_workers) ncap = c->max_workers;
    wslot **sl = (wslot **)realloc(c->slots, ncap * sizeof *sl);
    if (sl == NULL) return 0;
    c->slots = sl;
    int *sp = (int *)realloc(c->sleepers, ncap * sizeof *sp);
    if (sp == NULL) return 0;
    c->sleepers = sp;
    for (int i = c->cap; i < ncap; i++) sl[i] = NULL;
    c->cap = ncap;
  }
  wslot *w = (wslot *)calloc(1, sizeof *w);
  if (w == NULL) return 0;
  if (loom__cond_init(&w->cv) != 0) {
    free(w);
    return 0;
  }
  c->slots[c->nthreads] = w;
  return 1;
}

/* pool:submit(fn, ...) -> Future */
static int pool_submit(lua_State *L) {
  pool *p = check_pool(L);
  core *c = p->c;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 2;
  luaL_checkstack(L, 24, "submitting a task"); /* code_of and the encoders */
  loom_future *f = loom__future_new(sizeof(task), task_free);
  if (f == NULL) return luaL_error(L, "not enough memory");
  loom__push_new(L, (loom_object *)f); /* frees f if encoding raises */
  int fbox = lua_gettop(L);
  task *t = (task *)loom__future_extra(f);
  t->nargs = nargs;
  t->code = code_of(L, 2);
  if (t->code == NULL) {
    t->call = loom__encode_call(L, 2, nargs);
  } else if (nargs == 1) {
    loom__value_set(L, 3, &t->arg, "args[1]");
  } else if (nargs > 1) {
    t->call = loom__encode(L, 3, nargs, "args");
  }

  pthread_mutex_lock(&c->mu);
  const char *refuse = NULL;
  if (c->broken) refuse = "broken";
  else if (c->exiting) refuse = "cannot schedule new futures after interpreter shutdown";
  else if (c->shutdown) refuse = "cannot schedule new futures after shutdown";
  int slot = -1;
  if (refuse == NULL) {
    loom__retain((loom_object *)f); /* the queue's */
    t->next = NULL;
    if (c->tail) ((task *)loom__future_extra(c->tail))->next = f;
    else c->head = f;
    c->tail = f;
    int queued = atomic_fetch_add_explicit(&c->queued, 1, memory_order_relaxed) + 1;
    if (c->waiting < queued && c->nworkers < c->max_workers && reserve_slot(c)) {
      slot = c->nthreads++;
      c->nworkers++;
    }
    if (c->nsleep > 0 && queued > c->waiting - c->nsleep) {
      wslot *w = c->slots[c->sleepers[--c->nsleep]];
      w->woken = 1;
      pthread_cond_signal(&w->cv);
    }
  }
  char *broken = refuse && c->broken && c->broken_msg ? c->broken_msg : NULL;
  pthread_mutex_unlock(&c->mu);
  if (refuse != NULL) {
    if (broken != NULL) /* broken_msg is final once set */
      return loom__raise(L, "broken", "%s", broken);
    return loom__raise(L, "shutdown", "%s", refuse);
  }
  if (slot >= 0) {
    int err = start_worker(c, slot);
    if (err != 0) {
      pthread_mutex_lock(&c->mu);
      c->nworkers--;
      int none = c->nworkers == 0;
      pthread_mutex_unlock(&c->mu);
      /* with no worker at all, nobody would ever run it */
      if (none && loom__future_cancel(L, f))
        return luaL_error(L, "cannot start a pool worker: %s", strerror(err));
    }
  }
  lua_settop(L, fbox);
  return 1;
}

/* Interrupts whatever c's workers run now (c->mu not held). */
static void interrupt_running(lua_State *L, core *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->nthreads;
  loom_future **list = (loom_future **)malloc((n ? n : 1) * sizeof *list);
  int k = 0;
  if (list != NULL)
    for (int i = 0; i < n; i++)
      if (c->slots[i]->current != NULL) {
        loom__retain((loom_object *)c->slots[i]->current);
        list[k++] = c->slots[i]->current;
      }
  pthread_mutex_unlock(&c->mu);
  if (list == NULL) {
    luaL_error(L, "not enough memory");
    return;
  }
  for (int i = 0; i < k; i++) {
    loom__future_interrupt(L, list[i]);
    loom__release((loom_object *)list[i]);
  }
  free(list);
}

/* Whether the calling thread is one of c's workers. */
static int is_own_worker(core *c) {
  loom_thread *self = loom__self();
  int own = 0;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < c->nthreads && self != NULL; i++)
    if (c->slots[i]->thread == self) own = 1;
  pthread_mutex_unlock(&c->mu);
  return own;
}

static int opt_flag(lua_State *L, int idx, const char *field, int dflt) {
  if (lua_isnoneornil(L, idx)) return dflt;
  int t = lua_getfield(L, idx, field);
  int v = t == LUA_TNIL ? dflt : lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "bad argument #%d to 'shutdown' (field '%s' must be a "
               "boolean)", idx - 1, field);
  lua_pop(L, 1);
  return v;
}

/* pool:shutdown{wait=true, cancel_futures=false, interrupt=false} */
static int pool_shutdown(lua_State *L) {
  pool *p = check_pool(L);
  core *c = p->c;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  int wait = opt_flag(L, 2, "wait", 1);
  int cancel = opt_flag(L, 2, "cancel_futures", 0);
  int interrupt = opt_flag(L, 2, "interrupt", 0);
  if (wait && is_own_worker(c))
    return luaL_error(L, "a task cannot shut down its own pool with "
                      "wait=true (it would wait for itself)");
  pthread_mutex_lock(&c->mu);
  shutdown_locked(c);
  loom_future *list = cancel ? detach_queue(c) : NULL;
  pthread_mutex_unlock(&c->mu);
  while (list) { /* cancelled here, so their callbacks run here */
    loom_future *f = list;
    list = ((task *)loom__future_extra(f))->next;
    loom__future_cancel(L, f);
    loom__release((loom_object *)f); /* the queue's reference */
  }
  if (interrupt) interrupt_running(L, c);
  if (!wait) { /* never hold up the exit */
    pthread_mutex_lock(&c->mu);
    c->nowait = 1;
    int n = c->nthreads;
    loom_thread **ts = (loom_thread **)malloc((n ? n : 1) * sizeof *ts);
    for (int i = 0; ts != NULL && i < n; i++) {
      ts[i] = c->slots[i]->thread;
      if (ts[i]) loom__retain((loom_object *)ts[i]);
    }
    pthread_mutex_unlock(&c->mu);
    if (ts == NULL) return luaL_error(L, "not enough memory");
    for (int i = 0; i < n; i++)
      if (ts[i]) {
        loom__thread_set_daemon(ts[i]);
        loom__release((loom_object *)ts[i]);
      }
    free(ts);
    return 0;
  }
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  while (c->nworkers > 0 && rc != LOOM_CANCELLED)
    rc = loom__wait(&c->obj, &c->idle_cv, &c->mu, NULL);
  pthread_mutex_unlock(&c->mu);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  return 0;
}

static int pool_close(lua_State *L) {
  lua_settop(L, 1);
  return pool_shutdown(L);
}

/* __index, a closure over the methods table: methods first (the hot
** path, no check), then the fields. */
static int pool_index(lua_State *L) {
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  pool *p = (pool *)loom__check_object(L, 1, &pool_class);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "max_workers") == 0) {
    lua_pushinteger(L, p->c->max_workers);
    return 1;
  }
  return 0;
}

static int pool_tostring(lua_State *L) {
  pool *p = (pool *)loom__test_object(L, 1, &pool_class);
  if (p == NULL) {
    lua_pushliteral(L, "loom.ThreadPoolExecutor (closed)");
    return 1;
  }
  core *c = p->c;
  pthread_mutex_lock(&c->mu);
  int workers = c->nworkers, queued = atomic_load(&c->queued);
  const char *state = c->broken ? "broken" : c->shutdown ? "shut down" : "running";
  pthread_mutex_unlock(&c->mu);
  lua_pushfstring(L, "loom.ThreadPoolExecutor(%s, %d/%d workers, %d queued)",
                  state, workers, c->max_workers, queued);
  return 1;
}

static void pool_destroy(loom_object *o) {
  pool *p = (pool *)o;
  core *c = p->c;
  pthread_mutex_lock(&c->mu);
  shutdown_locked(c); /* workers finish the queue, then end */
  pthread_mutex_unlock(&c->mu);
  loom__release(&c->obj);
  free(p);
}

/* ------------------------------------------------------------------ */
/* the constructor                                                      */

static char *dup_cstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static int default_workers(void) {
  int n = loom__config_default_workers();
  if (n > 0) return n;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  n = (cpus > 0 ? (int)cpus : 1) + 4;
  return n < 32 ? n : 32;
}

/* loom.ThreadPoolExecutor{max_workers=, thread_name_prefix=, initializer=,
** initargs=, cancel_hook=} */
static int l_ThreadPoolExecutor(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  int max = default_workers();
  if (lua_getfield(L, 1, "max_workers") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER)
      return luaL_argerror(L, 1, "field 'max_workers' must be an integer");
    if (n <= 0) return luaL_argerror(L, 1, "max_workers must be greater than 0");
    luaL_argcheck(L, n <= MAX_WORKERS, 1, "max_workers is too large");
    max = (int)n;
  }
  const char *prefix = NULL;
  if (lua_getfield(L, 1, "thread_name_prefix") != LUA_TNIL) {
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1,
                  "field 'thread_name_prefix' must be a string");
    prefix = lua_tostring(L, -1);
    if (*prefix == '\0') prefix = NULL; /* Python: the default prefix */
  }
  int hook = lua_getfield(L, 1, "cancel_hook") != LUA_TNIL && lua_toboolean(L, -1);
  int init_t = lua_getfield(L, 1, "initializer"); /* 5 */
  luaL_argcheck(L, init_t == LUA_TNIL || init_t == LUA_TFUNCTION, 1,
                "field 'initializer' must be a function");
  int nargs = 0;
  if (lua_getfield(L, 1, "initargs") != LUA_TNIL) { /* 6 */
    luaL_argcheck(L, lua_istable(L, 6), 1, "field 'initargs' must be a table");
    luaL_argcheck(L, init_t == LUA_TFUNCTION, 1, "initargs without an initializer");
    if (lua_getfield(L, 6, "n") != LUA_TNIL) {
      lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
      luaL_argcheck(L, n >= 0 && n <= 1000, 1,
                    "field 'initargs.n' must be an integer from 0 to 1000");
      nargs = (int)n;
    } else {
      luaL_argcheck(L, lua_rawlen(L, 6) <= 1000, 1, "too many initargs");
      nargs = (int)lua_rawlen(L, 6);
    }
    lua_pop(L, 1);
    luaL_checkstack(L, nargs + 2, "too many initargs");
  }
  lua_settop(L, 6);
  loom_msg *init = NULL;
  if (init_t == LUA_TFUNCTION) {
    lua_pushvalue(L, 5);
    for (int i = 1; i <= nargs; i++) lua_rawgeti(L, 6, i);
    init = loom__encode_call(L, 7, nargs);
    lua_settop(L, 6);
  }
  char buf[64];
  if (prefix == NULL) {
    snprintf(buf, sizeof buf, "ThreadPoolExecutor-%d",
             atomic_fetch_add(&pool_counter, 1));
    prefix = buf;
  }
  core *c = (core *)calloc(1, sizeof *c);
  pool *p = (pool *)calloc(1, sizeof *p);
  int ok = c != NULL && p != NULL && (c->prefix = dup_cstr(prefix)) != NULL &&
           loom__paths_capture(L, &c->paths);
  if (ok && pthread_mutex_init(&c->mu, NULL) != 0) ok = 0;
  else if (ok && loom__cond_init(&c->idle_cv) != 0) {
    pthread_mutex_destroy(&c->mu);
    ok = 0;
  }
  if (!ok) {
    if (c) {
      free(c->prefix);
      loom__paths_free(&c->paths);
    }
    free(c);
    free(p);
    loom__msg_free(init);
    return luaL_error(L, "not enough memory for a pool");
  }
  loom__object_init(&c->obj, &core_class);
  atomic_init(&c->queued, 0);
  c->max_workers = max;
  c->cancel_hook = hook;
  c->init = init;
  loom__object_init(&p->obj, &pool_class);
  p->c = c;
  pthread_mutex_lock(&cores_mu);
  c->next = cores;
  if (cores) cores->prev = c;
  cores = c;
  if (exit_started) { /* made by a finalizer while the program exits */
    pthread_mutex_lock(&c->mu);
    c->exiting = 1;
    shutdown_locked(c);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_unlock(&cores_mu);
  loom__push_owned(L, &p->obj);
  return 1;
}

static const luaL_Reg pool_methods[] = {
  {"submit", pool_submit},
  {"shutdown", pool_shutdown},
  {NULL, NULL}
};

static const luaL_Reg pool_meta[] = {
  {"__close", pool_close},
  {"__tostring", pool_tostring},
  {NULL, NULL}
};

static const loom_class pool_class = {
  "loom.ThreadPoolExecutor", pool_destroy, pool_methods, pool_meta, NULL
};

void loom__open_pool(lua_State *L) {
  loom__register_class(L, &pool_class);
  loom__bind_methods(L, &pool_class);
  luaL_getmetatable(L, pool_class.name);
  lua_getfield(L, -1, "__methods");
  lua_pushcclosure(L, pool_index, 1);
  lua_setfield(L, -2, "__index");
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, -2); /* submit: the metatable, and the code cache */
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, pool_submit, 2);
  lua_setfield(L, -2, "submit");
  lua_pop(L, 2);
  lua_pushcfunction(L, l_ThreadPoolExecutor);
  lua_setfield(L, -2, "ThreadPoolExecutor");
  /* the Lua layer (loom/pool.lua) adds map to the methods */
  luaL_getmetatable(L, pool_class.name);
  lua_getfield(L, -1, "__methods");
  lua_setfield(L, -3, "_pool_methods");
  lua_pop(L, 1);
}
