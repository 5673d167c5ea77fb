/*
** thread.c: loom.Thread, native threads each running its own lua_State.
**
** Ownership: a loom_thread is a refcounted loom_object. Boxes hold
** references; a running thread holds one on itself, dropped as the very
** last thing it does. The thread's lua_State is created, used and closed
** by the thread alone; no other thread ever sees it.
**
** Locks, never nested except as noted:
**   t->mu        state, results, report; t->cv is broadcast when the
**                thread finishes (and is used by loom.sleep).
**   t->reg_mu    the wait registration used by cancel (see wait.c);
**                taken inside an object's mutex by a waiter, never the
**                other way round.
**   registry_mu  the list of running threads, the count of running
**                non-daemon threads and the `exiting` flag; taken alone.
**   carriers_mu  the idle carriers; taken alone.
**
** OS threads are reused: a finished loom thread parks its OS thread (a
** "carrier") for CARRIER_IDLE seconds, and start() hands a new job to a
** parked carrier instead of paying for pthread_create. Every loom thread
** still gets a fresh lua_State and its own ident.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lualib.h"
#include "loom_internal.h"

enum { T_NEW, T_RUNNING, T_DONE };

struct loom_thread {
  loom_object obj;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int state;
  atomic_int done;   /* state == T_DONE, readable without the mutex */
  int daemon, cancel_hook, is_main;
  char *name;
  loom_msg *start;   /* target + args, until the thread takes them */
  loom_paths paths;  /* the creator's package.path/cpath */
  loom_msg *result;  /* return values, or the error value */
  char *report;      /* error text + traceback, printed if never collected */
  char *traceback;
  int failed, collected;
  atomic_int cancel; /* number of cancel() calls */
  int hook_seen;     /* cancel count the hook already raised for (own) */
  uint64_t ident;
  pthread_mutex_t reg_mu;
  loom_object *wait_owner;
  pthread_cond_t *wait_cv;
  pthread_mutex_t *wait_mu;
  loom_thread *prev, *next; /* running list, under registry_mu */
  lua_CFunction native; /* pool workers: a C body instead of `start` */
  void (*native_failed)(void *ud); /* the body never ran: no state */
  void *native_ud;
  loom_watch *watchers; /* fired once when done, under mu */
};

static const loom_class thread_class;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_cv = PTHREAD_COND_INITIALIZER;
static loom_thread *running;   /* list of running threads */
static int running_count, running_nondaemon;
static int exiting; /* the exit join (sentinel_gc) has begun; never reset */
static loom_thread *main_thread; /* created once, never freed */
static atomic_uint_fast64_t ident_counter = 1;
static atomic_int name_counter;

static LOOM_TLS loom_thread *tls_self;
static LOOM_TLS uint64_t tls_ident;

static const char state_key = 't'; /* registry flag: a loom thread state */

#define CARRIER_IDLE 2.0 /* seconds a parked carrier waits for a job */
#define CARRIER_MAX 64   /* parked carriers kept at most */
#define SPIN_SECONDS 50e-6 /* spin before sleeping: about one wake-up */

typedef struct carrier {
  pthread_t tid;
  pthread_cond_t cv;   /* signalled (under carriers_mu) with a job or quit */
  _Atomic(loom_thread *) job; /* set under carriers_mu while parked */
  atomic_int has_job;          /* lets a parked carrier spin for a job */
  size_t stack;        /* the stack size it was created with */
  int quit;            /* joined by whoever set this */
  struct carrier *next;
} carrier;

static pthread_mutex_t carriers_mu = PTHREAD_MUTEX_INITIALIZER;
static carrier *idle_carriers;
static int idle_count;

loom_thread *loom__self(void) {
  return tls_self;
}

atomic_int *loom__thread_cancel_flag(loom_thread *t) {
  return &t->cancel;
}

void loom__thread_set_waiting(loom_thread *t, loom_object *owner,
                              pthread_cond_t *cv, pthread_mutex_t *mu) {
  pthread_mutex_lock(&t->reg_mu);
  t->wait_owner = owner;
  t->wait_cv = cv;
  t->wait_mu = mu;
  pthread_mutex_unlock(&t->reg_mu);
}

static uint64_t current_ident(void) {
  if (tls_ident == 0) tls_ident = atomic_fetch_add(&ident_counter, 1);
  return tls_ident;
}

/* ------------------------------------------------------------------ */
/* package paths and fresh states                                       */

/* A copy of package[field]; NULL when absent, or with *oom set. */
static char *dup_field(lua_State *L, const char *field, int *oom) {
  char *s = NULL;
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, field);
    size_t len;
    const char *v = lua_tolstring(L, -1, &len);
    if (v != NULL) {
      if ((s = (char *)malloc(len + 1)) != NULL) memcpy(s, v, len + 1);
      else *oom = 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return s;
}

static char *dup_cstr(const char *s);

/* Protected: encodes the table at 1 (a loader or a table of them). */
static int encode_preload(lua_State *L) {
  loom_msg **out = (loom_msg **)lua_touserdata(L, 2);
  *out = loom__encode(L, 1, 1, "package.preload");
  return 0;
}

static loom_msg *try_encode(lua_State *L, int idx) {
  loom_msg *m = NULL;
  lua_pushcfunction(L, encode_preload);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, &m);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    return NULL;
  }
  return m;
}

/* The loaders of package.preload that can be copied (Lua functions, and C
** functions that cross by name), loom.core's aside: a new state gets its
** own. A loader that cannot be copied is left out; a C opener belongs in
** the host's state hook. */
static loom_msg *capture_preload(lua_State *L) {
  loom_msg *m = NULL;
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1) || lua_getfield(L, -1, "preload") != LUA_TTABLE) {
    lua_settop(L, top);
    return NULL;
  }
  int preload = lua_gettop(L), any = 0;
  for (lua_pushnil(L); !any && lua_next(L, preload); lua_pop(L, 1))
    any = lua_type(L, -2) == LUA_TSTRING && lua_isfunction(L, -1) &&
          lua_tocfunction(L, -1) != luaopen_loom_core;
  if (!any) { /* the common case: nothing to copy, nothing allocated */
    lua_settop(L, top);
    return NULL;
  }
  lua_settop(L, preload);
  lua_newtable(L);
  int picked = preload + 1, n = 0;
  for (lua_pushnil(L); lua_next(L, preload); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isfunction(L, -1)) continue;
    if (lua_tocfunction(L, -1) == luaopen_loom_core) continue;
    loom_msg *one = try_encode(L, lua_gettop(L));
    if (one == NULL) continue;
    loom__msg_free(one);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, picked);
    n++;
  }
  if (n > 0) m = try_encode(L, picked);
  lua_settop(L, top);
  return m;
}

int loom__paths_capture(lua_State *L, loom_paths *p) {
  int oom = 0;
  p->path = dup_field(L, "path", &oom);
  p->cpath = dup_field(L, "cpath", &oom);
  p->preload = capture_preload(L);
  return !oom;
}

int loom__paths_copy(loom_paths *dst, const loom_paths *src) {
  dst->path = dup_cstr(src->path);
  dst->cpath = dup_cstr(src->cpath);
  dst->preload = src->preload ? loom__msg_dup(src->preload) : NULL;
  if ((src->path && !dst->path) || (src->cpath && !dst->cpath) ||
      (src->preload && !dst->preload)) {
    loom__paths_free(dst);
    return 0;
  }
  return 1;
}

void loom__paths_free(loom_paths *p) {
  free(p->path);
  free(p->cpath);
  loom__msg_free(p->preload);
  p->path = p->cpath = NULL;
  p->preload = NULL;
}

/*
** Lazy standard libraries: a thread that never touches io or math should
** not pay for opening them (together about half of a thread's start-up).
** Each such library starts as an empty stub table, in _G and in
** package.loaded, whose __index/__pairs open the real library, copy it
** into the stub and drop the metatable; after that the stub *is* the
** library. Only raw access (rawget, next) before first use sees it empty.
*/
static void lazy_fill(lua_State *L, int stub) {
  lua_CFunction open = lua_tocfunction(L, lua_upvalueindex(1));
  const char *name = lua_tostring(L, lua_upvalueindex(2));
  lua_pushcfunction(L, open);
  lua_pushstring(L, name);
  lua_call(L, 1, 1); /* the real library table */
  lua_pushnil(L);
  while (lua_next(L, -2)) { /* what the user already set in the stub wins */
    lua_pushvalue(L, -2);
    if (lua_rawget(L, stub) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, stub);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, stub);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setmetatable(L, stub);
}

static int lazy_index(lua_State *L) {
  lazy_fill(L, 1);
  lua_rawget(L, 1);
  return 1;
}

static int lazy_pairs(lua_State *L) {
  lazy_fill(L, 1);
  lua_getglobal(L, "next");
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

void loom__open_lazy_libs(lua_State *L) {
  static const char *const names[] = {LUA_COLIBNAME, LUA_IOLIBNAME,
    LUA_OSLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME, LUA_DBLIBNAME, NULL};
  int top = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (int i = 0; names[i]; i++) {
    if (lua_getfield(L, top + 1, names[i]) == LUA_TTABLE &&
        luaL_getmetafield(L, -1, "__index") == LUA_TFUNCTION &&
        lua_tocfunction(L, -1) == lazy_index) {
      lua_pushliteral(L, "");
      lua_gettable(L, top + 2); /* any key opens it */
    }
    lua_settop(L, top + 1);
  }
  lua_settop(L, top);
}

static void open_libs(lua_State *L) {
  static const luaL_Reg eager[] = {
    {LUA_GNAME, luaopen_base}, {LUA_LOADLIBNAME, luaopen_package},
    {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
    {NULL, NULL}};
  static const luaL_Reg lazy[] = {
    {LUA_COLIBNAME, luaopen_coroutine}, {LUA_IOLIBNAME, luaopen_io},
    {LUA_OSLIBNAME, luaopen_os}, {LUA_MATHLIBNAME, luaopen_math},
    {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_DBLIBNAME, luaopen_debug},
    {NULL, NULL}};
  for (const luaL_Reg *l = eager; l->name; l++) {
    luaL_requiref(L, l->name, l->func, 1);
    lua_pop(L, 1);
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (const luaL_Reg *l = lazy; l->name; l++) {
    lua_newtable(L); /* the stub */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l->func);
    lua_pushstring(L, l->name);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, lazy_index, 2);
    lua_setfield(L, -4, "__index");
    lua_pushcclosure(L, lazy_pairs, 2);
    lua_setfield(L, -2, "__pairs");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, l->name);
    lua_setglobal(L, l->name);
  }
  lua_pop(L, 1);
}

/* print for thread states: the whole line in one write, so lines printed
** by concurrent threads never mix. */
static int line_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  fwrite(s, 1, len, stdout);
  fflush(stdout);
  return 0;
}

/* Protected: adds the loaders of message 2 to the preload table at 1. */
static int decode_preload(lua_State *L) {
  loom__decode(L, (const loom_msg *)lua_touserdata(L, 2));
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 1);
  }
  return 0;
}

static int open_state_body(lua_State *L) {
  const loom_paths *p = (const loom_paths *)lua_touserdata(L, 1);
  open_libs(L);
  lua_pushcfunction(L, line_print);
  lua_setglobal(L, "print");
  lua_pushboolean(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  lua_getglobal(L, "package");
  if (p->path) {
    lua_pushstring(L, p->path);
    lua_setfield(L, -2, "path");
  }
  if (p->cpath) {
    lua_pushstring(L, p->cpath);
    lua_setfield(L, -2, "cpath");
  }
  luaL_getsubtable(L, -1, "preload");
  if (p->preload != NULL) { /* the creator's loaders that could be copied */
    lua_pushcfunction(L, decode_preload);
    lua_pushvalue(L, -2);
    lua_pushlightuserdata(L, (void *)p->preload);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1); /* left out */
  }
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 2);
  loom_state_hook hook;
  void *ud;
  loom__config_hook(&hook, &ud);
  if (hook) hook(L, ud);
  return 0;
}

lua_State *loom__state_open(const loom_paths *p, char *err, size_t errlen) {
  lua_State *L = loom__heap_newstate();
  if (L == NULL) {
    snprintf(err, errlen, "not enough memory for a new Lua state");
    return NULL;
  }
  lua_pushcfunction(L, open_state_body);
  lua_pushlightuserdata(L, (void *)p);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    snprintf(err, errlen, "cannot prepare the thread state: %s",
             lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    loom__heap_close(L);
    return NULL;
  }
  return L;
}

/* Message handler: wraps the error as {value, traceback}. */
int loom__traceback_handler(lua_State *L) {
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  luaL_traceback(L, L, NULL, 1);
  lua_rawseti(L, -2, 2);
  return 1;
}

/* ------------------------------------------------------------------ */
/* the thread body                                                      */

static void cancel_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  loom_thread *t = tls_self;
  int n = atomic_load_explicit(&t->cancel, memory_order_relaxed);
  if (n != t->hook_seen) {
    t->hook_seen = n; /* raise once per cancel(); blocking calls stay sticky */
    loom__raise_cancelled(L);
  }
}

/* Runs in protected mode: decode target and args, call, encode results. */
static int run_body(lua_State *L) {
  loom_thread *t = (loom_thread *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_pushcfunction(L, loom__traceback_handler);
  int h = lua_gettop(L);
  int n;
  if (t->native != NULL) {
    lua_pushcfunction(L, t->native);
    lua_pushlightuserdata(L, t->native_ud);
    n = 2;
  } else {
    n = loom__decode(L, t->start);
  }
  /* only this thread reads it: drop it now rather than with the handle, so
  ** arguments that mention the thread do not keep it alive */
  loom__msg_free(t->start);
  t->start = NULL;
  if (t->cancel_hook) lua_sethook(L, cancel_hook, LUA_MASKCOUNT, 1000);
  int status = lua_pcall(L, n - 1, LUA_MULTRET, h);
  lua_sethook(L, NULL, 0, 0);
  if (status != LUA_OK) { /* false, error value, traceback */
    lua_pushboolean(L, 0);
    if (status == LUA_ERRRUN) {
      lua_rawgeti(L, -2, 1);
      lua_rawgeti(L, -3, 2);
    } else { /* the handler itself failed: a bare value */
      lua_pushvalue(L, -2);
      lua_pushliteral(L, "");
    }
    return 3;
  }
  int nres = lua_gettop(L) - h;
  loom_msg *m = loom__encode_owned(L, h + 1, nres, "results", &t->obj);
  lua_pushboolean(L, 1);
  lua_pushlightuserdata(L, m);
  return 2;
}

static char *dup_cstr(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* Protected: keeps the error value (1) and traceback (2) of thread t (3)
** as its report and as a message in *(4). Describing the value may run its
** __tostring, which may itself fail: finish() then falls back to keep_text. */
/* Protected: luaL_tolstring of the value at 1. */
static int describe(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

static int keep_error(lua_State *L) {
  loom_thread *t = (loom_thread *)lua_touserdata(L, 3);
  loom_msg **out = (loom_msg **)lua_touserdata(L, 4);
  t->traceback = dup_cstr(lua_tostring(L, 2));
  /* a thread ended by its own cancellation did what it was asked: that is
  ** not an error to report, though result() still raises it */
  if (!loom__is_error(L, 1, "cancelled")) {
    /* the report's text; a __tostring that raises must not cost the
    ** value itself, which is still copied as it is */
    int top = lua_gettop(L);
    lua_pushcfunction(L, describe);
    lua_pushvalue(L, 1);
    const char *text = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : NULL;
    if (text == NULL) text = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_pushfstring(L, "%s\n%s", text, lua_tostring(L, 2));
    t->report = dup_cstr(lua_tostring(L, -1));
    lua_settop(L, top);
  }
  *out = loom__encode_owned(L, 1, 1, "error", &t->obj);
  return 0;
}

/* Protected fallback: the error value could not be described or copied
** (why: 5); keep a text in its place, which says so. */
static int keep_text(lua_State *L) {
  loom_thread *t = (loom_thread *)lua_touserdata(L, 3);
  loom_msg **out = (loom_msg **)lua_touserdata(L, 4);
  const char *why = lua_tostring(L, 5);
  lua_pushfstring(L, "(error object is a %s value; %s)", luaL_typename(L, 1),
                  why ? why : "it could not be kept");
  lua_pushfstring(L, "%s\n%s", lua_tostring(L, -1),
                  lua_tostring(L, 2) ? lua_tostring(L, 2) : "");
  free(t->report);
  t->report = loom__is_error(L, 1, "cancelled") ? NULL
                                                : dup_cstr(lua_tostring(L, -1));
  lua_pop(L, 1);
  *out = loom__encode_owned(L, -1, 1, "error", &t->obj);
  return 0;
}

/* Takes t off the running list; registry_mu held. */
static void unlink_running(loom_thread *t) {
  if (t->prev) t->prev->next = t->next; else running = t->next;
  if (t->next) t->next->prev = t->prev;
  running_count--;
}

static void finish(loom_thread *t, lua_State *L, const char *fatal) {
  loom_msg *result = NULL;
  if (fatal != NULL) {
    t->failed = 1;
    t->report = dup_cstr(fatal);
  } else if (lua_toboolean(L, 1)) {
    result = (loom_msg *)lua_touserdata(L, 2);
  } else { /* stack: false, error value, traceback */
    t->failed = 1;
    lua_CFunction keep[] = {keep_error, keep_text};
    lua_pushnil(L); /* why keep_error failed, for keep_text */
    for (int i = 0; i < 2; i++) {
      lua_pushcfunction(L, keep[i]);
      lua_pushvalue(L, 2);
      lua_pushvalue(L, 3);
      lua_pushlightuserdata(L, t);
      lua_pushlightuserdata(L, &result);
      lua_pushvalue(L, 4);
      if (lua_pcall(L, 5, 0, 0) == LUA_OK) break;
      lua_replace(L, 4);
      loom__msg_free(result); /* keep it all or nothing */
      result = NULL;
    }
  }
  if (L != NULL) loom__heap_close(L);

  /* off the running list first: once join() returns, active_count() and
  ** enumerate() no longer see it */
  pthread_mutex_lock(&registry_mu);
  unlink_running(t);
  pthread_mutex_unlock(&registry_mu);

  pthread_mutex_lock(&t->mu);
  t->result = result;
  t->state = T_DONE;
  atomic_store_explicit(&t->done, 1, memory_order_release);
  pthread_cond_broadcast(&t->cv);
  loom__watch_fire_all(&t->watchers, t->failed);
  pthread_mutex_unlock(&t->mu);
}

/* Lets the exit join go on once a non-daemon job is completely over. A
** carrier calls it only after it has parked itself (or decided to exit),
** so that the join at exit finds it on the idle list and joins it. */
static void nondaemon_done(void) {
  pthread_mutex_lock(&registry_mu);
  running_nondaemon--;
  pthread_cond_broadcast(&registry_cv);
  pthread_mutex_unlock(&registry_mu);
}

/* Runs t to the end and drops the thread's own reference (which may
** report an uncollected error); returns whether t was a daemon. */
static int run_job(loom_thread *t) {
  char err[256];
  tls_self = t;
  tls_ident = t->ident;
  lua_State *L = loom__state_open(&t->paths, err, sizeof err);
  if (L == NULL) {
    if (t->native_failed) t->native_failed(t->native_ud);
    finish(t, NULL, err);
  } else {
    lua_pushcfunction(L, run_body);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
      /* decoding the target or encoding the results failed */
      lua_pushboolean(L, 0);
      lua_insert(L, -2);
      lua_pushliteral(L, "");
    }
    finish(t, L, NULL);
  }
  tls_self = NULL;
  tls_ident = 0;
  pthread_mutex_lock(&t->mu); /* final now: loom__thread_set_daemon is over */
  int daemon = t->daemon;
  pthread_mutex_unlock(&t->mu);
  loom__release(&t->obj);
  return daemon;
}

/* A carrier runs its job, then parks until it gets another one, is told
** to quit (then whoever told it joins it), or times out (then it detaches
** itself). */
static void *carrier_main(void *arg) {
  carrier *c = (carrier *)arg;
  loom_thread *job = c->job;
  for (;;) {
    int daemon = run_job(job);
    struct timespec dl;
    loom__deadline_after(CARRIER_IDLE, &dl);
    pthread_mutex_lock(&carriers_mu);
    if (idle_count >= CARRIER_MAX) {
      pthread_mutex_unlock(&carriers_mu);
      if (!daemon) nondaemon_done();
      break;
    }
    c->job = NULL;
    atomic_store(&c->has_job, 0);
    c->next = idle_carriers;
    idle_carriers = c;
    idle_count++;
    pthread_mutex_unlock(&carriers_mu);
    if (!daemon) nondaemon_done();
    loom__spin_until(&c->has_job, SPIN_SECONDS); /* a job often comes soon */
    pthread_mutex_lock(&carriers_mu);
    int rc = 0;
    while (c->job == NULL && !c->quit && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&c->cv, &carriers_mu, &dl);
    if (c->job == NULL && !c->quit) { /* timed out: unlink ourselves */
      for (carrier **pp = &idle_carriers; *pp; pp = &(*pp)->next)
        if (*pp == c) {
          *pp = c->next;
          idle_count--;
          break;
        }
    }
    job = c->job;
    int quit = c->quit;
    pthread_mutex_unlock(&carriers_mu);
    if (quit) return NULL; /* joined and freed by the quitter */
    if (job == NULL) break;
  }
  pthread_detach(pthread_self());
  pthread_cond_destroy(&c->cv);
  free(c);
  return NULL;
}

/* Gives t to a parked carrier; 0 when none fits. */
static int hand_to_idle_carrier(loom_thread *t, size_t stack) {
  int ok = 0;
  pthread_mutex_lock(&carriers_mu);
  for (carrier **pp = &idle_carriers; *pp; pp = &(*pp)->next) {
    carrier *c = *pp;
    if (c->stack != stack) continue;
    *pp = c->next;
    idle_count--;
    c->job = t;
    atomic_store_explicit(&c->has_job, 1, memory_order_release);
    pthread_cond_signal(&c->cv);
    ok = 1;
    break;
  }
  pthread_mutex_unlock(&carriers_mu);
  return ok;
}

static int new_carrier(loom_thread *t, size_t stack) {
  carrier *c = (carrier *)calloc(1, sizeof *c);
  if (c == NULL) return ENOMEM;
  int rc = loom__cond_init(&c->cv);
  if (rc != 0) {
    free(c);
    return rc;
  }
  c->job = t;
  c->stack = stack;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (stack) pthread_attr_setstacksize(&attr, stack);
  rc = pthread_create(&c->tid, &attr, carrier_main, c);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    pthread_cond_destroy(&c->cv);
    free(c);
  }
  return rc;
}

/* Joins every parked carrier (at exit, so that no OS thread outlives the
** main state needlessly). */
static void drain_idle_carriers(void) {
  pthread_mutex_lock(&carriers_mu);
  carrier *list = idle_carriers;
  idle_carriers = NULL;
  idle_count = 0;
  for (carrier *c = list; c; c = c->next) {
    c->quit = 1;
    pthread_cond_signal(&c->cv);
  }
  pthread_mutex_unlock(&carriers_mu);
  while (list) {
    carrier *c = list;
    list = c->next;
    pthread_join(c->tid, NULL);
    pthread_cond_destroy(&c->cv);
    free(c);
  }
}

/* ------------------------------------------------------------------ */
/* the object                                                           */

static void thread_destroy(loom_object *o) {
  loom_thread *t = (loom_thread *)o;
  if (t->failed && !t->collected && t->report != NULL) {
    fprintf(stderr, "Exception in thread %s:\n%s\n", t->name, t->report);
    fflush(stderr);
  }
  free(t->name);
  free(t->report);
  free(t->traceback);
  loom__msg_free(t->start);
  loom__msg_free(t->result);
  loom__paths_free(&t->paths);
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->reg_mu);
  free(t);
}

static loom_thread *thread_alloc(const char *name) {
  loom_thread *t = (loom_thread *)calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  if (pthread_mutex_init(&t->mu, NULL) != 0) goto fail_mu;
  if (loom__cond_init(&t->cv) != 0) goto fail_cv;
  if (pthread_mutex_init(&t->reg_mu, NULL) != 0) goto fail_reg;
  t->name = dup_cstr(name);
  if (t->name == NULL) goto fail_name;
  loom__object_init(&t->obj, &thread_class);
  atomic_init(&t->cancel, 0);
  atomic_init(&t->done, 0);
  return t;
fail_name:
  pthread_mutex_destroy(&t->reg_mu);
fail_reg:
  pthread_cond_destroy(&t->cv);
fail_cv:
  pthread_mutex_destroy(&t->mu);
fail_mu:
  free(t);
  return NULL;
}

/* Pushes t's name, read under the lock (it may be renamed concurrently)
** and pushed after unlocking; returns it. */
static const char *push_name(lua_State *L, loom_thread *t) {
  pthread_mutex_lock(&t->mu);
  char *copy = dup_cstr(t->name);
  pthread_mutex_unlock(&t->mu);
  lua_pushstring(L, copy ? copy : "?");
  free(copy);
  return lua_tostring(L, -1);
}

char *loom__thread_name(loom_thread *t) {
  if (t == NULL) return dup_cstr("MainThread");
  pthread_mutex_lock(&t->mu);
  char *copy = dup_cstr(t->name);
  pthread_mutex_unlock(&t->mu);
  return copy;
}

static loom_thread *check_thread(lua_State *L, int idx) {
  return LOOM_CHECK(L, idx, loom_thread, &thread_class);
}

/* A new thread is a daemon when the thread creating it is one (Python's
** rule), unless it says otherwise. */
static int creator_daemon(void) {
  loom_thread *self = tls_self;
  if (self == NULL) return 0;
  pthread_mutex_lock(&self->mu);
  int daemon = self->daemon;
  pthread_mutex_unlock(&self->mu);
  return daemon;
}

/* Pushes a new, unstarted thread running the function at stack index
** `first` with the nargs values after it. name may be NULL or "" (then
** Thread-N, as Python's `name or _newname()`). */
static void new_thread(lua_State *L, int first, int nargs, const char *name,
                       int daemon, int hook) {
  char buf[32];
  if (name == NULL || name[0] == '\0') {
    snprintf(buf, sizeof buf, "Thread-%d", atomic_fetch_add(&name_counter, 1) + 1);
    name = buf;
  }
  loom_msg *start = loom__encode_call(L, first, nargs);
  loom_thread *t = thread_alloc(name);
  if (t == NULL || !loom__paths_capture(L, &t->paths)) {
    loom__msg_free(start);
    if (t != NULL) thread_destroy(&t->obj);
    luaL_error(L, "not enough memory for a thread");
    return;
  }
  t->start = start;
  t->daemon = daemon;
  t->cancel_hook = hook;
  loom__push_owned(L, &t->obj);
}

/* loom.Thread{target=, args=, name=, daemon=, cancel_hook=} */
static int l_Thread(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "target") != LUA_TFUNCTION)
    return luaL_argerror(L, 1, "field 'target' must be a function");
  int nargs = 0;
  if (lua_getfield(L, 1, "args") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, 3), 1, "field 'args' must be a table");
    nargs = (int)lua_rawlen(L, 3);
    if (lua_getfield(L, 3, "n") != LUA_TNIL) {
      lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
      luaL_argcheck(L, n >= 0 && n <= 100000, 1,
                    "field 'args.n' must be an integer from 0 to 100000");
      nargs = (int)n;
    }
    lua_pop(L, 1);
    luaL_checkstack(L, nargs, "too many thread arguments");
    for (int i = 1; i <= nargs; i++) lua_rawgeti(L, 3, i);
  }
  lua_remove(L, 3); /* args table; target at 2, arguments from 3 */
  if (lua_getfield(L, 1, "name") != LUA_TNIL && !lua_isstring(L, -1))
    return luaL_argerror(L, 1, "field 'name' must be a string");
  const char *name = lua_tostring(L, -1);
  int daemon = lua_getfield(L, 1, "daemon") == LUA_TNIL ? creator_daemon()
                                                        : lua_toboolean(L, -1);
  lua_getfield(L, 1, "cancel_hook");
  int hook = lua_toboolean(L, -1);
  lua_pop(L, 2); /* the name stays on the stack while it is used */
  new_thread(L, 2, nargs, name, daemon, hook);
  return 1;
}

#define LAUNCH_EXITING (-1)

/* Puts t (marked T_RUNNING) on the running list and on an OS thread;
** returns 0, or an errno (or LAUNCH_EXITING) with t back in T_NEW. */
static int launch(loom_thread *t) {
  pthread_mutex_lock(&registry_mu);
  if (exiting) { /* the exit join is over or under way: it would miss t */
    pthread_mutex_unlock(&registry_mu);
    pthread_mutex_lock(&t->mu);
    t->state = T_NEW;
    t->ident = 0;
    pthread_mutex_unlock(&t->mu);
    return LAUNCH_EXITING;
  }
  t->prev = NULL;
  t->next = running;
  if (running) running->prev = t;
  running = t;
  running_count++;
  if (!t->daemon) running_nondaemon++;
  pthread_mutex_unlock(&registry_mu);

  loom__retain(&t->obj); /* the running thread's own reference */
  size_t stack = loom__config_stack_size();
  int rc = hand_to_idle_carrier(t, stack) ? 0 : new_carrier(t, stack);
  if (rc != 0) {
    pthread_mutex_lock(&registry_mu);
    unlink_running(t);
    if (!t->daemon) running_nondaemon--;
    pthread_cond_broadcast(&registry_cv);
    pthread_mutex_unlock(&registry_mu);
    pthread_mutex_lock(&t->mu);
    t->state = T_NEW;
    pthread_mutex_unlock(&t->mu);
    loom__release(&t->obj);
  }
  return rc;
}

loom_thread *loom__thread_start_native(const char *name, int hook,
                                       const loom_paths *paths,
                                       lua_CFunction body,
                                       void (*failed)(void *ud), void *ud,
                                       int *err) {
  loom_thread *t = thread_alloc(name);
  if (t == NULL) {
    *err = ENOMEM;
    return NULL;
  }
  if (!loom__paths_copy(&t->paths, paths)) {
    thread_destroy(&t->obj);
    *err = ENOMEM;
    return NULL;
  }
  t->native = body;
  t->native_failed = failed;
  t->native_ud = ud;
  t->cancel_hook = hook;
  t->state = T_RUNNING;
  t->ident = atomic_fetch_add(&ident_counter, 1);
  *err = launch(t);
  if (*err == LAUNCH_EXITING) *err = ECANCELED;
  if (*err != 0) {
    thread_destroy(&t->obj);
    return NULL;
  }
  return t;
}

void loom__thread_set_daemon(loom_thread *t) {
  pthread_mutex_lock(&registry_mu);
  pthread_mutex_lock(&t->mu);
  if (t->state == T_RUNNING && !t->daemon) {
    t->daemon = 1;
    running_nondaemon--;
    pthread_cond_broadcast(&registry_cv);
  }
  pthread_mutex_unlock(&t->mu);
  pthread_mutex_unlock(&registry_mu);
}

loom_object *loom__test_thread(lua_State *L, int idx) {
  return loom__test_object(L, idx, &thread_class);
}

int loom__thread_watch(loom_object *o, loom_watch *w, int *failed) {
  loom_thread *t = (loom_thread *)o;
  pthread_mutex_lock(&t->mu);
  int done = t->state == T_DONE;
  if (done) *failed = t->failed;
  else loom__watch_link(&t->watchers, w);
  pthread_mutex_unlock(&t->mu);
  return done;
}

void loom__thread_unwatch(loom_object *o, loom_watch *w) {
  loom_thread *t = (loom_thread *)o;
  pthread_mutex_lock(&t->mu);
  loom__watch_unlink(&t->watchers, w);
  pthread_mutex_unlock(&t->mu);
}

static int thread_start(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  pthread_mutex_lock(&t->mu);
  int state = t->state;
  if (state == T_NEW && !t->is_main) {
    t->state = T_RUNNING;
    t->ident = atomic_fetch_add(&ident_counter, 1);
  }
  pthread_mutex_unlock(&t->mu);
  if (t->is_main || state != T_NEW)
    return luaL_error(L, "thread '%s' was already started", push_name(L, t));
  int rc = launch(t);
  if (rc == LAUNCH_EXITING)
    return luaL_error(L, "cannot start thread '%s': the program is exiting",
                      push_name(L, t));
  if (rc != 0)
    return luaL_error(L, "cannot start thread '%s': %s", push_name(L, t),
                      strerror(rc));
  lua_settop(L, 1);
  return 1;
}

/* loom.thread(fn, ...): a Thread of fn(...), started at once. */
static int l_thread(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  new_thread(L, 1, lua_gettop(L) - 1, NULL, creator_daemon(), 0);
  lua_replace(L, 1);
  lua_settop(L, 1);
  return thread_start(L);
}

/* Waits until t is done or the deadline passes; 1 if done. */
static int wait_done(lua_State *L, loom_thread *t, const struct timespec *dl,
                     double spin) {
  int rc = 0;
  if (loom__spin_until(&t->done, spin)) return 1;
  pthread_mutex_lock(&t->mu);
  while (t->state != T_DONE && rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = loom__wait(&t->obj, &t->cv, &t->mu, dl);
  int done = t->state == T_DONE;
  pthread_mutex_unlock(&t->mu);
  if (!done && rc == LOOM_CANCELLED) loom__raise_cancelled(L);
  return done;
}

/* How long join/result may spin: never longer than their timeout. */
static double spin_for(lua_State *L, int has_timeout) {
  double timeout = has_timeout ? (double)lua_tonumber(L, 2) : SPIN_SECONDS;
  return timeout < SPIN_SECONDS ? timeout : SPIN_SECONDS;
}

static void check_joinable(lua_State *L, loom_thread *t, const char *what) {
  if (t == tls_self || (t->is_main && tls_self == NULL))
    luaL_error(L, "cannot %s the current thread (it would deadlock)", what);
  if (t->is_main)
    luaL_error(L, "cannot %s the main thread: it ends with the program", what);
  pthread_mutex_lock(&t->mu);
  int state = t->state;
  pthread_mutex_unlock(&t->mu);
  if (state == T_NEW)
    luaL_error(L, "cannot %s thread '%s' before it is started", what,
               push_name(L, t));
}

static int thread_join(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  check_joinable(L, t, "join");
  lua_pushboolean(L, wait_done(L, t, has ? &ts : NULL, spin_for(L, has)));
  return 1;
}

static int thread_result(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  check_joinable(L, t, "get the result of");
  if (!wait_done(L, t, has ? &ts : NULL, spin_for(L, has)))
    return loom__raise(L, "timeout", "thread '%s' did not finish in %s seconds",
                       push_name(L, t), lua_tostring(L, 2));
  /* done: fields are final and only read from here on */
  pthread_mutex_lock(&t->mu);
  int failed = t->failed;
  t->collected = 1;
  pthread_mutex_unlock(&t->mu);
  lua_settop(L, 1);
  if (!failed) return loom__decode(L, t->result);
  if (t->result == NULL)
    return luaL_error(L, "%s", t->report ? t->report : "thread failed");
  loom__decode(L, t->result);
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *msg = lua_tostring(L, -1);
    const char *name = push_name(L, t);
    lua_pushfstring(L, "%s\n(in thread '%s')%s%s", msg, name,
                    t->traceback && *t->traceback ? " " : "",
                    t->traceback ? t->traceback : "");
  }
  return lua_error(L);
}

static int thread_is_alive(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  pthread_mutex_lock(&t->mu);
  int alive = t->state == T_RUNNING;
  pthread_mutex_unlock(&t->mu);
  lua_pushboolean(L, alive);
  return 1;
}

void loom__thread_cancel(loom_thread *t) {
  atomic_fetch_add_explicit(&t->cancel, 1, memory_order_seq_cst);
  loom__thread_wake(t);
}

void loom__thread_wake(loom_thread *t) {
  pthread_mutex_lock(&t->reg_mu);
  loom_object *owner = t->wait_owner;
  pthread_cond_t *cv = t->wait_cv;
  pthread_mutex_t *mu = t->wait_mu;
  if (owner) loom__retain(owner);
  pthread_mutex_unlock(&t->reg_mu);
  if (owner) {
    pthread_mutex_lock(mu);
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    loom__release(owner);
  }
}

void loom__thread_clear_cancel(void) {
  loom_thread *t = tls_self;
  if (t == NULL) return;
  atomic_store_explicit(&t->cancel, 0, memory_order_seq_cst);
  t->hook_seen = 0;
}

static int thread_cancel(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  if (t->is_main) return luaL_error(L, "cannot cancel the main thread");
  loom__thread_cancel(t);
  return 0;
}

static int thread_index(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k == NULL) return 0;
  if (strcmp(k, "name") == 0) {
    push_name(L, t);
  } else if (strcmp(k, "ident") == 0) {
    pthread_mutex_lock(&t->mu);
    uint64_t ident = t->ident;
    pthread_mutex_unlock(&t->mu);
    if (ident) lua_pushinteger(L, (lua_Integer)ident);
    else lua_pushnil(L);
  } else if (strcmp(k, "daemon") == 0) {
    pthread_mutex_lock(&t->mu);
    int daemon = t->daemon;
    pthread_mutex_unlock(&t->mu);
    lua_pushboolean(L, daemon);
  } else {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__methods");
    lua_getfield(L, -1, k);
  }
  return 1;
}

static int thread_newindex(lua_State *L) {
  loom_thread *t = check_thread(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "name") == 0) {
    char *n = dup_cstr(luaL_checkstring(L, 3));
    if (n == NULL) return luaL_error(L, "not enough memory");
    pthread_mutex_lock(&t->mu);
    char *old = t->name;
    t->name = n;
    pthread_mutex_unlock(&t->mu);
    free(old);
    return 0;
  }
  if (strcmp(k, "daemon") == 0) {
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    pthread_mutex_lock(&t->mu);
    int ok = t->state == T_NEW && !t->is_main;
    if (ok) t->daemon = lua_toboolean(L, 3);
    pthread_mutex_unlock(&t->mu);
    if (!ok) return luaL_error(L, "cannot set daemon status of an active thread");
    return 0;
  }
  return luaL_error(L, "cannot set field '%s' of a loom.Thread", k);
}

static int thread_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  loom_thread *t = check_thread(L, 1);
  static const char *const names[] = {"initial", "started", "stopped"};
  pthread_mutex_lock(&t->mu);
  int state = t->state, daemon = t->daemon;
  pthread_mutex_unlock(&t->mu);
  const char *name = push_name(L, t);
  lua_pushfstring(L, "loom.Thread(%s, %s%s)", name, names[state],
                  daemon ? " daemon" : "");
  return 1;
}

/* ------------------------------------------------------------------ */
/* module functions                                                     */

static loom_thread *get_main_thread(void) {
  pthread_mutex_lock(&registry_mu);
  if (main_thread == NULL) {
    loom_thread *t = thread_alloc("MainThread");
    if (t != NULL) {
      t->is_main = 1;
      t->state = T_RUNNING;
      t->ident = current_ident();
      main_thread = t;
    }
  }
  loom_thread *t = main_thread;
  pthread_mutex_unlock(&registry_mu);
  return t;
}

static int l_main_thread(lua_State *L) {
  loom_thread *t = get_main_thread();
  if (t == NULL) return luaL_error(L, "not enough memory");
  loom__push_object(L, &t->obj);
  return 1;
}

static int l_current_thread(lua_State *L) {
  if (tls_self == NULL) return l_main_thread(L);
  loom__push_object(L, &tls_self->obj);
  return 1;
}

static int l_active_count(lua_State *L) {
  pthread_mutex_lock(&registry_mu);
  int n = running_count;
  pthread_mutex_unlock(&registry_mu);
  lua_pushinteger(L, n + 1);
  return 1;
}

static int l_enumerate(lua_State *L) {
  pthread_mutex_lock(&registry_mu);
  int n = 0;
  loom_thread **list =
      (loom_thread **)malloc(((size_t)running_count + 1) * sizeof *list);
  if (list != NULL) {
    for (loom_thread *t = running; t != NULL && n < running_count; t = t->next) {
      loom__retain(&t->obj);
      list[n++] = t;
    }
  }
  pthread_mutex_unlock(&registry_mu);
  if (list == NULL) return luaL_error(L, "not enough memory");
  lua_createtable(L, n + 1, 0);
  l_main_thread(L);
  lua_rawseti(L, -2, 1);
  for (int i = 0; i < n; i++) {
    loom__push_object(L, &list[i]->obj);
    lua_rawseti(L, -2, i + 2);
  }
  for (int i = 0; i < n; i++) loom__release(&list[i]->obj);
  free(list);
  return 1;
}

/* No caller yet: kept for C code that must refuse new work once the exit
** join began (docs/design.md, Guarantees). */
/* cppcheck-suppress unusedFunction */
int loom__exiting(void) {
  pthread_mutex_lock(&registry_mu);
  int e = exiting;
  pthread_mutex_unlock(&registry_mu);
  return e;
}

uint64_t loom__thread_ident(void) {
  return current_ident();
}

static int l_get_ident(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)current_ident());
  return 1;
}

static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0, 1, "sleep length must be non-negative");
  /* Python's time.sleep raises for an infinite length too */
  luaL_argcheck(L, s < HUGE_VAL, 1, "sleep length must be finite");
  loom_thread *t = tls_self;
  if (t == NULL) { /* not cancellable: a plain sleep */
    if (s > 1e9) s = 1e9; /* ~31 years: "forever" without overflow */
    struct timespec ts = {(time_t)s, (long)((s - (lua_Number)(time_t)s) * 1e9)};
    if (s == 0) sched_yield();
    else while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    return 0;
  }
  if (atomic_load(&t->cancel)) return loom__raise_cancelled(L);
  if (s == 0) {
    sched_yield();
    return 0;
  }
  struct timespec dl;
  loom__deadline_after(s, &dl);
  int rc = 0;
  pthread_mutex_lock(&t->mu);
  while (rc != ETIMEDOUT && rc != LOOM_CANCELLED)
    rc = loom__wait(&t->obj, &t->cv, &t->mu, &dl);
  pthread_mutex_unlock(&t->mu);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  return 0;
}

static int l_cancelled(lua_State *L) {
  lua_pushboolean(L, loom__cancel_requested());
  return 1;
}

static int l_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

/* ------------------------------------------------------------------ */
/* exit: join non-daemon threads before the main state goes away        */

#define SENTINEL_META "loom.exit sentinel"

static int sentinel_gc(lua_State *L) {
  if (luaL_testudata(L, 1, SENTINEL_META) == NULL) return 0;
  loom__pools_exit(); /* pools finish their queued work, as Python's do */
  pthread_mutex_lock(&registry_mu);
  exiting = 1;
  while (running_nondaemon > 0) pthread_cond_wait(&registry_cv, &registry_mu);
  pthread_mutex_unlock(&registry_mu);
  drain_idle_carriers();
  return 0;
}

/* Keeps this shared object loaded for good: a daemon thread may still be
** running its code when the main state closes and Lua unloads C modules. */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)luaopen_loom_core, &info) && info.dli_fname)
    /* the handle is dropped on purpose: it is never to be closed */
    /* cppcheck-suppress leakReturnValNotUsed */
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static pthread_once_t pin_once = PTHREAD_ONCE_INIT;

static const luaL_Reg thread_methods[] = {
  {"start", thread_start},
  {"join", thread_join},
  {"result", thread_result},
  {"is_alive", thread_is_alive},
  {"cancel", thread_cancel},
  {NULL, NULL}
};

static const luaL_Reg thread_meta[] = {
  {"__index", thread_index},
  {"__newindex", thread_newindex},
  {"__tostring", thread_tostring},
  {NULL, NULL}
};

static const loom_class thread_class = {
  "loom.Thread", thread_destroy, thread_methods, thread_meta, NULL
};

static const luaL_Reg thread_funcs[] = {
  {"Thread", l_Thread},
  {"thread", l_thread},
  {"current_thread", l_current_thread},
  {"main_thread", l_main_thread},
  {"active_count", l_active_count},
  {"enumerate", l_enumerate},
  {"get_ident", l_get_ident},
  {"sleep", l_sleep},
  {"cancelled", l_cancelled},
  {"cpu_count", l_cpu_count},
  {NULL, NULL}
};

void loom__open_thread(lua_State *L) {
  pthread_once(&pin_once, pin_library);
  loom__register_class(L, &thread_class);
  luaL_setfuncs(L, thread_funcs, 0);
  /* a state loom did not create joins loom's threads when it closes */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) == LUA_TNIL) {
    static const char sentinel_key = 'x';
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sentinel_key) == LUA_TNIL) {
      lua_newuserdatauv(L, 1, 0);
      luaL_newmetatable(L, SENTINEL_META);
      lua_pushcfunction(L, sentinel_gc);
      lua_setfield(L, -2, "__gc");
      lua_pushliteral(L, SENTINEL_META);
      lua_setfield(L, -2, "__metatable");
      lua_setmetatable(L, -2);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &sentinel_key);
    }
    lua_pop(L, 1);
    if (tls_self == NULL) get_main_thread();
  }
  lua_pop(L, 1);
}
