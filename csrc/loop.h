/*
** loop.h: what loop.c (tasks, the scheduler) and loop_net.c (sockets)
** share. Only these two files include libuv.
*/
#ifndef LOOM_LOOP_H
#define LOOM_LOOP_H

#include <uv.h>

#include "loom_internal.h"

typedef struct aloop aloop;
typedef struct afut afut;

enum { S_PENDING, S_OK, S_ERROR, S_CANCELLED };
enum { W_NONE, W_READY, W_SLEEP, W_FUT, W_CROSS, W_IO };
/* uservalues of a future's userdata */
enum { UV_CO = 1, UV_RESULT, UV_CALLBACKS, UV_NAME, UV_DEFINED, NUV = 5 };

#define FUTURE_META "loom.async.Future"
#define TASK_META "loom.async.Task"


struct afut {
  uint64_t loop_id;  /* the loop it belongs to */
  aloop *loop;       /* only dereferenced while loop_id matches */
  int state;
  int is_task;
  afut *waiter;      /* the first task awaiting this one (most have one) */
  afut **waiters;    /* the others (each removed when it stops waiting) */
  int nwaiters, capwaiters;
  int nres;          /* S_OK: results stored in UV_RESULT (-1: a table of them) */
  int has_callbacks; /* UV_CALLBACKS holds a list */
  /* tasks only */
  lua_State *co;
  int wait;          /* W_* */
  int started;
  int cancel_req;    /* cancel() not yet delivered */
  int ncancels;      /* cancel() requests not taken back (asyncio's cancelling()) */
  int scheduled;     /* in the ready ring */
  uint64_t due;      /* in the loop's timer heap: when (uv_hrtime, ns) */
  uint64_t due_seq;  /* ... and its order among equal times */
  int heap_idx;      /* its place in the heap, or -1 */
  afut *awaiting;    /* W_FUT */
  loom_watch watch;  /* W_CROSS */
  loom_object *cross;
  int cross_is_thread;
  void *qwatch;      /* W_CROSS on a thread queue (async.get) */
  int timed_out;     /* the timer of a wait with a timeout fired */
  char *cancel_msg;  /* of cancel(msg), for the cancellation error */
  int seen;          /* its error was looked at (else reported at __gc) */
  uint64_t id;
};

struct aloop {
  uv_loop_t uv;
  uv_async_t wake;
  uint64_t id;
  lua_State *L;       /* the state running async.run */
  int live;           /* registry ref: task userdata -> true while not done */
  int due;            /* registry ref: futures whose callbacks must run */
  int any_due;        /* ... and whether it may hold any */
  afut **ready;       /* ring of tasks to resume */
  size_t rhead, rcount, rcap;
  afut *current;
  uv_timer_t timer;   /* armed for the earliest entry of the heap */
  afut **heap;        /* the tasks with a deadline: a binary min-heap */
  int nheap, capheap;
  uint64_t armed_due; /* what `timer` is armed for (0: not armed) */
  uint64_t due_seq;
  int ncross;         /* tasks waiting on other threads: wake stays referenced */
  int closing;        /* the main task ended: tasks spawned now start cancelled */
  double slow;        /* debug: report steps longer than this (0: off) */
  pthread_mutex_t inbox_mu;
  afut **inbox;       /* tasks woken by other threads, under inbox_mu */
  int ninbox, capinbox;
  int anchors;        /* registry ref: objects kept while they work (servers) */
  char *scratch;      /* loop_net.c: where libuv reads into (one read at a time) */
  struct fdwatch *fdwatches; /* loop_net.c: polled descriptors */
};

#pragma GCC visibility push(hidden)

/* The loop running on this thread, or NULL. */
aloop *loom__loop_running(void);
/* The loop f belongs to, when it is the one running on this thread. */
aloop *loom__loop_of(afut *f);
/* The running task, which must be the caller (else raises, naming what). */
afut *loom__loop_task(lua_State *L, const char *what);
/* Puts t in the ready ring; 0 when out of memory. */
int loom__loop_schedule(aloop *l, afut *t);
/* Arms t's timer for s seconds (t->timed_out is set when it fires during
** a W_IO wait); 0 when out of memory. */
int loom__loop_timer(aloop *l, afut *t, double s);
void loom__loop_timer_stop(afut *t);
/* Raises the cancellation error requested of t. */
int loom__loop_deliver_cancel(lua_State *L, afut *t);
/* Pushes a new task running the function at idx with the n values after
** it. */
afut *loom__loop_spawn(lua_State *L, aloop *l, int idx, int n, const char *name);
/* Makes a protected metatable with methods, __gc, __close (unless NULL)
** and __tostring. */
void loom__loop_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction gc, lua_CFunction close, lua_CFunction tostring);
/* Closes a handle of loop_net.c's at the end of a loop. */
void loom__net_close_handle(uv_handle_t *h);
void loom__net_free_loop(aloop *l);
void loom__open_net(lua_State *L); /* adds the socket calls to the table on top */

#pragma GCC visibility pop

#endif
