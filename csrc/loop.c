/*
** loop.c: loom.async's event loop. One libuv loop per OS thread, made by
** async.run and closed when it returns; tasks are coroutines resumed from
** C; loop futures are what tasks await.
**
** Ownership: tasks and loop futures are full userdata of the state that
** runs the loop (never loom objects: they do not cross threads). While a
** task is not done it is anchored in the loop's table of live tasks, so a
** task that nobody references still runs to its end. A task with a
** deadline is in the loop's timer heap until it is woken or ends. The loop struct belongs to
** async.run's C frame and is freed when run returns; tasks that outlive it
** remember its id and refuse to be awaited or cancelled afterwards.
**
** Threads: everything here runs on the loop's thread, except the fire
** function of a cross-thread watch (a loom.Future or loom.Thread being
** awaited), which another thread calls with that object's mutex held: it
** takes only inbox_mu (a leaf) and calls uv_async_send, the one libuv call
** that is thread-safe. The loop thread drains the inbox. A task that stops
** waiting (cancelled) unlinks its watch under the watched object's mutex,
** then purges its inbox entries, so no entry outlives its task.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"

/* While tasks are ready, timers and wake-ups are looked at this often. */
#define POLL_EVERY 200e-6

static LOOM_TLS aloop *tls_loop;
static atomic_uint_fast64_t loop_ids = 1;
static atomic_uint_fast64_t task_ids = 1;

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static afut *to_fut(lua_State *L, int idx) {
  afut *f = (afut *)luaL_testudata(L, idx, TASK_META);
  if (f == NULL) f = (afut *)luaL_testudata(L, idx, FUTURE_META);
  return f;
}

static afut *check_fut(lua_State *L, int idx) {
  afut *f = to_fut(L, idx);
  if (f == NULL) luaL_typeerror(L, idx, "loom.async.Future or Task");
  return f;
}

static afut *check_task(lua_State *L, int idx) {
  return (afut *)luaL_checkudata(L, idx, TASK_META);
}

/* The loop f belongs to, when it is the one running on this thread. */
static aloop *loop_of(afut *f) {
  aloop *l = tls_loop;
  return (l != NULL && l->id == f->loop_id) ? l : NULL;
}

static aloop *running_loop(lua_State *L, const char *what) {
  aloop *l = tls_loop;
  if (l == NULL)
    luaL_error(L, "%s needs a running loop (call it inside async.run)", what);
  return l;
}

/* The task running now, which must be the caller: suspending calls are
** only allowed from a task's own code. */
static afut *current_task(lua_State *L, const char *what) {
  aloop *l = tls_loop;
  if (l == NULL || l->current == NULL || l->current->co != L)
    luaL_error(L, "%s must be called from a task (inside async.run)", what);
  return l->current;
}

static void push_uv(lua_State *L, int idx, int n) {
  lua_getiuservalue(L, idx, n);
}

static void set_uv(lua_State *L, int idx, int n) { /* pops the value */
  lua_setiuservalue(L, idx, n);
}

/* Marks a failed task's error as seen (no report at collection). */
static void retrieved(afut *f) {
  f->seen = 1;
}

static void anchor(lua_State *L, int ref, int idx, int on) {
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushvalue(L, idx);
  if (on) lua_pushboolean(L, 1); else lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* ------------------------------------------------------------------ */
/* the ready ring                                                       */

static int schedule(aloop *l, afut *t) {
  if (t->scheduled) return 1;
  if (l->rcount == l->rcap) {
    size_t ncap = l->rcap ? l->rcap * 2 : 64;
    afut **r = (afut **)malloc(ncap * sizeof *r);
    if (r == NULL) return 0;
    for (size_t i = 0; i < l->rcount; i++)
      r[i] = l->ready[(l->rhead + i) % l->rcap];
    free(l->ready);
    l->ready = r;
    l->rhead = 0;
    l->rcap = ncap;
  }
  l->ready[(l->rhead + l->rcount) % l->rcap] = t;
  l->rcount++;
  t->scheduled = 1;
  t->wait = W_READY;
  return 1;
}

static afut *pop_ready(aloop *l) {
  if (l->rcount == 0) return NULL;
  afut *t = l->ready[l->rhead];
  l->rhead = (l->rhead + 1) % l->rcap;
  l->rcount--;
  t->scheduled = 0;
  return t;
}

/* ------------------------------------------------------------------ */
/* waiters                                                              */

static int add_waiter(afut *f, afut *t) {
  if (f->waiter == NULL) {
    f->waiter = t;
    return 1;
  }
  if (f->nwaiters == f->capwaiters) {
    int ncap = f->capwaiters ? f->capwaiters * 2 : 4;
    afut **w = (afut **)realloc(f->waiters, (size_t)ncap * sizeof *w);
    if (w == NULL) return 0;
    f->waiters = w;
    f->capwaiters = ncap;
  }
  f->waiters[f->nwaiters++] = t;
  return 1;
}

static void remove_waiter(afut *f, afut *t) {
  if (f->waiter == t) {
    f->waiter = NULL;
    return;
  }
  for (int i = 0; i < f->nwaiters; i++)
    if (f->waiters[i] == t) {
      f->waiters[i] = f->waiters[--f->nwaiters];
      return;
    }
}

/* Completes the future at idx (state set, result stored by the caller):
** wakes its waiters and queues its callbacks. */
static void complete(lua_State *L, int idx, afut *f, int state) {
  f->state = state;
  aloop *l = loop_of(f);
  if (l != NULL && f->waiter != NULL) schedule(l, f->waiter);
  for (int i = 0; i < f->nwaiters; i++)
    if (l != NULL) schedule(l, f->waiters[i]);
  f->waiter = NULL;
  f->nwaiters = 0;
  if (f->has_callbacks && l != NULL) {
    anchor(L, l->due, idx, 1);
    l->any_due = 1;
  }
}

/* ------------------------------------------------------------------ */
/* results                                                              */

/* Stores the n values at the top of L as f's results (popped): none or
** one as they are, more in a table. */
static void store_results(lua_State *L, int idx, int n, afut *f) {
  idx = lua_absindex(L, idx);
  f->nres = n;
  if (n <= 1) {
    if (n == 0) lua_pushnil(L);
    set_uv(L, idx, UV_RESULT);
    return;
  }
  f->nres = -1;
  lua_createtable(L, n, 1);
  lua_insert(L, -n - 1);
  for (int i = n; i >= 1; i--) lua_rawseti(L, -i - 1, i);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  set_uv(L, idx, UV_RESULT);
}

/* Pushes the results of a done future, or raises its error. */
static int push_results(lua_State *L, int idx, afut *f) {
  if (f->state == S_CANCELLED)
    return loom__raise(L, "cancelled", "%s",
                       f->cancel_msg ? f->cancel_msg : "cancelled");
  push_uv(L, idx, UV_RESULT);
  if (f->state == S_ERROR) return lua_error(L);
  if (f->nres >= 0) {
    if (f->nres == 0) lua_pop(L, 1);
    return f->nres;
  }
  int n = (int)lua_rawlen(L, -1);
  lua_getfield(L, -1, "n");
  if (lua_isinteger(L, -1)) n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  int t = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  return n;
}

/* ------------------------------------------------------------------ */
/* cross-thread waits: loom.Future and loom.Thread                      */

static void cross_fire(loom_watch *w, int failed) {
  (void)failed;
  afut *t = (afut *)((char *)w - offsetof(afut, watch));
  aloop *l = t->loop;
  pthread_mutex_lock(&l->inbox_mu);
  if (l->ninbox == l->capinbox) {
    int ncap = l->capinbox ? l->capinbox * 2 : 16;
    afut **in = (afut **)realloc(l->inbox, (size_t)ncap * sizeof *in);
    if (in != NULL) {
      l->inbox = in;
      l->capinbox = ncap;
    }
  }
  /* out of memory: the task is found by the sweep in drain_inbox */
  if (l->ninbox < l->capinbox) l->inbox[l->ninbox++] = t;
  pthread_mutex_unlock(&l->inbox_mu);
  uv_async_send(&l->wake);
}

static void drain_inbox(uv_async_t *h) {
  aloop *l = (aloop *)h->data;
  pthread_mutex_lock(&l->inbox_mu);
  for (int i = 0; i < l->ninbox; i++) {
    afut *t = l->inbox[i];
    if (t->wait == W_CROSS) schedule(l, t);
  }
  l->ninbox = 0;
  pthread_mutex_unlock(&l->inbox_mu);
  if (l->rcount > 0) uv_stop(&l->uv); /* do not block in this turn's poll */
}

/* Stops a cross-thread wait (the task is resumed, for whatever reason). */
/* After the watch is unlinked (nothing fires it any more): a fire that
** came before left the task in the inbox; take it out. */
static void purge_inbox(aloop *l, afut *t) {
  pthread_mutex_lock(&l->inbox_mu);
  for (int i = 0; i < l->ninbox; i++)
    if (l->inbox[i] == t) l->inbox[i--] = l->inbox[--l->ninbox];
  pthread_mutex_unlock(&l->inbox_mu);
  if (--l->ncross == 0) uv_unref((uv_handle_t *)&l->wake);
}

static void begin_cross(aloop *l, afut *t) {
  if (l->ncross++ == 0) uv_ref((uv_handle_t *)&l->wake);
  t->wait = W_CROSS;
}

/* Stops a cross-thread wait (the task is resumed, for whatever reason). */
static void end_cross(aloop *l, afut *t) {
  if (t->qwatch != NULL) {
    loom__queue_unwatch(t->qwatch);
    t->qwatch = NULL;
    purge_inbox(l, t);
  }
  if (t->cross == NULL) return;
  if (t->cross_is_thread) loom__thread_unwatch(t->cross, &t->watch);
  else loom__future_unwatch(t->cross, &t->watch);
  purge_inbox(l, t);
  loom__release(t->cross);
  t->cross = NULL;
}

/* ------------------------------------------------------------------ */
/* cancellation and the suspending calls                                */

static int deliver_cancel(lua_State *L, afut *t) {
  t->cancel_req = 0;
  return loom__raise(L, "cancelled", "%s",
                     t->cancel_msg ? t->cancel_msg : "cancelled");
}

/* The loop's timers: one uv_timer_t per loop, armed for the earliest
** deadline of a binary min-heap of tasks (an array: no allocation per
** timer, and a cache-friendly sift). Deadlines are uv_hrtime()
** nanoseconds, so a wait never ends before its time whatever the
** millisecond rounding of libuv's clock. */

static int due_before(const afut *a, const afut *b) {
  return a->due < b->due || (a->due == b->due && a->due_seq < b->due_seq);
}

static void heap_set(aloop *l, int i, afut *t) {
  l->heap[i] = t;
  t->heap_idx = i;
}

static void sift_up(aloop *l, int i) {
  afut *t = l->heap[i];
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!due_before(t, l->heap[p])) break;
    heap_set(l, i, l->heap[p]);
    i = p;
  }
  heap_set(l, i, t);
}

static void sift_down(aloop *l, int i) {
  afut *t = l->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= l->nheap) break;
    if (c + 1 < l->nheap && due_before(l->heap[c + 1], l->heap[c])) c++;
    if (!due_before(l->heap[c], t)) break;
    heap_set(l, i, l->heap[c]);
    i = c;
  }
  heap_set(l, i, t);
}

static void heap_remove(aloop *l, afut *t) {
  int i = t->heap_idx;
  if (i < 0) return;
  t->heap_idx = -1;
  afut *last = l->heap[--l->nheap];
  if (i == l->nheap) return;
  heap_set(l, i, last);
  if (i > 0 && due_before(last, l->heap[(i - 1) / 2])) sift_up(l, i);
  else sift_down(l, i);
}

static void timer_fired(uv_timer_t *h);

/* Arms the loop's timer for the earliest deadline (or stops it). */
static void rearm(aloop *l) {
  if (l->nheap == 0) {
    if (l->armed_due != 0) uv_timer_stop(&l->timer);
    l->armed_due = 0;
    return;
  }
  uint64_t due = l->heap[0]->due;
  if (due == l->armed_due) return;
  l->armed_due = due;
  uv_update_time(&l->uv);
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_timer_start(&l->timer, timer_fired, ms, 0);
}

/* A deadline passed: a sleeper is woken; a wait with a timeout is woken
** with timed_out set. */
static void expire(aloop *l, afut *t) {
  if (t->wait == W_SLEEP) {
    schedule(l, t);
  } else if ((t->wait == W_CROSS && t->qwatch != NULL) || t->wait == W_IO) {
    t->timed_out = 1; /* the timeout of async.get or of a socket's wait */
    schedule(l, t);
  }
}

static void timer_fired(uv_timer_t *h) {
  aloop *l = (aloop *)h->data;
  uint64_t now = uv_hrtime();
  l->armed_due = 0;
  int woke = 0;
  while (l->nheap > 0 && l->heap[0]->due <= now) {
    afut *t = l->heap[0];
    heap_remove(l, t);
    expire(l, t);
    woke = 1;
  }
  rearm(l);
  /* a task is ready: this turn of uv_run must not block in its poll */
  if (woke) uv_stop(&l->uv);
}

static void stop_timer(afut *t) {
  aloop *l;
  if (t->heap_idx < 0 || (l = loop_of(t)) == NULL) return;
  int was_first = t->heap_idx == 0;
  heap_remove(l, t);
  if (was_first) rearm(l);
}

/* Sets t's deadline s seconds from now. */
static int start_timer(aloop *l, afut *t, double s) {
  stop_timer(t);
  if (l->nheap == l->capheap) {
    int ncap = l->capheap ? l->capheap * 2 : 64;
    afut **hp = (afut **)realloc(l->heap, (size_t)ncap * sizeof *hp);
    if (hp == NULL) return 0;
    l->heap = hp;
    l->capheap = ncap;
  }
  double ns = s * 1e9;
  if (ns > 1e18) ns = 1e18;
  t->due = uv_hrtime() + (uint64_t)ns + 1;
  t->due_seq = l->due_seq++;
  l->heap[l->nheap] = t;
  t->heap_idx = l->nheap++;
  sift_up(l, t->heap_idx);
  if (t->heap_idx == 0) rearm(l);
  return 1;
}

/* After a sleep: its result is the value argument (stack index 2). */
static int k_sleep(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  afut *t = tls_loop->current;
  stop_timer(t);
  t->wait = W_NONE;
  if (t->cancel_req) return deliver_cancel(L, t);
  lua_settop(L, 2);
  return 1;
}

/* async.sleep(seconds[, value]) -> value */
static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0, 1, "sleep length must be non-negative");
  afut *t = current_task(L, "async.sleep");
  if (t->cancel_req) return deliver_cancel(L, t);
  aloop *l = tls_loop;
  lua_settop(L, 2);
  if (s > 0) {
    if (!start_timer(l, t, s)) return luaL_error(L, "not enough memory");
    t->wait = W_SLEEP;
  } else if (!schedule(l, t)) {
    return luaL_error(L, "not enough memory");
  }
  return lua_yieldk(L, 0, 0, k_sleep);
}

/* Calls method `name` of the value at idx (a loom.Future or Thread that
** is done), returning what it returns. */
static int call_method(lua_State *L, int idx, const char *name) {
  lua_settop(L, idx);
  lua_getfield(L, idx, name);
  lua_insert(L, idx);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - idx + 1;
}

static int k_await_fut(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  afut *t = tls_loop->current;
  afut *f = to_fut(L, 1);
  t->wait = W_NONE;
  t->awaiting = NULL;
  if (f->state == S_PENDING) remove_waiter(f, t);
  if (t->cancel_req) return deliver_cancel(L, t);
  retrieved(f);
  return push_results(L, 1, f);
}

static int k_await_cross(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  afut *t = tls_loop->current;
  int is_thread = t->cross_is_thread;
  end_cross(tls_loop, t);
  t->wait = W_NONE;
  if (t->cancel_req) {
    /* the work on the other side: a pool task that has not started never
    ** will; running work and threads go on to their end */
    if (!is_thread) call_method(L, 1, "cancel");
    return deliver_cancel(L, t);
  }
  return call_method(L, 1, "result");
}

/* async.await(x): x is a Task or Future of this loop, a loom.Future or a
** loom.Thread; returns its results or raises its error. */
static int l_await(lua_State *L) {
  afut *t = current_task(L, "async.await");
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  if (t->cancel_req) return deliver_cancel(L, t);
  afut *f = to_fut(L, 1);
  aloop *l = tls_loop;
  if (f != NULL) {
    if (f == t) return luaL_error(L, "a task cannot await itself");
    if (f->state != S_PENDING) {
      retrieved(f);
      return push_results(L, 1, f);
    }
    if (loop_of(f) != l)
      return luaL_error(L, "cannot await a future of another loop");
    if (!add_waiter(f, t)) return luaL_error(L, "not enough memory");
    t->wait = W_FUT;
    t->awaiting = f;
    return lua_yieldk(L, 0, 0, k_await_fut);
  }
  loom_object *o = loom__test_thread(L, 1);
  int is_thread = o != NULL;
  if (o == NULL) o = (loom_object *)loom__test_future(L, 1);
  if (o == NULL)
    return luaL_typeerror(L, 1, "awaitable (a task or future, loom.Future or loom.Thread)");
  int failed;
  t->watch.fire = cross_fire;
  t->cross_is_thread = is_thread;
  int done = is_thread ? loom__thread_watch(o, &t->watch, &failed)
                       : loom__future_watch(o, &t->watch, &failed);
  if (done) return call_method(L, 1, "result");
  loom__retain(o);
  t->cross = o;
  begin_cross(l, t);
  return lua_yieldk(L, 0, 0, k_await_cross);
}

/* Calls q:get_nowait() (q at 1): 1 with the item pushed, 2 with nil,
** "closed" pushed, 0 (nothing pushed) when empty. */
static int try_get(lua_State *L) {
  lua_getfield(L, 1, "get_nowait");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 2);
  if (!lua_isnil(L, -2)) {
    lua_pop(L, 1);
    return 1;
  }
  const char *why = lua_tostring(L, -1);
  if (why != NULL && strcmp(why, "closed") == 0) return 2;
  lua_pop(L, 2);
  return 0;
}

static int get_wait(lua_State *L, afut *t);

static int k_get(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  afut *t = tls_loop->current;
  end_cross(tls_loop, t);
  stop_timer(t);
  t->wait = W_NONE;
  if (t->cancel_req) return deliver_cancel(L, t);
  int timed_out = t->timed_out;
  t->timed_out = 0;
  int got = try_get(L);
  if (got) return got;
  if (timed_out) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return get_wait(L, t);
}

/* Waits (yields) until the queue at 1 may have an item or be closed. */
static int get_wait(lua_State *L, afut *t) {
  aloop *l = tls_loop;
  loom_object *q = loom__test_queue(L, 1); /* its box at 1 keeps it alive */
  for (;;) {
    int ready;
    t->watch.fire = cross_fire;
    void *h = loom__queue_watch(q, &t->watch, &ready);
    if (h == NULL && !ready) {
      stop_timer(t);
      return luaL_error(L, "not enough memory");
    }
    if (h != NULL) {
      t->qwatch = h;
      begin_cross(l, t);
      return lua_yieldk(L, 0, 0, k_get);
    }
    int got = try_get(L); /* it became ready meanwhile */
    if (got) return got;
  }
}

/* async.get(q[, timeout]) -> item | nil, "timeout" | nil, "closed": a
** loom.Queue's get that suspends the task, not the loop's thread. */
static int l_get(lua_State *L) {
  afut *t = current_task(L, "async.get");
  loom_object *q = loom__test_queue(L, 1);
  if (q == NULL) return luaL_typeerror(L, 1, "loom.Queue");
  lua_Number timeout = luaL_optnumber(L, 2, -1);
  luaL_argcheck(L, lua_isnoneornil(L, 2) || timeout >= 0, 2,
                "timeout must be a non-negative number");
  lua_settop(L, 1);
  if (t->cancel_req) return deliver_cancel(L, t);
  int got = try_get(L);
  if (got) return got;
  if (timeout == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  t->timed_out = 0;
  if (timeout > 0 && !start_timer(tls_loop, t, timeout))
    return luaL_error(L, "not enough memory");
  return get_wait(L, t);
}

/* Requests the cancellation of f (asyncio's rules): a future is cancelled
** at once; a task gets the cancellation error at its suspension point, or
** passes it on to what it awaits. Returns whether anything was done. */
static int cancel_fut(lua_State *L, int idx, afut *f, const char *msg) {
  if (f->state != S_PENDING) return 0;
  if (msg != NULL || f->cancel_msg == NULL) {
    char *m = NULL;
    if (msg != NULL && (m = (char *)malloc(strlen(msg) + 1)) != NULL)
      memcpy(m, msg, strlen(msg) + 1);
    free(f->cancel_msg);
    f->cancel_msg = m;
  }
  if (!f->is_task) {
    lua_pushnil(L);
    set_uv(L, idx, UV_RESULT);
    complete(L, idx, f, S_CANCELLED);
    return 1;
  }
  f->ncancels++;
  aloop *l = loop_of(f);
  if (f->wait == W_FUT && f->awaiting != NULL) {
    /* pass it on to what it awaits (await's argument 1 on its stack): the
    ** end of that one wakes this task with its outcome */
    luaL_checkstack(L, 2, NULL);
    lua_pushvalue(f->co, 1);
    lua_xmove(f->co, L, 1);
    int passed = cancel_fut(L, lua_gettop(L), f->awaiting, msg);
    lua_pop(L, 1);
    if (passed) return 1;
  }
  f->cancel_req = 1;
  /* a running task (cancelling itself) gets it at its next suspension */
  if (l != NULL && f->wait != W_READY && f->started && l->current != f)
    schedule(l, f);
  return 1;
}

/* ------------------------------------------------------------------ */
/* futures and tasks as userdata                                        */

static const char *push_name(lua_State *L, int idx, afut *t) {
  if (push_uv(L, idx, UV_NAME), lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "Task-%I", (lua_Integer)t->id);
  }
  return lua_tostring(L, -1);
}

static int fut_gc(lua_State *L) {
  afut *f = to_fut(L, 1);
  if (f == NULL) return 0;
  if (f->is_task && f->state == S_ERROR && !f->seen) {
    /* an error nobody looked at: say so, as asyncio does */
    push_uv(L, 1, UV_RESULT);
    const char *name = push_name(L, 1, f);
    fprintf(stderr, "loom.async: Task exception was never retrieved (task '%s'):\n%s\n",
            name ? name : "?", luaL_tolstring(L, -2, NULL));
    fflush(stderr);
  }
  free(f->waiters);
  f->waiter = NULL;
  f->waiters = NULL;
  f->nwaiters = f->capwaiters = 0;
  free(f->cancel_msg);
  f->cancel_msg = NULL;
  return 0;
}

/* Pushes a new pending future (or task) of loop l. */
static afut *new_fut(lua_State *L, aloop *l, int is_task) {
  afut *f = (afut *)lua_newuserdatauv(L, sizeof *f, NUV);
  memset(f, 0, sizeof *f);
  f->heap_idx = -1;
  f->loop_id = l->id;
  f->loop = l;
  f->is_task = is_task;
  f->state = S_PENDING;
  luaL_setmetatable(L, is_task ? TASK_META : FUTURE_META);
  return f;
}


static int fut_done(lua_State *L) {
  lua_pushboolean(L, check_fut(L, 1)->state != S_PENDING);
  return 1;
}

static int fut_cancelled(lua_State *L) {
  lua_pushboolean(L, check_fut(L, 1)->state == S_CANCELLED);
  return 1;
}

static int fut_result(lua_State *L) {
  afut *f = check_fut(L, 1);
  if (f->state == S_PENDING)
    return luaL_error(L, "invalid state: the result is not ready");
  retrieved(f);
  lua_settop(L, 1);
  return push_results(L, 1, f);
}

static int fut_exception(lua_State *L) {
  afut *f = check_fut(L, 1);
  if (f->state == S_PENDING)
    return luaL_error(L, "invalid state: the exception is not set yet");
  retrieved(f);
  if (f->state == S_CANCELLED) return push_results(L, 1, f);
  if (f->state == S_OK) return 0;
  push_uv(L, 1, UV_RESULT);
  return 1;
}

static int fut_cancel(lua_State *L) {
  afut *f = check_fut(L, 1);
  const char *msg = luaL_optstring(L, 2, NULL);
  lua_settop(L, 1);
  lua_pushboolean(L, cancel_fut(L, 1, f, msg));
  return 1;
}

static int fut_add_done_callback(lua_State *L) {
  afut *f = check_fut(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (push_uv(L, 1, UV_CALLBACKS), lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    set_uv(L, 1, UV_CALLBACKS);
  }
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  f->has_callbacks = 1;
  retrieved(f);
  aloop *l = loop_of(f);
  if (f->state != S_PENDING && l != NULL) {
    anchor(L, l->due, 1, 1);
    l->any_due = 1;
  }
  return 0;
}

static int fut_set(lua_State *L, int ok) {
  afut *f = (afut *)luaL_checkudata(L, 1, FUTURE_META);
  if (f->state != S_PENDING)
    return luaL_error(L, "invalid state: the future is already done");
  if (ok) {
    store_results(L, 1, lua_gettop(L) - 1, f);
  } else {
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    set_uv(L, 1, UV_RESULT);
  }
  complete(L, 1, f, ok ? S_OK : S_ERROR);
  return 0;
}

static int fut_set_result(lua_State *L) {
  return fut_set(L, 1);
}

static int fut_set_exception(lua_State *L) {
  return fut_set(L, 0);
}

/* fut:await() / task:await(): async.await(fut) */
static int fut_await(lua_State *L) {
  check_fut(L, 1);
  return l_await(L);
}

static const char *const state_names[] = {"pending", "finished", "failed",
                                          "cancelled"};

static int fut_tostring(lua_State *L) {
  afut *f = check_fut(L, 1);
  if (f->is_task) {
    lua_pushfstring(L, "loom.async.Task(%s, %s)", push_name(L, 1, f),
                    state_names[f->state]);
  } else {
    lua_pushfstring(L, "loom.async.Future(%s)", state_names[f->state]);
  }
  return 1;
}

/* task:uncancel() -> the cancel requests left: takes back one request
** (for timeouts and task groups, which cancel a task and then handle it);
** when none is left, one not yet delivered is dropped (asyncio 3.13). */
static int task_uncancel(lua_State *L) {
  afut *t = check_task(L, 1);
  if (t->ncancels > 0 && --t->ncancels == 0) t->cancel_req = 0;
  lua_pushinteger(L, t->ncancels);
  return 1;
}

/* task:cancelling() -> the cancel requests not taken back */
static int task_cancelling(lua_State *L) {
  lua_pushinteger(L, check_task(L, 1)->ncancels);
  return 1;
}

static int task_get_name(lua_State *L) {
  push_name(L, 1, check_task(L, 1));
  return 1;
}

static int task_set_name(lua_State *L) {
  check_task(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  set_uv(L, 1, UV_NAME);
  return 0;
}

/* async.Future(): a loop future, set by code, awaited by tasks. */
static int l_Future(lua_State *L) {
  new_fut(L, running_loop(L, "async.Future"), 0);
  return 1;
}

/* Pushes a new task running the function at idx with the n values after
** it, scheduled on l. */
static afut *spawn(lua_State *L, aloop *l, int idx, int n, const char *name) {
  idx = lua_absindex(L, idx);
  afut *t = new_fut(L, l, 1);
  int tidx = lua_gettop(L);
  t->id = atomic_fetch_add(&task_ids, 1);
  t->watch.fire = cross_fire;
  lua_State *co = lua_newthread(L);
  t->co = co;
  set_uv(L, tidx, UV_CO);
  if (name != NULL) { /* else Task-<id>, made when asked for */
    lua_pushstring(L, name);
    set_uv(L, tidx, UV_NAME);
  }
  if (l->slow > 0) { /* debug: where the task's function is, for reports */
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">S", &ar);
    lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
    set_uv(L, tidx, UV_DEFINED);
  }
  luaL_checkstack(co, n + 1, "too many arguments");
  for (int i = 0; i <= n; i++) lua_pushvalue(L, idx + i);
  lua_xmove(L, co, n + 1);
  /* live: light userdata -> task, until it is done */
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->live);
  lua_pushvalue(L, tidx);
  lua_rawsetp(L, -2, t);
  lua_pop(L, 1);
  /* the loop is ending (its live tasks were cancelled): a task made now,
  ** e.g. for a connection a server accepted, is cancelled before it runs,
  ** so that run can end */
  if (l->closing) {
    t->cancel_req = 1;
    t->ncancels = 1;
  }
  if (!schedule(l, t)) luaL_error(L, "not enough memory");
  return t;
}

/* async.spawn(fn, ...) -> Task (asyncio.create_task) */
static int l_spawn(lua_State *L) {
  aloop *l = running_loop(L, "async.spawn");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  spawn(L, l, 1, lua_gettop(L) - 1, NULL);
  return 1;
}

/* async.current_task() -> the running task, or nil */
static int l_current_task(lua_State *L) {
  aloop *l = tls_loop;
  if (l == NULL || l->current == NULL) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->live);
  lua_rawgetp(L, -1, l->current);
  return 1;
}

/* ------------------------------------------------------------------ */
/* for loop_net.c                                                       */

aloop *loom__loop_running(void) { return tls_loop; }
aloop *loom__loop_of(afut *f) { return loop_of(f); }

afut *loom__loop_task(lua_State *L, const char *what) {
  return current_task(L, what);
}

/* Called from libuv's callbacks: the turn of uv_run that runs them must
** not then block in its poll. */
int loom__loop_schedule(aloop *l, afut *t) {
  if (!schedule(l, t)) return 0;
  uv_stop(&l->uv);
  return 1;
}

int loom__loop_timer(aloop *l, afut *t, double s) { return start_timer(l, t, s); }
void loom__loop_timer_stop(afut *t) { stop_timer(t); }

int loom__loop_deliver_cancel(lua_State *L, afut *t) {
  return deliver_cancel(L, t);
}

afut *loom__loop_spawn(lua_State *L, aloop *l, int idx, int n, const char *name) {
  return spawn(L, l, idx, n, name);
}

/* ------------------------------------------------------------------ */
/* the scheduler                                                        */

/* Runs the callbacks of the futures that completed, in the loop's own
** state, each in protected mode (errors are reported, not raised). */
static void run_due(aloop *l) {
  if (!l->any_due) return;
  l->any_due = 0;
  lua_State *L = l->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->due);
  int due = lua_gettop(L);
  while (lua_pushnil(L), lua_next(L, due)) {
    lua_pop(L, 1);             /* the future stays as the key */
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, due);        /* off the due table */
    int fidx = lua_gettop(L);
    afut *f = to_fut(L, fidx);
    push_uv(L, fidx, UV_CALLBACKS);
    lua_pushnil(L);
    set_uv(L, fidx, UV_CALLBACKS);
    if (f != NULL) f->has_callbacks = 0;
    int cbs = lua_gettop(L);
    lua_Integer n = lua_istable(L, cbs) ? (lua_Integer)lua_rawlen(L, cbs) : 0;
    for (lua_Integer i = 1; i <= n; i++) {
      lua_pushcfunction(L, loom__traceback_handler);
      lua_rawgeti(L, cbs, i);
      lua_pushvalue(L, fidx);
      if (lua_pcall(L, 1, 0, cbs + 1) != LUA_OK) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        fprintf(stderr, "loom.async: exception in a done callback:\n%s\n%s\n",
                luaL_tolstring(L, -2, NULL),
                lua_tostring(L, -2) ? lua_tostring(L, -2) : "");
        fflush(stderr);
      }
      lua_settop(L, cbs);
    }
    lua_settop(L, due);
  }
  lua_settop(L, top);
}

static void report_slow(aloop *l, afut *t, int tidx, double took) {
  lua_State *L = l->L;
  lua_Debug ar;
  char where[256];
  if (t->state == S_PENDING && lua_getstack(t->co, 1, &ar) &&
      lua_getinfo(t->co, "Sl", &ar)) {
    snprintf(where, sizeof where, "ended at %s:%d", ar.short_src, ar.currentline);
  } else {
    push_uv(L, tidx, UV_DEFINED);
    snprintf(where, sizeof where, "ran to the end of the function at %s",
             lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
  }
  const char *name = push_name(L, tidx, t);
  fprintf(stderr, "loom.async: task '%s' blocked the loop for %.3f seconds "
          "(a step that %s)\n", name, took, where);
  fflush(stderr);
  lua_pop(L, 1);
}

/* Closes a coroutine that failed: its pending to-be-closed variables are
** closed now, with its error, and an error raised by one of them takes
** its place. Leaves the final error on top of co. */
static void close_coroutine(lua_State *co, lua_State *from) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  int status = lua_closethread(co, from);
#else
  (void)from;
  int status = lua_resetthread(co);
#endif
  if (status == LUA_OK) lua_pushnil(co); /* cannot happen: it had failed */
}

/* Pushes the userdata of a live task. */
static int push_live(aloop *l, afut *t) {
  lua_rawgeti(l->L, LUA_REGISTRYINDEX, l->live);
  lua_rawgetp(l->L, -1, t);
  lua_remove(l->L, -2);
  return lua_gettop(l->L);
}

/* Resumes task t once. */
static void step(aloop *l, afut *t) {
  lua_State *L = l->L;
  int top = lua_gettop(L);
  int state = S_PENDING, tidx = 0;
  if (!t->started && t->cancel_req) { /* cancelled before it ever ran */
    tidx = push_live(l, t);
    lua_pushnil(L);
    set_uv(L, tidx, UV_RESULT);
    state = S_CANCELLED;
  } else {
    int nargs = t->started ? 0 : lua_gettop(t->co) - 1;
    t->started = 1;
    t->wait = W_NONE;
    l->current = t;
    double t0 = l->slow > 0 ? loom__now() : 0;
    int nres = 0;
    int status = lua_resume(t->co, L, nargs, &nres);
    l->current = NULL;
    if (status == LUA_YIELD) {
      lua_pop(t->co, nres);
      /* a bare coroutine.yield() gives the other tasks a turn */
      if (t->wait == W_NONE) schedule(l, t);
    } else if (status == LUA_OK && t->cancel_req) {
      /* it cancelled itself and returned before a suspension point: it
      ** ends cancelled (asyncio), its results dropped */
      lua_pop(t->co, nres);
      tidx = push_live(l, t);
      lua_pushnil(L);
      set_uv(L, tidx, UV_RESULT);
      state = S_CANCELLED;
    } else if (status == LUA_OK) {
      luaL_checkstack(L, nres + 8, "too many results");
      tidx = push_live(l, t);
      lua_xmove(t->co, L, nres);
      store_results(L, tidx, nres, t);
      state = S_OK;
    } else {
      luaL_checkstack(L, 8, NULL);
      tidx = push_live(l, t);
      close_coroutine(t->co, L); /* runs its pending __close handlers */
      lua_xmove(t->co, L, 1);
      state = loom__is_error(L, -1, "cancelled") ? S_CANCELLED : S_ERROR;
      if (state == S_CANCELLED && t->cancel_msg == NULL) {
        lua_getfield(L, -1, "message");
        const char *m = lua_tostring(L, -1);
        if (m != NULL && (t->cancel_msg = (char *)malloc(strlen(m) + 1)) != NULL)
          memcpy(t->cancel_msg, m, strlen(m) + 1);
        lua_pop(L, 1);
      }
      if (state == S_ERROR && lua_type(L, -1) == LUA_TSTRING) {
        luaL_traceback(L, t->co, lua_tostring(L, -1), 0);
        lua_replace(L, -2);
      }
      set_uv(L, tidx, UV_RESULT);
    }
    if (l->slow > 0 && loom__now() - t0 > l->slow) {
      int at = tidx ? tidx : push_live(l, t);
      report_slow(l, t, at, loom__now() - t0);
    }
  }
  if (state != S_PENDING) {
    stop_timer(t);
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->live);
    lua_pushnil(L);
    lua_rawsetp(L, -2, t);
    lua_pop(L, 1);
    complete(L, tidx, t, state);
  }
  lua_settop(L, top);
}

/* Runs the tasks that are ready now (not those they make ready), then
** the callbacks that became due. */
static void run_ready(aloop *l) {
  size_t n = l->rcount;
  for (size_t i = 0; i < n; i++) {
    afut *t = pop_ready(l);
    if (t == NULL) break;
    step(l, t);
  }
  run_due(l);
}

/* Runs the loop until *stop says so, or nothing can happen any more
** (returns 0 then). */
static int run_until(aloop *l, int (*stop)(aloop *, void *), void *ud) {
  double last_poll = 0;
  while (!stop(l, ud)) {
    if (l->rcount == 0) {
      int alive = uv_run(&l->uv, UV_RUN_ONCE);
      last_poll = loom__now();
      if (l->rcount == 0 && !alive && !stop(l, ud)) return 0;
    } else if (uv_loop_alive(&l->uv)) {
      /* tasks are ready: look at timers and wake-ups without waiting, but
      ** not on every turn (a poll is a system call) */
      double now = loom__now();
      if (now - last_poll >= POLL_EVERY) {
        uv_run(&l->uv, UV_RUN_NOWAIT);
        last_poll = now;
      }
    }
    run_ready(l);
  }
  return 1;
}

static int main_done(aloop *l, void *ud) {
  (void)l;
  return ((afut *)ud)->state != S_PENDING;
}

static int none_live(aloop *l, void *ud) {
  (void)ud;
  lua_rawgeti(l->L, LUA_REGISTRYINDEX, l->live);
  lua_pushnil(l->L);
  int empty = !lua_next(l->L, -2);
  lua_settop(l->L, lua_gettop(l->L) - (empty ? 1 : 3));
  return empty;
}

/* Cancels every task still live (at the end of run, as asyncio.run does). */
static void cancel_live(aloop *l) {
  lua_State *L = l->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->live);
  lua_newtable(L); /* a copy: cancelling may end tasks */
  int n = 0;
  for (lua_pushnil(L); lua_next(L, top + 1); lua_pop(L, 1)) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, top + 2, ++n);
  }
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, top + 2, i);
    cancel_fut(L, lua_gettop(L), to_fut(L, -1), NULL);
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/* LOOM_ASYNC_DEBUG: unset, empty or 0 is off; 1 (or any word) is on at
** 0.1 s; another positive number is the threshold in seconds. */
static double debug_default(void) {
  const char *v = getenv("LOOM_ASYNC_DEBUG");
  if (v == NULL || *v == '\0' || strcmp(v, "0") == 0) return 0;
  char *end;
  double s = strtod(v, &end);
  return (*end == '\0' && s > 0 && s < 1000 && s != 1) ? s : 0.1;
}

static LOOM_TLS double tls_slow = -1; /* set_debug before run */

/* Protected body of async.run: stack [loop, fn, args...] */
static int run_body(lua_State *L) {
  aloop *l = (aloop *)lua_touserdata(L, 1);
  afut *main = spawn(L, l, 2, lua_gettop(L) - 2, "main");
  int midx = lua_gettop(L);
  int stuck = !run_until(l, main_done, main);
  cancel_live(l); /* the main task too, when it is stuck */
  l->closing = 1;
  if (!run_until(l, none_live, NULL)) stuck = 1;
  if (stuck)
    return luaL_error(L, "async.run: the main task waits for something that "
                     "can never happen (no task is ready, no timer is set, "
                     "no other thread will wake it)");
  retrieved(main);
  lua_settop(L, midx);
  return push_results(L, midx, main);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TIMER || h->type == UV_ASYNC) uv_close(h, NULL);
  else loom__net_close_handle(h);
}

/* async.run(fn, ...) -> fn's results, run as the main task of a new loop
** on this thread. */
static int l_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (tls_loop != NULL)
    return luaL_error(L, "async.run cannot be called from a running loop");
  aloop *l = (aloop *)calloc(1, sizeof *l);
  if (l == NULL) return luaL_error(L, "not enough memory");
  if (uv_loop_init(&l->uv) != 0) {
    free(l);
    return luaL_error(L, "cannot make an event loop");
  }
  uv_async_init(&l->uv, &l->wake, drain_inbox);
  uv_timer_init(&l->uv, &l->timer);
  l->timer.data = l;
  l->wake.data = l;
  uv_unref((uv_handle_t *)&l->wake); /* referenced only while tasks need it */
  pthread_mutex_init(&l->inbox_mu, NULL);
  l->id = atomic_fetch_add(&loop_ids, 1);
  l->L = L;
  l->slow = tls_slow >= 0 ? tls_slow : debug_default();
  lua_newtable(L);
  l->live = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  l->due = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  l->anchors = luaL_ref(L, LUA_REGISTRYINDEX);
  tls_loop = l;

  int n = lua_gettop(L);
  lua_pushcfunction(L, run_body);
  lua_pushlightuserdata(L, l);
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  int status = lua_pcall(L, n + 1, LUA_MULTRET, 0);

  /* tear down; timers are left only when run_body failed early */
  uv_walk(&l->uv, close_any, NULL);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  uv_loop_close(&l->uv);
  pthread_mutex_destroy(&l->inbox_mu);
  luaL_unref(L, LUA_REGISTRYINDEX, l->live);
  luaL_unref(L, LUA_REGISTRYINDEX, l->due);
  luaL_unref(L, LUA_REGISTRYINDEX, l->anchors);
  loom__net_free_loop(l);
  free(l->ready);
  free(l->heap);
  free(l->inbox);
  free(l);
  tls_loop = NULL;
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - n;
}

/* async.set_debug(on[, seconds]): report task steps that block the loop
** longer than seconds (default 0.1), for this thread's loops. */
static int l_set_debug(lua_State *L) {
  int on = lua_toboolean(L, 1);
  lua_Number s = luaL_optnumber(L, 2, 0.1);
  luaL_argcheck(L, !on || s > 0, 2, "threshold must be a positive number");
  tls_slow = on ? (double)s : 0;
  if (tls_loop != NULL) tls_loop->slow = tls_slow;
  return 0;
}

static const luaL_Reg fut_methods[] = {
  {"done", fut_done}, {"cancelled", fut_cancelled}, {"result", fut_result},
  {"exception", fut_exception}, {"cancel", fut_cancel},
  {"add_done_callback", fut_add_done_callback}, {"await", fut_await},
  {"set_result", fut_set_result}, {"set_exception", fut_set_exception},
  {NULL, NULL}
};

static const luaL_Reg task_methods[] = {
  {"done", fut_done}, {"cancelled", fut_cancelled}, {"result", fut_result},
  {"exception", fut_exception}, {"cancel", fut_cancel},
  {"add_done_callback", fut_add_done_callback}, {"await", fut_await},
  {"get_name", task_get_name}, {"set_name", task_set_name},
  {"uncancel", task_uncancel}, {"cancelling", task_cancelling},
  {NULL, NULL}
};

/* Makes the protected metatable `name` (methods as its __index; close
** may be NULL), once per state. loop_net.c's classes are made the same way. */
void loom__loop_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction gc, lua_CFunction close, lua_CFunction tostring) {
  if (!luaL_newmetatable(L, name)) {
    lua_pop(L, 1);
    return;
  }
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  if (close != NULL) {
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

static const luaL_Reg loop_funcs[] = {
  {"run", l_run}, {"sleep", l_sleep}, {"spawn", l_spawn}, {"await", l_await},
  {"Future", l_Future}, {"current_task", l_current_task}, {"get", l_get},
  {"set_debug", l_set_debug},
  {NULL, NULL}
};

void loom__open_loop(lua_State *L) {
  loom__loop_class(L, FUTURE_META, fut_methods, fut_gc, NULL, fut_tostring);
  loom__loop_class(L, TASK_META, task_methods, fut_gc, NULL, fut_tostring);
  luaL_newlib(L, loop_funcs);
  loom__open_net(L);
  lua_setfield(L, -2, "_async"); /* loom.async (lua/loom/async.lua) wraps it */
}
