/*
** queue.c: loom.Queue, LifoQueue, PriorityQueue, SimpleQueue and
** loom.select, shared between threads by reference.
**
** Owns: queue objects (a ring of loom_value slots, or a binary heap for
** PriorityQueue) and select waiters. Items are encoded (loom__value_set)
** before any mutex is taken and pushed into Lua (loom__value_push) after
** it is released: under a mutex a slot is only moved, 24 bytes, so put and
** get of a scalar or short string never allocate.
**
** Locks, in this order and never the other way round:
**   q->mu   sleeping and waking: the condition variables can_get, can_put
**           and all_done; the list of select waiters (and its count
**           nsel). Taken only by calls that sleep or wake a sleeper, by
**           close() and by select.
**   q->lk   a spinlock around the data: ring or heap, count, unfinished,
**           and the closed flag (set under both). Critical sections move
**           a few 24-byte slots and never call out (only malloc/free of
**           the ring when it grows or shrinks).
**   w->mu   a select waiter's `fired` flag and condition variable; taken
**           inside q->mu to fire the waiter, or alone by select itself.
**   (the thread registration lock of wait.c sits inside mu and w->mu)
** No Lua error is ever raised with any of them held.
**
** Waking: a sleeper counts itself (atomic, under mu) before its last
** check under lk; the other side reads the counts under lk after its
** change and, only when someone sleeps, signals under mu (see
** sleep_until). So the common put and get take only lk: no syscall, no
** pthread call. Before sleeping, a blocking call spins for a few
** microseconds on lock-free hints (count, closed) so that a ping-pong
** between two busy threads never pays for a futex sleep; the spin budget
** adapts per queue (halved when a spin fails, doubled when it succeeds)
** and is bounded, so an idle waiter sleeps almost at once.
**
** Method calls: each box is moved to a metatable of its class and
** maxsize whose __index is a plain table (methods and `maxsize`), so
** `q:put` is a table lookup, not a call to a C __index (push_variant).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom_internal.h"

enum { K_FIFO, K_LIFO, K_PRIO, K_SIMPLE };
enum { Q_OK, Q_EMPTY, Q_FULL, Q_TIMEOUT, Q_CLOSED, Q_CANCELLED, Q_NOMEM };

#define SPIN_MIN_NS 1000
#define SPIN_MAX_NS 50000
#define BATCH 256 /* items moved per lock in put_many / get_many */

typedef struct prio_key {
  int isint;
  lua_Integer i;
  lua_Number n;
} prio_key;

typedef struct pitem { /* a PriorityQueue heap entry */
  prio_key key;
  uint64_t seq; /* insertion order: ties stay FIFO */
  loom_value v;
} pitem;

typedef struct selwaiter selwaiter;
typedef struct selnode {
  selwaiter *w;
  struct queue *q;
  struct selnode *prev, *next; /* q->sel list, under q->mu */
  int linked;
} selnode;

struct selwaiter {
  loom_object obj; /* kept alive for a concurrent canceller (wait.c) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fired; /* under mu */
  loom_watch *watch; /* loom.async: fired too (inside q->mu and mu) */
  int n;
  selnode nodes[];
};

/* Padded on purpose: each group below starts a cache line. */
typedef struct queue { /* NOLINT(clang-analyzer-optin.performance.Padding) */
  loom_object obj;
  /* hot: what every put and get writes, under lk, together on one line */
  _Alignas(64) atomic_int lk; /* spinlock: ring, heap, count, unfinished */
  loom_value *ring;
  size_t head;
  size_t cap; /* ring: 0 or a power of two */
  atomic_size_t count; /* read without lk only as a hint for spinning */
  size_t unfinished;   /* task_done bookkeeping */
  /* read by every put and get, written rarely: shared by both caches */
  _Alignas(64) size_t maxsize; /* 0: unbounded */
  int kind;
  atomic_int closed; /* set under mu and lk */
  /* sleepers, changed under mu, read under lk (see sleep_until) */
  atomic_int get_waiters, put_waiters, join_waiters, nsel;
  atomic_int spin_ns; /* adaptive spin budget */
  /* cold: sleeping, select, heap */
  _Alignas(64) pthread_mutex_t mu;
  selnode *sel; /* select waiters on this queue, under mu */
  pitem *heap; /* PriorityQueue, under lk */
  size_t hcap;
  uint64_t seq;
  pthread_cond_t can_get, can_put, all_done;
} queue;

static const loom_class fifo_class, lifo_class, prio_class, simple_class;
static const loom_class selwaiter_class;
static const char batch_meta[] = "loom.queue.batch";

static int ncpu = 1;

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static inline size_t qcount(queue *q) {
  return atomic_load_explicit(&q->count, memory_order_relaxed);
}

static inline void set_count(queue *q, size_t n) {
  atomic_store_explicit(&q->count, n, memory_order_relaxed);
}

static inline int qclosed(queue *q) {
  return atomic_load_explicit(&q->closed, memory_order_relaxed);
}

static inline int is_full(queue *q, size_t n) {
  return q->maxsize != 0 && n >= q->maxsize;
}

static inline int nwaiting(atomic_int *w) {
  return atomic_load_explicit(w, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* the spinlock: critical sections move a few slots                     */

static void qlock_slow(queue *q) {
  for (unsigned i = 0;; i++) {
    if (!atomic_load_explicit(&q->lk, memory_order_relaxed) &&
        !atomic_exchange_explicit(&q->lk, 1, memory_order_acquire))
      return;
    if (ncpu > 1 && i < 100) LOOM_CPU_RELAX();
    else sched_yield(); /* the holder may have been preempted */
  }
}

static inline void qlock(queue *q) {
  if (atomic_exchange_explicit(&q->lk, 1, memory_order_acquire)) qlock_slow(q);
}

static inline void qunlock(queue *q) {
  atomic_store_explicit(&q->lk, 0, memory_order_release);
}

/* ------------------------------------------------------------------ */
/* storage, always under q->lk                                          */

static int ring_resize(queue *q, size_t ncap) {
  loom_value *nr = (loom_value *)malloc(ncap * sizeof *nr);
  if (nr == NULL) return 0;
  size_t n = qcount(q), mask = q->cap - 1;
  for (size_t i = 0; i < n; i++) nr[i] = q->ring[(q->head + i) & mask];
  free(q->ring);
  q->ring = nr;
  q->cap = ncap;
  q->head = 0;
  return 1;
}

static int prio_less(const pitem *a, const pitem *b) {
  if (a->key.isint && b->key.isint) {
    if (a->key.i != b->key.i) return a->key.i < b->key.i;
  } else {
    lua_Number x = a->key.isint ? (lua_Number)a->key.i : a->key.n;
    lua_Number y = b->key.isint ? (lua_Number)b->key.i : b->key.n;
    if (x != y) return x < y;
  }
  return a->seq < b->seq;
}

/* Room for `need` heap entries; 0 when out of memory. */
static int heap_reserve(queue *q, size_t need) {
  if (need <= q->hcap) return 1;
  size_t ncap = q->hcap ? q->hcap * 2 : 16;
  while (ncap < need) ncap *= 2;
  pitem *nh = (pitem *)realloc(q->heap, ncap * sizeof *nh);
  if (nh == NULL) return 0;
  q->heap = nh;
  q->hcap = ncap;
  return 1;
}

/* Sifts *it into a heap of n entries that has room for one more. */
static void heap_insert(queue *q, const pitem *it, size_t n) {
  size_t i = n;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!prio_less(it, &q->heap[parent])) break;
    q->heap[i] = q->heap[parent];
    i = parent;
  }
  q->heap[i] = *it;
}

/* Stores one item; 0 when out of memory (nothing changed). */
static int store(queue *q, pitem *it) {
  size_t n = qcount(q);
  if (q->kind == K_PRIO) {
    if (!heap_reserve(q, n + 1)) return 0;
    it->seq = q->seq++;
    heap_insert(q, it, n);
  } else {
    if (n == q->cap && !ring_resize(q, q->cap ? q->cap * 2 : 16)) return 0;
    q->ring[(q->head + n) & (q->cap - 1)] = it->v;
  }
  set_count(q, n + 1);
  if (q->kind != K_SIMPLE) q->unfinished++;
  return 1;
}

/* Moves one item out into *it (for a PriorityQueue with its key and
** sequence number, else only it->v); the queue must not be empty. */
static void take_item(queue *q, pitem *it) {
  loom_value *v = &it->v;
  size_t n = qcount(q) - 1;
  if (q->kind == K_PRIO) {
    *it = q->heap[0];
    pitem last = q->heap[n];
    size_t i = 0;
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && prio_less(&q->heap[c + 1], &q->heap[c])) c++;
      if (!prio_less(&q->heap[c], &last)) break;
      q->heap[i] = q->heap[c];
      i = c;
    }
    q->heap[i] = last;
  } else if (q->kind == K_LIFO) {
    *v = q->ring[(q->head + n) & (q->cap - 1)];
  } else {
    *v = q->ring[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
  }
  set_count(q, n);
  if (q->kind != K_PRIO && q->cap > 1024 && n < q->cap / 4)
    (void)ring_resize(q, q->cap / 2); /* on failure keep the big ring */
}

static inline void take(queue *q, loom_value *v) {
  pitem it;
  take_item(q, &it);
  *v = it.v;
}

/* Fires every select waiter registered on q (q->mu held, not lk). */
static void wake_selectors(queue *q) {
  for (selnode *s = q->sel; s != NULL; s = s->next) {
    selwaiter *w = s->w;
    pthread_mutex_lock(&w->mu);
    if (!w->fired && w->watch != NULL) w->watch->fire(w->watch, 0);
    w->fired = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
}

/* Wakes one (or all) sleepers on cv. Taking mu first is what makes the
** waiter counts safe: a sleeper holds mu from its last check until it
** sleeps (sleep_until). */
static void wake(queue *q, pthread_cond_t *cv, int all) {
  pthread_mutex_lock(&q->mu);
  if (all) pthread_cond_broadcast(cv);
  else pthread_cond_signal(cv);
  pthread_mutex_unlock(&q->mu);
}

static void fire_selectors(queue *q) {
  pthread_mutex_lock(&q->mu);
  wake_selectors(q);
  pthread_mutex_unlock(&q->mu);
}

/* ------------------------------------------------------------------ */
/* spinning before sleeping                                             */

static int ready_get(queue *q) {
  return qcount(q) > 0 || qclosed(q);
}

static int ready_put(queue *q) {
  return !is_full(q, qcount(q)) || qclosed(q);
}

static int ready_join(queue *q) {
  return q->unfinished == 0;
}

/* Sleeps on cv until ready(q) (checked under lk), the deadline or a
** cancel; called with no lock held. The sleeper counts itself in
** *waiters (under mu) *before* it checks under lk, and a waker reads the
** count under lk after its change, then signals under mu: either the
** sleeper's check sees the change, or the waker sees the count and its
** signal waits for mu, which the sleeper holds until it sleeps. Returns
** 0, ETIMEDOUT or LOOM_CANCELLED; the caller then tries again. */
static int sleep_until(queue *q, atomic_int *waiters, pthread_cond_t *cv,
                       int (*ready)(queue *), const struct timespec *dl) {
  int rc = 0;
  pthread_mutex_lock(&q->mu);
  atomic_fetch_add_explicit(waiters, 1, memory_order_relaxed);
  for (;;) {
    qlock(q);
    int r = ready(q);
    qunlock(q);
    if (r) break;
    rc = loom__wait(&q->obj, cv, &q->mu, dl);
    if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) break;
  }
  atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

/* Spins until ready(q) or the budget runs out; 1 if ready. */
static int spin(queue *q, int (*ready)(queue *)) {
  int budget = atomic_load_explicit(&q->spin_ns, memory_order_relaxed);
  if (budget <= 0) return 0;
  double end = 0;
  unsigned pause = 1;
  for (unsigned i = 1;; i++) {
    if (ready(q)) {
      if (budget < SPIN_MAX_NS)
        atomic_store_explicit(&q->spin_ns,
                              budget * 2 < SPIN_MAX_NS ? budget * 2 : SPIN_MAX_NS,
                              memory_order_relaxed);
      return 1;
    }
    /* back off between polls: reading the hot line while the other side
    ** writes it costs both sides a cache-line transfer per poll */
    for (unsigned k = 0; k < pause; k++) LOOM_CPU_RELAX();
    if (pause < 64) pause *= 2;
    if ((i & 7) == 0) {
      double now = loom__now();
      if (end == 0) {
        end = now + budget * 1e-9;
      } else if (now >= end || loom__cancel_requested()) {
        break;
      }
    }
  }
  if (budget > SPIN_MIN_NS)
    atomic_store_explicit(&q->spin_ns, budget / 2, memory_order_relaxed);
  return 0;
}

/* ------------------------------------------------------------------ */
/* the two cores of every call                                          */

/* One attempt to take an item into *v: Q_OK, Q_EMPTY or Q_CLOSED. */
static int try_get(queue *q, loom_value *v) {
  qlock(q);
  size_t n = qcount(q);
  if (n == 0) {
    int closed = qclosed(q);
    qunlock(q);
    return closed ? Q_CLOSED : Q_EMPTY;
  }
  take(q, v);
  int wake_put = nwaiting(&q->put_waiters) > 0;
  int wake_get = n > 1 && nwaiting(&q->get_waiters) > 0; /* pass it on */
  qunlock(q);
  if (wake_put) wake(q, &q->can_put, 0);
  if (wake_get) wake(q, &q->can_get, 0);
  return Q_OK;
}

/* Takes an item into *v. block: 0 no wait; 1 wait until dl (NULL: no
** deadline). Returns Q_OK, Q_EMPTY, Q_TIMEOUT, Q_CLOSED or Q_CANCELLED. */
static int get_core(queue *q, loom_value *v, int block,
                    const struct timespec *dl) {
  int res;
  /* an empty queue (by the hint) costs no lock traffic while the
  ** producer is about to put: spin first */
  if (!block || qcount(q) > 0) {
    res = try_get(q, v);
    if (res != Q_EMPTY || !block) return res;
  }
  if (ncpu > 1 && !loom__cancel_requested()) spin(q, ready_get);
  for (;;) {
    res = try_get(q, v);
    if (res != Q_EMPTY) return res;
    int rc = sleep_until(q, &q->get_waiters, &q->can_get, ready_get, dl);
    if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) {
      res = try_get(q, v); /* what is there is still taken */
      if (res != Q_EMPTY) return res;
      return rc == ETIMEDOUT ? Q_TIMEOUT : Q_CANCELLED;
    }
  }
}

/* One attempt to store *it: Q_OK, Q_FULL, Q_CLOSED or Q_NOMEM. */
static int try_put(queue *q, pitem *it) {
  int res, wake_get = 0, wake_put = 0, sel = 0;
  qlock(q);
  if (qclosed(q)) {
    res = Q_CLOSED;
  } else if (is_full(q, qcount(q))) {
    res = Q_FULL;
  } else if (!store(q, it)) {
    res = Q_NOMEM;
  } else {
    res = Q_OK;
    wake_get = nwaiting(&q->get_waiters) > 0;
    wake_put = nwaiting(&q->put_waiters) > 0 && !is_full(q, qcount(q));
    sel = nwaiting(&q->nsel) > 0;
  }
  qunlock(q);
  if (wake_get) wake(q, &q->can_get, 0);
  if (wake_put) wake(q, &q->can_put, 0);
  if (sel) fire_selectors(q);
  return res;
}

/* Stores *it (which the queue then owns on Q_OK). Returns Q_OK, Q_FULL,
** Q_TIMEOUT, Q_CLOSED, Q_CANCELLED or Q_NOMEM. */
static int put_core(queue *q, pitem *it, int block,
                    const struct timespec *dl) {
  int res = try_put(q, it);
  if (res != Q_FULL || !block) return res;
  if (ncpu > 1 && !loom__cancel_requested()) spin(q, ready_put);
  for (;;) {
    res = try_put(q, it);
    if (res != Q_FULL) return res;
    int rc = sleep_until(q, &q->put_waiters, &q->can_put, ready_put, dl);
    if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) {
      res = try_put(q, it); /* room that is there is still used */
      if (res != Q_FULL) return res;
      return rc == ETIMEDOUT ? Q_TIMEOUT : Q_CANCELLED;
    }
  }
}

/* ------------------------------------------------------------------ */
/* Lua side: checking, results                                          */

static void queue_destroy(loom_object *o);
static int q_len(lua_State *L);

/* Any queue kind at idx; raises "object is closed" for a closed queue
** box, as loom__check_object does for the other classes. */
static queue *check_queue(lua_State *L, int idx) {
  loom_object *o = loom__to_any_object(L, idx);
  if (o == NULL || o->cls->destroy != queue_destroy) {
    const loom_class *c = loom__box_class(L, idx);
    if (c != NULL && c->destroy == queue_destroy)
      luaL_argerror(L, idx, "object is closed");
    luaL_typeerror(L, idx, "loom.Queue");
    __builtin_unreachable(); /* neither returns */
  }
  return (queue *)o;
}

/* The queue at index 1 of a method: methods are closures whose upvalue
** 1 is the metatable they were made for (see push_variant), so the usual
** case is one pointer comparison. */
static inline queue *check_self(lua_State *L) {
  if (lua_getmetatable(L, 1)) {
    int same = lua_topointer(L, -1) == lua_topointer(L, lua_upvalueindex(1));
    lua_settop(L, -2);
    if (same) {
      loom_object **box = (loom_object **)lua_touserdata(L, 1);
      if (*box != NULL) return (queue *)*box;
    }
  }
  return check_queue(L, 1); /* another queue kind, or an error */
}

static queue *test_queue(lua_State *L, int idx) {
  loom_object *o = loom__to_any_object(L, idx);
  return (o != NULL && o->cls->destroy == queue_destroy) ? (queue *)o : NULL;
}

static const char *const reasons[] = {
  "ok", "empty", "full", "timeout", "closed", "cancelled", "out of memory"
};

static int fail(lua_State *L, int res) {
  lua_pushnil(L);
  lua_pushstring(L, reasons[res]);
  return 2;
}

static int raise_closed(lua_State *L) {
  return loom__raise(L, "closed", "cannot put into a closed queue");
}

static int raise_nomem(lua_State *L) {
  return luaL_error(L, "not enough memory to grow the queue");
}

/* Reads the priority of the item at idx (PriorityQueue only). */
static void read_key(lua_State *L, int idx, prio_key *k) {
  int t = lua_type(L, idx), pushed = 0;
  if (t == LUA_TTABLE) {
    lua_rawgeti(L, idx, 1);
    t = lua_type(L, -1);
    idx = lua_gettop(L);
    pushed = 1;
  }
  if (t != LUA_TNUMBER)
    luaL_argerror(L, 2, "PriorityQueue items must be numbers or tables "
                        "{priority, value} with a number priority");
  k->isint = lua_isinteger(L, idx);
  if (k->isint) {
    k->i = lua_tointeger(L, idx);
  } else {
    k->n = lua_tonumber(L, idx);
    if (k->n != k->n) luaL_argerror(L, 2, "priority is NaN");
  }
  if (pushed) lua_pop(L, 1);
}

/* Encodes the item at idx into *it (key first: it may raise). */
static void encode_item(lua_State *L, queue *q, int idx, pitem *it) {
  idx = lua_absindex(L, idx);
  if (lua_isnil(L, idx)) luaL_argerror(L, idx, "cannot put nil into a queue");
  if (q->kind == K_PRIO) read_key(L, idx, &it->key);
  loom__value_set(L, idx, &it->v, "item");
}

/* ------------------------------------------------------------------ */
/* put / get                                                            */

/* A large item goes in as a stream as soon as its first chunk is ready,
** if there is room right away (stream.c); otherwise it is put whole. */
typedef struct stream_put {
  queue *q;
  pitem *it;
} stream_put;

static int start_stream(void *ud, const loom_value *v) {
  stream_put *sp = (stream_put *)ud;
  sp->it->v = *v;
  return try_put(sp->q, sp->it) == Q_OK;
}

/* The producer of a stream failed: take it out if no one has it yet. */
static void withdraw_stream(loom_object *owner, loom_stream *st) {
  queue *q = (queue *)owner;
  loom_value v;
  int found = 0, wake_put = 0, wake_join = 0;
  qlock(q);
  size_t n = qcount(q), mask = q->cap - 1;
  for (size_t j = 0; j < n && !found; j++) {
    if (!loom__value_is_stream(&q->ring[(q->head + j) & mask], st)) continue;
    found = 1;
    v = q->ring[(q->head + j) & mask];
    for (size_t k = j; k + 1 < n; k++)
      q->ring[(q->head + k) & mask] = q->ring[(q->head + k + 1) & mask];
    set_count(q, n - 1);
    if (q->kind != K_SIMPLE && q->unfinished > 0) q->unfinished--;
    wake_put = nwaiting(&q->put_waiters) > 0;
    wake_join = q->unfinished == 0 && nwaiting(&q->join_waiters) > 0;
  }
  qunlock(q);
  if (!found) return;
  loom__value_free(&v);
  if (wake_put) wake(q, &q->can_put, 0);
  if (wake_join) wake(q, &q->all_done, 1);
}

/* A consumer took a stream whose producer failed: the item never was, so
** it counts as done. */
static void stream_vanished(queue *q) {
  qlock(q);
  if (q->kind != K_SIMPLE && q->unfinished > 0) q->unfinished--;
  int wake_join = q->unfinished == 0 && nwaiting(&q->join_waiters) > 0;
  qunlock(q);
  if (wake_join) wake(q, &q->all_done, 1);
}

static int do_put(lua_State *L, int block) {
  queue *q = check_self(L);
  struct timespec ts;
  int has = block && !lua_isnoneornil(L, 3) && loom__opt_deadline(L, 3, &ts);
  if (lua_isnoneornil(L, 2)) luaL_argerror(L, 2, "cannot put nil into a queue");
  pitem it;
  if (q->kind == K_PRIO) {
    encode_item(L, q, 2, &it);
  } else {
    stream_put sp = {q, &it};
    loom_stream_offer offer = {start_stream, &sp, &q->obj, withdraw_stream};
    if (loom__value_set_streamed(L, 2, &it.v, "item", &offer)) {
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  int res = put_core(q, &it, block, has ? &ts : NULL);
  if (res == Q_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  loom__value_free(&it.v);
  switch (res) {
    case Q_CLOSED: return raise_closed(L);
    case Q_CANCELLED: return loom__raise_cancelled(L);
    case Q_NOMEM: return raise_nomem(L);
    default: return fail(L, res);
  }
}

static int q_put(lua_State *L) {
  return do_put(L, 1);
}

static int q_put_nowait(lua_State *L) {
  return do_put(L, 0);
}

static int do_get(lua_State *L, int block) {
  queue *q = check_self(L);
  struct timespec ts;
  int has = block && !lua_isnoneornil(L, 2) && loom__opt_deadline(L, 2, &ts);
  loom_value v;
  int res;
  while ((res = get_core(q, &v, block, has ? &ts : NULL)) == Q_OK) {
    if (loom__value_take(L, &v)) return 1;
    stream_vanished(q);
  }
  if (res == Q_CANCELLED) return loom__raise_cancelled(L);
  return fail(L, res);
}

static int q_get(lua_State *L) {
  return do_get(L, 1);
}

static int q_get_nowait(lua_State *L) {
  return do_get(L, 0);
}

/* for v in q:iter() do ... end: blocking gets until closed and drained */
static int iter_step(lua_State *L) {
  queue *q = check_queue(L, 1);
  loom_value v;
  int res;
  while ((res = get_core(q, &v, 1, NULL)) == Q_OK) {
    if (loom__value_take(L, &v)) return 1;
    stream_vanished(q);
  }
  if (res == Q_CANCELLED) return loom__raise_cancelled(L);
  lua_pushnil(L);
  return 1;
}

static int q_iter(lua_State *L) {
  check_self(L);
  lua_pushcfunction(L, iter_step);
  lua_pushvalue(L, 1);
  return 2;
}

/* ------------------------------------------------------------------ */
/* batches                                                              */

/* A batch of items between the queue and the Lua stack. It lives in a
** userdata whose __gc frees whatever a Lua error left in it. */
typedef struct batch {
  size_t first, n, cap;
  pitem items[];
} batch;

static void batch_clear(batch *b) {
  for (size_t i = b->first; i < b->n; i++) loom__value_free(&b->items[i].v);
  b->first = b->n = 0;
}

static int batch_gc(lua_State *L) {
  batch *b = (batch *)luaL_testudata(L, 1, batch_meta);
  if (b != NULL) batch_clear(b);
  return 0;
}

/* Puts b->items[b->first..b->n), which get_many took but did not hand
** over, back where the next get finds them first, in their order (a
** PriorityQueue's keep their place: their sequence numbers are kept).
** They go back even if that overfills a bounded queue: they were in it.
** Returns 0, with the items freed, when the ring or heap cannot grow. */
static int put_back(queue *q, batch *b) {
  size_t m = b->n - b->first;
  if (m == 0) return 1;
  qlock(q);
  size_t n = qcount(q);
  int ok;
  if (q->kind == K_PRIO) {
    ok = heap_reserve(q, n + m);
    for (size_t i = b->first; ok && i < b->n; i++) heap_insert(q, &b->items[i], n++);
  } else {
    size_t ncap = q->cap ? q->cap : 16;
    while (ncap < n + m) ncap *= 2;
    ok = ncap == q->cap || ring_resize(q, ncap);
    for (size_t i = b->n; ok && i-- > b->first; n++) {
      if (q->kind == K_LIFO) { /* taken from the top: the first goes on last */
        q->ring[(q->head + n) & (q->cap - 1)] = b->items[i].v;
      } else {
        q->head = (q->head - 1) & (q->cap - 1);
        q->ring[q->head] = b->items[i].v;
      }
    }
  }
  int wake_get = 0, sel = 0;
  if (ok) {
    set_count(q, n);
    b->first = b->n;
    wake_get = nwaiting(&q->get_waiters);
    sel = nwaiting(&q->nsel) > 0;
  }
  qunlock(q);
  if (wake_get) wake(q, &q->can_get, wake_get > 1 || m > 1);
  if (sel) fire_selectors(q);
  if (!ok) batch_clear(b);
  return ok;
}

static batch *new_batch(lua_State *L, size_t cap) {
  batch *b = (batch *)lua_newuserdatauv(L, sizeof(batch) + cap * sizeof(pitem), 0);
  b->first = b->n = 0;
  b->cap = cap;
  luaL_setmetatable(L, batch_meta);
  return b;
}

/* q:put_many(items[, timeout]) -> true | nil, "timeout", count_put */
static int q_put_many(lua_State *L) {
  queue *q = check_self(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  struct timespec ts;
  int has = loom__opt_deadline(L, 3, &ts);
  lua_Integer total = luaL_len(L, 2), done = 0;
  lua_settop(L, 2);
  batch *b = new_batch(L, total < BATCH ? (size_t)(total > 0 ? total : 1) : BATCH);
  while (done < total) {
    /* encode a chunk outside the lock */
    b->first = b->n = 0;
    while (b->n < b->cap && done + (lua_Integer)b->n < total) {
      lua_rawgeti(L, 2, done + (lua_Integer)b->n + 1);
      if (lua_isnil(L, -1))
        return luaL_error(L, "cannot put nil into a queue (items[%d])",
                          (int)(done + (lua_Integer)b->n + 1));
      encode_item(L, q, -1, &b->items[b->n]);
      b->n++;
      lua_pop(L, 1);
    }
    /* store it, waiting for room as needed */
    int res = Q_OK, rc = 0;
    while (b->first < b->n) {
      size_t stored = 0;
      qlock(q);
      if (qclosed(q)) {
        res = Q_CLOSED;
      } else {
        while (b->first < b->n && !is_full(q, qcount(q))) {
          if (!store(q, &b->items[b->first])) {
            res = Q_NOMEM;
            break;
          }
          b->first++;
          stored++;
        }
      }
      int wake_get = stored > 0 ? nwaiting(&q->get_waiters) : 0;
      int sel = stored > 0 && nwaiting(&q->nsel) > 0;
      qunlock(q);
      if (wake_get) wake(q, &q->can_get, wake_get > 1 || stored > 1);
      if (sel) fire_selectors(q);
      done += (lua_Integer)stored;
      if (res != Q_OK || b->first == b->n) break;
      if (rc == ETIMEDOUT || rc == LOOM_CANCELLED) {
        res = rc == LOOM_CANCELLED ? Q_CANCELLED : Q_TIMEOUT;
        break;
      }
      if (stored == 0 && ncpu > 1 && !loom__cancel_requested())
        spin(q, ready_put);
      if (!ready_put(q))
        rc = sleep_until(q, &q->put_waiters, &q->can_put, ready_put,
                         has ? &ts : NULL);
    }
    if (res != Q_OK) {
      batch_clear(b);
      switch (res) {
        case Q_CLOSED: return raise_closed(L);
        case Q_CANCELLED: return loom__raise_cancelled(L);
        case Q_NOMEM: return raise_nomem(L);
        default:
          lua_pushnil(L);
          lua_pushstring(L, reasons[res]);
          lua_pushinteger(L, done);
          return 3;
      }
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* q:get_many(n[, timeout]) -> items, count (1 <= count <= n): waits for
** the first item, then takes what is there without waiting more.
** nil, "timeout" | nil, "closed" when nothing came.
** An item that cannot be decoded here ends the call: the first one is
** consumed and its error raised, as q:get would; a later one is put back
** with the items after it and the call returns those before it (the next
** get raises its error). Decoding a later item must leave it intact, so a
** stream (read only once) is only ever taken as the first item. */
static int q_get_many(lua_State *L) {
  queue *q = check_self(L);
  lua_Integer want = luaL_checkinteger(L, 2);
  luaL_argcheck(L, want >= 1, 2, "count must be at least 1");
  struct timespec ts;
  int has = loom__opt_deadline(L, 3, &ts);
  lua_settop(L, 2);
  size_t cap = want < BATCH ? (size_t)want : BATCH;
  batch *b = new_batch(L, cap); /* at 3 */
  lua_createtable(L, (int)cap, 0); /* at 4 */
  lua_Integer got = 0;
  int first = 1;
  for (;;) {
    loom_value v;
    int res = Q_OK;
    if (first) { /* the blocking part: one item through the usual path */
      res = get_core(q, &v, 1, has ? &ts : NULL);
      if (res == Q_CANCELLED) return loom__raise_cancelled(L);
      if (res != Q_OK) return fail(L, res);
      b->items[0].v = v;
      b->first = 0;
      b->n = 1;
      first = 0;
    } else {
      b->first = b->n = 0;
    }
    size_t room = want - got < (lua_Integer)cap ? (size_t)(want - got) : cap;
    size_t taken = b->n;
    int stream_next = 0;
    qlock(q);
    while (b->n < room && qcount(q) > 0) {
      if (q->kind != K_PRIO) {
        size_t next = q->kind == K_LIFO ? q->head + qcount(q) - 1 : q->head;
        stream_next = loom__value_is_streamed(&q->ring[next & (q->cap - 1)]);
        if (stream_next) break; /* left for the next call */
      }
      take_item(q, &b->items[b->n++]);
    }
    int more = qcount(q) > 0 && !stream_next;
    taken = b->n - taken;
    int wake_put = taken > 0 ? nwaiting(&q->put_waiters) : 0;
    qunlock(q);
    if (wake_put) wake(q, &q->can_put, wake_put > 1 || taken > 1);
    while (b->first < b->n) {
      int r = loom__value_try_take(L, &b->items[b->first].v);
      if (r < 0) { /* the error value is on top */
        if (got == 0) loom__value_free(&b->items[b->first++].v);
        int ok = put_back(q, b);
        if (got == 0) return lua_error(L);
        if (!ok) return raise_nomem(L);
        lua_pop(L, 1);
        more = 0;
        break;
      }
      b->first++;
      if (r) lua_rawseti(L, 4, ++got);
      else stream_vanished(q);
    }
    if (got == 0) { /* the first item vanished: wait for another */
      first = 1;
      continue;
    }
    if (!more || got >= want) break;
  }
  lua_pushinteger(L, got);
  return 2;
}

/* ------------------------------------------------------------------ */
/* sizes, tasks, close                                                  */

static int q_qsize(lua_State *L) {
  queue *q = check_self(L);
  lua_pushinteger(L, (lua_Integer)qcount(q));
  return 1;
}

static int q_empty(lua_State *L) {
  queue *q = check_self(L);
  lua_pushboolean(L, qcount(q) == 0);
  return 1;
}

static int q_full(lua_State *L) {
  queue *q = check_self(L);
  lua_pushboolean(L, is_full(q, qcount(q)));
  return 1;
}

static int q_is_closed(lua_State *L) {
  queue *q = check_self(L);
  lua_pushboolean(L, qclosed(q));
  return 1;
}

/* q:task_done([n]) */
static int q_task_done(lua_State *L) {
  queue *q = check_self(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1, 2, "count must be at least 1");
  qlock(q);
  int ok = (lua_Integer)q->unfinished >= n;
  int wake_join = 0;
  if (ok) {
    q->unfinished -= (size_t)n;
    wake_join = q->unfinished == 0 && nwaiting(&q->join_waiters) > 0;
  }
  qunlock(q);
  if (wake_join) wake(q, &q->all_done, 1);
  if (!ok) return luaL_error(L, "task_done() called too many times");
  return 0;
}

/* q:join([timeout]) -> true once every item is done, false on timeout */
static int q_join(lua_State *L) {
  queue *q = check_self(L);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  int rc = sleep_until(q, &q->join_waiters, &q->all_done, ready_join,
                       has ? &ts : NULL);
  qlock(q);
  int done = q->unfinished == 0;
  qunlock(q);
  if (!done && rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  lua_pushboolean(L, done);
  return 1;
}

/* q:close([immediate]): later puts raise; gets drain, then report
** "closed". With immediate, the items left are discarded (and count as
** done for join). Every blocked caller wakes. */
static int q_close(lua_State *L) {
  queue *q = check_self(L);
  int immediate = lua_toboolean(L, 2);
  pthread_mutex_lock(&q->mu);
  qlock(q);
  atomic_store_explicit(&q->closed, 1, memory_order_relaxed);
  qunlock(q);
  while (immediate) { /* discard one by one: never free under lk */
    loom_value v;
    qlock(q);
    if (qcount(q) == 0) {
      qunlock(q);
      break;
    }
    take(q, &v);
    if (q->kind != K_SIMPLE && q->unfinished > 0) q->unfinished--;
    qunlock(q);
    loom__value_free(&v); /* destroys never touch this queue's locks */
  }
  /* sleepers hold mu from their last check until they sleep: all of them
  ** either saw `closed` or get these */
  wake_selectors(q);
  pthread_cond_broadcast(&q->can_get);
  pthread_cond_broadcast(&q->can_put);
  pthread_cond_broadcast(&q->all_done);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

/* Pushes the metatable that boxes of queues of class `mt` (the class
** metatable at index mt) with this maxsize use: a copy of the class
** metatable whose __index is a plain table holding the methods (closures
** over this copy) and `maxsize`. A method call then costs one table
** lookup instead of a call to a C __index function. One copy per class
** and maxsize per state, cached weakly in mt.__variants. */
static void push_variant(lua_State *L, int mt, const luaL_Reg *methods,
                         size_t maxsize) {
  mt = lua_absindex(L, mt);
  lua_getfield(L, mt, "__variants");
  if (lua_rawgeti(L, -1, (lua_Integer)maxsize) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_newtable(L); /* the variant metatable */
  int v = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, mt) != 0) { /* everything but __index, __variants */
    int skip = lua_type(L, -2) == LUA_TSTRING &&
               (strcmp(lua_tostring(L, -2), "__index") == 0 ||
                strcmp(lua_tostring(L, -2), "__variants") == 0);
    if (skip) {
      lua_pop(L, 1);
    } else {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, v);
    }
  }
  lua_newtable(L); /* its __index */
  for (const luaL_Reg *r = methods; r->name != NULL; r++) {
    lua_pushvalue(L, v);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
  lua_pushinteger(L, (lua_Integer)maxsize);
  lua_setfield(L, -2, "maxsize");
  lua_pushvalue(L, -1);
  lua_setfield(L, v, "__methods");
  lua_setfield(L, v, "__index");
  lua_pushvalue(L, v);
  lua_pushcclosure(L, q_len, 1);
  lua_setfield(L, v, "__len");
  lua_pushvalue(L, v);
  lua_rawseti(L, -3, (lua_Integer)maxsize); /* __variants[maxsize] */
  lua_remove(L, -2);
}

/* Gives the box at idx (a live queue box) its variant metatable. */
static void use_variant(lua_State *L, int idx, queue *q) {
  idx = lua_absindex(L, idx);
  luaL_getmetatable(L, q->obj.cls->name);
  push_variant(L, -1, q->obj.cls->methods, q->maxsize);
  lua_setmetatable(L, idx);
  lua_pop(L, 1);
}

/* The __index of a class metatable, which boxes have when they are made
** (object.c): switches the box to its variant, then answers from it. */
static int q_index(lua_State *L) {
  queue *q = test_queue(L, 1);
  if (q == NULL) { /* a closed box */
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (lua_isnil(L, -1) && lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "maxsize") == 0)
      check_queue(L, 1); /* raises "object is closed" */
    return 1;
  }
  use_variant(L, 1, q);
  lua_settop(L, 2);
  lua_gettable(L, 1);
  return 1;
}

static int q_len(lua_State *L) {
  return q_qsize(L);
}

/* ------------------------------------------------------------------ */
/* construction and destruction                                         */

static void queue_destroy(loom_object *o) {
  queue *q = (queue *)o;
  size_t n = qcount(q);
  if (q->kind == K_PRIO) {
    for (size_t i = 0; i < n; i++) loom__value_free(&q->heap[i].v);
  } else {
    for (size_t i = 0; i < n; i++)
      loom__value_free(&q->ring[(q->head + i) & (q->cap - 1)]);
  }
  free(q->ring);
  free(q->heap);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->can_get);
  pthread_cond_destroy(&q->can_put);
  pthread_cond_destroy(&q->all_done);
  free(q);
}

static int init_mutex(pthread_mutex_t *mu) {
  pthread_mutexattr_t attr;
  if (pthread_mutexattr_init(&attr) != 0) return -1;
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  /* critical sections are a few dozen instructions: spin a little
  ** before sleeping in the kernel */
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  int rc = pthread_mutex_init(mu, &attr);
  pthread_mutexattr_destroy(&attr);
  return rc;
}

static int new_queue(lua_State *L, const loom_class *cls, int kind) {
  lua_Integer maxsize = 0;
  if (kind != K_SIMPLE) maxsize = luaL_optinteger(L, 1, 0);
  if (maxsize < 0) maxsize = 0; /* Python: <= 0 is unbounded */
  size_t size = (sizeof(queue) + 63) & ~(size_t)63;
  queue *q = (queue *)aligned_alloc(64, size); /* hot fields own a line */
  if (q == NULL) return luaL_error(L, "not enough memory for a queue");
  memset(q, 0, size);
  if (init_mutex(&q->mu) != 0) goto fail_mu;
  if (loom__cond_init(&q->can_get) != 0) goto fail_get;
  if (loom__cond_init(&q->can_put) != 0) goto fail_put;
  if (loom__cond_init(&q->all_done) != 0) goto fail_done;
  q->kind = kind;
  q->maxsize = (size_t)maxsize;
  atomic_init(&q->lk, 0);
  atomic_init(&q->count, 0);
  atomic_init(&q->closed, 0);
  atomic_init(&q->get_waiters, 0);
  atomic_init(&q->put_waiters, 0);
  atomic_init(&q->join_waiters, 0);
  atomic_init(&q->nsel, 0);
  atomic_init(&q->spin_ns, ncpu > 1 ? SPIN_MAX_NS / 2 : 0);
  loom__object_init(&q->obj, cls);
  loom__push_owned(L, &q->obj);
  use_variant(L, -1, q);
  return 1;
fail_done:
  pthread_cond_destroy(&q->can_put);
fail_put:
  pthread_cond_destroy(&q->can_get);
fail_get:
  pthread_mutex_destroy(&q->mu);
fail_mu:
  free(q);
  return luaL_error(L, "cannot create a queue");
}

static int l_Queue(lua_State *L) {
  return new_queue(L, &fifo_class, K_FIFO);
}

static int l_LifoQueue(lua_State *L) {
  return new_queue(L, &lifo_class, K_LIFO);
}

static int l_PriorityQueue(lua_State *L) {
  return new_queue(L, &prio_class, K_PRIO);
}

static int l_SimpleQueue(lua_State *L) {
  return new_queue(L, &simple_class, K_SIMPLE);
}

/* ------------------------------------------------------------------ */
/* loom.select(queues[, timeout]) -> queue, item                        */

static void selwaiter_destroy(loom_object *o) {
  selwaiter *w = (selwaiter *)o;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

static selwaiter *new_selwaiter(int n) {
  selwaiter *w = (selwaiter *)calloc(1, sizeof *w + (size_t)n * sizeof(selnode));
  if (w == NULL) return NULL;
  if (pthread_mutex_init(&w->mu, NULL) != 0) {
    free(w);
    return NULL;
  }
  if (loom__cond_init(&w->cv) != 0) {
    pthread_mutex_destroy(&w->mu);
    free(w);
    return NULL;
  }
  w->n = n;
  loom__object_init(&w->obj, &selwaiter_class);
  return w;
}

/* Links node s of waiter w into q's select list (q->mu held). */
static void sel_link(queue *q, selnode *s, selwaiter *w) {
  s->w = w;
  s->q = q;
  s->prev = NULL;
  s->next = q->sel;
  if (q->sel) q->sel->prev = s;
  q->sel = s;
  s->linked = 1;
  loom__retain(&q->obj);
  atomic_fetch_add_explicit(&q->nsel, 1, memory_order_relaxed);
}

static void sel_unlink(selnode *s) {
  if (!s->linked) return;
  queue *q = s->q;
  pthread_mutex_lock(&q->mu);
  if (s->prev) s->prev->next = s->next; else q->sel = s->next;
  if (s->next) s->next->prev = s->prev;
  atomic_fetch_sub_explicit(&q->nsel, 1, memory_order_relaxed);
  pthread_mutex_unlock(&q->mu);
  s->linked = 0;
  s->prev = s->next = NULL;
  loom__release(&q->obj);
}

/* Unlinks all nodes of w; then nobody but a canceller can touch w. */
static void sel_unlink_all(selwaiter *w) {
  for (int i = 0; i < w->n; i++) sel_unlink(&w->nodes[i]);
}

typedef struct selstate {
  queue **qs;
  int n, start;
} selstate;

/* One pass over the queues from start: takes the first item found.
** Returns its index, -1 if none, -2 if every queue is closed and empty. */
static int sel_poll(selstate *st, loom_value *v) {
  int nclosed = 0;
  for (int k = 0; k < st->n; k++) {
    int i = (st->start + k) % st->n;
    queue *q = st->qs[i];
    if (qcount(q) == 0) { /* hint; confirmed under the lock below */
      if (qclosed(q)) nclosed++;
      continue;
    }
    int res = get_core(q, v, 0, NULL);
    if (res == Q_OK) return i;
    if (res == Q_CLOSED) nclosed++;
  }
  return nclosed == st->n ? -2 : -1;
}

static int sel_ready(selstate *st) {
  for (int i = 0; i < st->n; i++)
    if (qcount(st->qs[i]) > 0) return 1;
  return 0;
}

/* Links a select waiter of one queue, whose firing also fires w. Returns
** it, or NULL with *ready set when q already has an item or is closed
** (nothing is linked then), or NULL with *ready clear when out of memory. */
void *loom__queue_watch(loom_object *o, loom_watch *watch, int *ready) {
  queue *q = (queue *)o;
  *ready = 0;
  selwaiter *w = new_selwaiter(1);
  if (w == NULL) return NULL;
  w->watch = watch;
  pthread_mutex_lock(&q->mu);
  sel_link(q, &w->nodes[0], w);
  qlock(q); /* as in select: linked first, then checked */
  *ready = qcount(q) > 0 || qclosed(q);
  qunlock(q);
  pthread_mutex_unlock(&q->mu);
  if (*ready) {
    loom__queue_unwatch(w);
    return NULL;
  }
  return w;
}

void loom__queue_unwatch(void *h) {
  selwaiter *w = (selwaiter *)h;
  sel_unlink_all(w); /* after this nothing fires it */
  loom__release(&w->obj);
}

loom_object *loom__test_queue(lua_State *L, int idx) {
  return (loom_object *)test_queue(L, idx);
}

static LOOM_TLS unsigned sel_rotation;

static int l_select(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  struct timespec ts;
  int has = loom__opt_deadline(L, 2, &ts);
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "select needs at least one queue");
  lua_settop(L, 2);
  queue **qs = (queue **)lua_newuserdatauv(L, (size_t)n * sizeof *qs, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    qs[i] = test_queue(L, -1);
    if (qs[i] == NULL) {
      const loom_class *c = loom__box_class(L, -1);
      if (c != NULL && c->destroy == queue_destroy)
        return luaL_error(L, "bad argument #1 to 'select' (queues[%d]: object "
                          "is closed)", i + 1);
      return luaL_error(L, "bad argument #1 to 'select' (queues[%d] is %s, "
                        "not a loom queue)", i + 1, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
  /* the table holds the boxes, the boxes the queues: alive until return */
  selstate st = {qs, n, (int)(sel_rotation++ % (unsigned)n)};
  loom_value v;
  selwaiter *w = NULL;
  int i, rc = 0, spun = 0;
again:
  for (;;) {
    i = sel_poll(&st, &v);
    if (i != -1) break;
    if (rc == ETIMEDOUT) break;
    if (rc == LOOM_CANCELLED) break;
    if (!spun && ncpu > 1 && !loom__cancel_requested()) {
      spun = 1;
      double end = loom__now() + SPIN_MAX_NS * 1e-9;
      for (unsigned k = 1; !sel_ready(&st); k++) {
        LOOM_CPU_RELAX();
        if ((k & 31) == 0 && loom__now() >= end) break;
      }
      continue;
    }
    if (w == NULL && (w = new_selwaiter(n)) == NULL)
      return luaL_error(L, "not enough memory to select");
    /* register on every queue; stop early if one has become ready */
    w->fired = 0;
    int ready = 0, nclosed = 0;
    for (int k = 0; k < n && !ready; k++) {
      queue *q = qs[k];
      selnode *s = &w->nodes[k];
      /* link first, then check under lk: a put either sees nsel (and
      ** fires w under mu) or its item is seen here. A close() since the
      ** last poll fired only the waiters linked before it, so closed
      ** queues are counted here too (under mu, which close() holds) */
      pthread_mutex_lock(&q->mu);
      sel_link(q, s, w);
      qlock(q);
      ready = qcount(q) > 0;
      nclosed += qclosed(q);
      qunlock(q);
      pthread_mutex_unlock(&q->mu);
    }
    if (nclosed == n) ready = 1; /* the poll will say "closed" */
    if (!ready) {
      pthread_mutex_lock(&w->mu);
      while (!w->fired && rc != ETIMEDOUT && rc != LOOM_CANCELLED)
        rc = loom__wait(&w->obj, &w->cv, &w->mu, has ? &ts : NULL);
      pthread_mutex_unlock(&w->mu);
    }
    sel_unlink_all(w);
  }
  loom__release(w ? &w->obj : NULL);
  w = NULL;
  if (i >= 0) {
    lua_rawgeti(L, 1, i + 1);
    if (loom__value_take(L, &v)) return 2;
    lua_pop(L, 1);
    stream_vanished(qs[i]);
    goto again;
  }
  if (i == -2) return fail(L, Q_CLOSED);
  if (rc == LOOM_CANCELLED) return loom__raise_cancelled(L);
  return fail(L, Q_TIMEOUT);
}

/* ------------------------------------------------------------------ */
/* classes                                                              */

#define COMMON_METHODS \
  {"put", q_put}, \
  {"get", q_get}, \
  {"put_nowait", q_put_nowait}, \
  {"get_nowait", q_get_nowait}, \
  {"put_many", q_put_many}, \
  {"get_many", q_get_many}, \
  {"qsize", q_qsize}, \
  {"empty", q_empty}, \
  {"close", q_close}, \
  {"is_closed", q_is_closed}, \
  {"iter", q_iter}

static const luaL_Reg queue_methods[] = {
  COMMON_METHODS,
  {"full", q_full},
  {"task_done", q_task_done},
  {"join", q_join},
  {NULL, NULL}
};

static const luaL_Reg simple_methods[] = {
  COMMON_METHODS,
  {NULL, NULL}
};

static const luaL_Reg queue_meta[] = {
  {"__len", q_len},
  {NULL, NULL}
};

static const loom_class fifo_class = {
  "loom.Queue", queue_destroy, queue_methods, queue_meta, NULL
};
static const loom_class lifo_class = {
  "loom.LifoQueue", queue_destroy, queue_methods, queue_meta, NULL
};
static const loom_class prio_class = {
  "loom.PriorityQueue", queue_destroy, queue_methods, queue_meta, NULL
};
static const loom_class simple_class = {
  "loom.SimpleQueue", queue_destroy, simple_methods, queue_meta, NULL
};
static const loom_class selwaiter_class = {
  "loom.select waiter", selwaiter_destroy, NULL, NULL, NULL
};

static const luaL_Reg queue_funcs[] = {
  {"Queue", l_Queue},
  {"LifoQueue", l_LifoQueue},
  {"PriorityQueue", l_PriorityQueue},
  {"SimpleQueue", l_SimpleQueue},
  {"select", l_select},
  {NULL, NULL}
};

/* Registers cls; its metatable's __index (q_index) moves each box to
** the variant metatable of its maxsize on first use (push_variant). */
static void register_queue_class(lua_State *L, const loom_class *cls) {
  loom__register_class(L, cls);
  luaL_getmetatable(L, cls->name);
  int mt = lua_gettop(L);
  lua_newtable(L); /* methods for boxes still on the class metatable */
  for (const luaL_Reg *r = cls->methods; r->name != NULL; r++) {
    lua_pushvalue(L, mt);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__methods");
  lua_pushcclosure(L, q_index, 1);
  lua_setfield(L, mt, "__index");
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, q_len, 1);
  lua_setfield(L, mt, "__len");
  lua_newtable(L); /* maxsize -> variant metatable, weak */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, mt, "__variants");
  lua_pop(L, 1);
}

static void setup_once(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  ncpu = n > 0 ? (int)n : 1;
}

static pthread_once_t setup = PTHREAD_ONCE_INIT;

void loom__open_queue(lua_State *L) {
  pthread_once(&setup, setup_once);
  if (luaL_newmetatable(L, batch_meta)) {
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, batch_meta);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  register_queue_class(L, &fifo_class);
  register_queue_class(L, &lifo_class);
  register_queue_class(L, &prio_class);
  register_queue_class(L, &simple_class);
  luaL_setfuncs(L, queue_funcs, 0);
}
