/*
** loom_internal.h: what the files of loom's C core share with each other.
** Nothing here is exported from the module (visibility hidden); internal
** names that are not static are spelled loom__*.
*/
#ifndef LOOM_INTERNAL_H
#define LOOM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"
#include "loom.h"

/* Lua's headers do not say that these never return; the static analyzers
** (clang-tidy, make lint) would otherwise follow paths past every raise. */
#ifdef __clang_analyzer__
__attribute__((noreturn)) int lua_error(lua_State *L);
__attribute__((noreturn)) int luaL_error(lua_State *L, const char *fmt, ...);
__attribute__((noreturn)) int luaL_argerror(lua_State *L, int arg, const char *msg);
__attribute__((noreturn)) int luaL_typeerror(lua_State *L, int arg, const char *tname);
#endif

/* Thread-locals live in the static TLS block made with each thread: a
** dlopen'd module's thread-locals are otherwise allocated on first use,
** and glibc aborts the process when that allocation fails. */
#define LOOM_TLS _Thread_local __attribute__((tls_model("initial-exec")))


#pragma GCC visibility push(hidden)

/*
** ---------------------------------------------------------------------
** Shared native objects (object.c)
**
** Every object that crosses threads by reference (locks, queues, threads,
** shared tables, futures...) starts with a loom_object header. Its
** refcount is the only thing that decides its lifetime: every box in every
** lua_State holds one reference, every encoded message that mentions it
** holds one, and C code that keeps a pointer beyond a call holds one.
** When the count drops to zero, cls->destroy frees it; destroy runs on
** whatever thread dropped the last reference and must not touch Lua.
**
** In a lua_State an object is a "box": a full userdata holding a
** loom_object* (NULL once closed). Each state caches its boxes in a
** weak table, so the same object always appears as the same box there
** (== and table keys work across round trips through other threads).
** ---------------------------------------------------------------------
*/
typedef struct loom_object loom_object;

typedef struct loom_class {
  const char *name;                /* metatable name, e.g. "loom.Queue" */
  void (*destroy)(loom_object *o); /* frees the object; never raises */
  const luaL_Reg *methods;         /* become the __index table */
  const luaL_Reg *meta;            /* metamethods; an __index here wins */
  /* when set, the copier pushes the object with this instead of a box
  ** (foreign.c: another library's userdata) */
  void (*push)(lua_State *L, loom_object *o);
} loom_class;

struct loom_object {
  const loom_class *cls;
  atomic_int refs;
};

void loom__object_init(loom_object *o, const loom_class *cls); /* refs = 1 */
void loom__retain(loom_object *o);
void loom__release(loom_object *o); /* NULL is fine */

/* Creates the metatable of cls in this state (idempotent). */
void loom__register_class(lua_State *L, const loom_class *cls);

/* Pushes the box of o, taking a new reference when a new box is made. */
void loom__push_object(lua_State *L, loom_object *o);
/* Pushes a box for o and hands it the caller's reference (for
** constructors: create with refs = 1, then push_owned). */
void loom__push_owned(lua_State *L, loom_object *o);
/* The same for an object just made, which no state has seen yet. */
void loom__push_new(lua_State *L, loom_object *o);

/* The object in the box at idx, or a type error / "closed" error. */
loom_object *loom__check_object(lua_State *L, int idx, const loom_class *cls);
/* The object at idx if it is a live box of cls, else NULL. */
loom_object *loom__test_object(lua_State *L, int idx, const loom_class *cls);
/* Any loom object at idx, else NULL (used by the copier). */
loom_object *loom__to_any_object(lua_State *L, int idx);
/* The class of the box at idx, also when it is closed; NULL when idx is
** not a loom box. */
const loom_class *loom__box_class(lua_State *L, int idx);
/* For a class's __tostring, which never raises: when the value at 1 is a
** closed box, pushes "<class name> (closed)" and returns 1; else 0. */
int loom__tostring_closed(lua_State *L);

/* Hot methods: after loom__bind_methods(L, cls) (in the opener, once the
** class is registered) every method of cls has the class metatable as
** upvalue 1, and loom__check_self checks argument 1 with one comparison
** (falling back to loom__check_object, which also gives the errors). */
void loom__bind_methods(lua_State *L, const loom_class *cls);
loom_object *loom__check_self(lua_State *L, const loom_class *cls);

#define LOOM_CHECK(L, i, T, cls) ((T *)loom__check_object((L), (i), (cls)))

/*
** ---------------------------------------------------------------------
** Values crossing states (transfer.c)
**
** A loom_msg is a private binary encoding of a list of Lua values. It
** belongs to no lua_State and may be decoded any number of times, in any
** state, from any thread (decoding never changes it). It holds one
** reference on each loom object it mentions.
**
** A loom_value holds one value for hot paths (queue slots): nil, booleans,
** numbers and strings up to LOOM_INLINE_STR bytes live inline without any
** allocation; longer strings take one malloc of their bytes; loom objects
** a reference; anything else a loom_msg.
** ---------------------------------------------------------------------
*/
typedef struct loom_msg loom_msg;

/* Encodes the n values from stack index first. Raises (with nothing
** allocated) when a value cannot be copied; the message names its path
** starting with `what` ("args" gives args[2].log). Never call with a
** mutex held. */
loom_msg *loom__encode(lua_State *L, int first, int n, const char *what);
/* Encodes a function and its nargs arguments from stack index first, for a
** call in another state: errors name them "target" and "args[i]". */
loom_msg *loom__encode_call(lua_State *L, int first, int nargs);
/* Like loom__encode for a message that will live inside `owner`: a
** reference to owner in the values is not counted (it would keep owner
** alive forever). Decode such a message only while owner is alive. */
loom_msg *loom__encode_owned(lua_State *L, int first, int n, const char *what,
                             loom_object *owner);
/* Pushes the values of m; returns how many. Raises only on memory errors
** or when a module named in m cannot be required here. */
int loom__decode(lua_State *L, const loom_msg *m);
void loom__msg_free(loom_msg *m); /* NULL is fine */
loom_msg *loom__msg_dup(const loom_msg *m); /* NULL when out of memory */

#define LOOM_INLINE_STR 22

typedef struct loom_value {
  union {
    struct {
      uint8_t tag;
      uint8_t len;
      char bytes[LOOM_INLINE_STR];
    } s;
    struct {
      uint8_t tag;
      union {
        lua_Integer i;
        lua_Number n;
        void *p;
      } v;
      size_t len;
    } x;
  } u;
} loom_value;

/*
** Streams (stream.c): a message handed to its reader while the writer is
** still encoding it. Only transfer.c writes and reads them; a container
** that accepts them (queue.c) just carries the loom_value.
*/
typedef struct loom_stream loom_stream;
/* Called by the writer when its encode fails after the stream was
** delivered: take the stream back out of `owner` if it is still there. */
typedef void loom_stream_withdraw(loom_object *owner, loom_stream *s);
loom_stream *loom__stream_new(loom_object *owner,
                              loom_stream_withdraw *withdraw);
void loom__stream_retain(loom_stream *s);
void loom__stream_release(loom_stream *s); /* NULL is fine */
/* Writer: appends n bytes as one chunk and takes a reference on each of
** the objects they mention; returns 0 when out of memory. */
int loom__stream_append(loom_stream *s, const void *p, size_t n,
                        loom_object *const *objs, int nobjs);
void loom__stream_finish(loom_stream *s); /* drops the writer's reference */
void loom__stream_abort(loom_stream *s);  /* withdraws, then the same */
/* Reader (one only): the next chunk, waiting for it if need be. Returns
** 1 with *p, *n set, 0 at the end, -1 when the writer aborted. */
int loom__stream_read(loom_stream *s, const unsigned char **p, size_t *n);

/* How a container accepts a value as a stream (loom__value_set_streamed).
** start(ud, v) is called once the first chunk is ready; it gets the
** holder's reference in v (tag set) and returns 1 when it delivered a copy
** of *v (and keeps the reference), 0 to decline. */
typedef struct loom_stream_offer {
  int (*start)(void *ud, const loom_value *v);
  void *ud;
  loom_object *owner; /* given to withdraw */
  loom_stream_withdraw *withdraw;
} loom_stream_offer;

/* Stores the value at idx into v (v's old content is not freed). Raises
** like loom__encode, leaving v untouched. */
void loom__value_set(lua_State *L, int idx, loom_value *v, const char *what);
/* The same for a slot that lives inside `owner` (see loom__encode_owned). */
void loom__value_set_owned(lua_State *L, int idx, loom_value *v,
                           const char *what, loom_object *owner);
/* Like loom__value_set, but a value whose encoding outgrows one chunk is
** offered to offer->start as a stream, so a reader can decode it while it
** is being written. Returns 1 when start accepted it (the value is then
** delivered, and a later error withdraws it), 0 when v was set as usual. */
int loom__value_set_streamed(lua_State *L, int idx, loom_value *v,
                             const char *what, const loom_stream_offer *offer);
/* Whether v carries stream s (for withdraw). */
int loom__value_is_stream(const loom_value *v, const loom_stream *s);
/* Pushes v (not a stream: streams are read once, with take). */
void loom__value_push(lua_State *L, const loom_value *v);
void loom__value_free(loom_value *v); /* leaves v as nil */
/* Pushes v and frees it, also when decoding raises (for values taken out
** of a container, which nobody else would free). Returns 0, with nothing
** pushed, when v was a stream whose writer failed: the value never was. */
int loom__value_take(lua_State *L, loom_value *v);
/* The same, but an error while decoding is not raised: returns -1 with
** the error value pushed. A message is then left in v as it was (it may
** be put back where it came from); a stream, which is read only once, is
** freed as loom__value_take frees it. */
int loom__value_try_take(lua_State *L, loom_value *v);
/* Whether v carries a stream (which can be taken once, never pushed). */
int loom__value_is_streamed(const loom_value *v);

/*
** ---------------------------------------------------------------------
** Error values (error.c)
**
** loom's own error values are tables {kind=, message=} with the
** registered metatable "loom.Error" (__tostring gives the message). They
** cross states by name like every registered metatable, so
** loom.is_timeout(e) works on an error re-raised from another thread.
** ---------------------------------------------------------------------
*/
void loom__push_error(lua_State *L, const char *kind, const char *fmt, ...);
int loom__raise(lua_State *L, const char *kind, const char *fmt, ...);
int loom__is_error(lua_State *L, int idx, const char *kind);
void loom__open_error(lua_State *L); /* adds is_timeout etc. to table on top */
/* Misuse: raises Lua's "bad argument #arg to 'f' (function expected, got
** nil)" unless the value at arg can be called (a function, or a value
** whose metatable has __call). */
void loom__check_callable(lua_State *L, int arg);

/*
** ---------------------------------------------------------------------
** Time, deadlines and cancellable waiting (wait.c)
**
** Condition variables use CLOCK_MONOTONIC; create them with
** loom__cond_init. A blocking loom call computes its deadline with
** loom__opt_deadline *before* taking any mutex (it may raise), then waits
** with loom__wait, which a t:cancel() of the waiting thread interrupts.
** ---------------------------------------------------------------------
*/
#define LOOM_CANCELLED (-1)

int loom__cond_init(pthread_cond_t *cv);
double loom__now(void); /* monotonic seconds */
void loom__deadline_after(double seconds, struct timespec *ts);
int loom__deadline_passed(const struct timespec *dl);
/* Reads an optional timeout (seconds) at idx: none/nil gives 0 (no
** deadline); a number >= 0 fills *ts and gives 1; negative or NaN raises
** "timeout must be a non-negative number". */
int loom__opt_deadline(lua_State *L, int idx, struct timespec *ts);

/* Waits on cv with mu held (held again on return). deadline may be NULL.
** `owner` is the object that owns cv/mu; it is kept alive for a
** concurrent canceller. Returns 0 when woken (perhaps spuriously),
** ETIMEDOUT, or LOOM_CANCELLED when this thread has been cancelled (also
** when it was cancelled before the call). */
int loom__wait(loom_object *owner, pthread_cond_t *cv, pthread_mutex_t *mu,
               const struct timespec *deadline);

/* Spins (with a CPU pause) for at most `seconds` until *flag is non-zero;
** returns its value. For the short waits where sleeping and being woken
** costs more than the wait itself; callers then fall back to loom__wait. */
int loom__spin_until(atomic_int *flag, double seconds);

#if defined(__x86_64__) || defined(__i386__)
#define LOOM_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define LOOM_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define LOOM_CPU_RELAX() ((void)0)
#endif

/* Whether the calling thread has been cancelled (a cheap atomic load). */
int loom__cancel_requested(void);
/* Raises the cancellation error; call with no mutex held. */
int loom__raise_cancelled(lua_State *L);

/*
** ---------------------------------------------------------------------
** Threads (thread.c)
** ---------------------------------------------------------------------
*/
typedef struct loom_thread loom_thread;

/* The loom thread running on this OS thread, or NULL (main/host thread). */
loom_thread *loom__self(void);
/* loom.get_ident() of the caller: unique per loom thread (also when OS
** threads are reused) and per other OS thread; never 0. */
uint64_t loom__thread_ident(void);
/* Whether the exit join has begun: the state that opened loom is closing
** (its sentinel's __gc ran), so a thread started now would not be waited
** for. Set once, never reset; start() refuses from then on. */
int loom__exiting(void);
/* The cancellation flag of t (for wait.c). */
atomic_int *loom__thread_cancel_flag(loom_thread *t);
/* Registers / clears the object t is blocked on (wait.c protocol). */
void loom__thread_set_waiting(loom_thread *t, loom_object *owner,
                              pthread_cond_t *cv, pthread_mutex_t *mu);

/* Opens the standard libraries a thread state opens lazily (io, os...),
** so that what they register (e.g. the "FILE*" metatable) exists. */
void loom__open_lazy_libs(lua_State *L);
/* Snapshot of the creator's package.path/cpath, and of the entries of its
** package.preload that can be copied, for a later new state. */
typedef struct loom_paths {
  char *path;
  char *cpath;
  loom_msg *preload; /* a table name -> loader, or NULL */
} loom_paths;
/* A copy of src into dst (0 on OOM, dst then empty). */
int loom__paths_copy(loom_paths *dst, const loom_paths *src);
int loom__paths_capture(lua_State *L, loom_paths *p); /* 0 on OOM */
void loom__paths_free(loom_paths *p);
lua_State *loom__state_open(const loom_paths *p, char *err, size_t errlen);

/*
** Completion watchers (future.c): something that waits for several
** futures or threads at once links a loom_watch into each of them. fire
** is called once, with the watched object's mutex held: it may take only
** leaf locks and must not call Lua. The watched object unlinks w before
** firing it; unlinking an already fired watch does nothing.
*/
typedef struct loom_watch loom_watch;
struct loom_watch {
  void (*fire)(loom_watch *w, int failed); /* failed: ended with an error */
  loom_watch *prev, *next;
  int linked;
};
void loom__watch_link(loom_watch **head, loom_watch *w);
void loom__watch_unlink(loom_watch **head, loom_watch *w);
void loom__watch_fire_all(loom_watch **head, int failed);

/*
** Futures (future.c): the result of a task that runs elsewhere. A pool
** makes one per task with `extra` bytes of its own (the queued task) and
** completes it from the state of the thread that ran it; completing runs
** the done-callbacks in that state, after every lock is released.
*/
typedef struct loom_future loom_future;
/* A pending future (refs = 1); free_extra(extra) runs when it is freed. */
loom_future *loom__future_new(size_t extra, void (*free_extra)(void *));
void *loom__future_extra(loom_future *f);
loom_future *loom__test_future(lua_State *L, int idx);
/* Pending -> running on the calling loom thread; 0 when it was cancelled
** (the task must then be dropped). */
int loom__future_start(loom_future *f);
/* Completes a running future with the n values from stack index first,
** or (ok == 0) with the error value at `first` and its traceback at
** first + 1 (a string or nil). Raises only before anything changed (a
** value that cannot be copied); then runs the callbacks, in L. Clears the
** calling worker's cancellation under the future's lock. */
void loom__future_finish(lua_State *L, loom_future *f, int ok, int first,
                         int n);
/* Fails a pending or running future with a loom error value. */
void loom__future_fail(lua_State *L, loom_future *f, const char *kind,
                       const char *message);
/* loom.async's get on a thread queue (queue.c): w fires once when q has
** an item or is closed. Returns a handle for unwatch, or NULL with *ready
** set when it already has or is (or NULL, *ready clear: out of memory). */
loom_object *loom__test_queue(lua_State *L, int idx);
void *loom__queue_watch(loom_object *q, loom_watch *w, int *ready);
void loom__queue_unwatch(void *h);

/* Like loom__thread_watch, for a future (loom.async awaits them). */
int loom__future_watch(loom_object *f, loom_watch *w, int *failed);
void loom__future_unwatch(loom_object *f, loom_watch *w);
/* Python's cancel(): only while pending; runs the callbacks in L. */
int loom__future_cancel(lua_State *L, loom_future *f);
/* Beyond Python: a running task gets the cancellation error at its
** worker's next blocking loom call (or Lua instruction, with the cancel
** hook); a pending one is cancelled. Returns whether either happened. */
int loom__future_interrupt(lua_State *L, loom_future *f);

/* Threads as futures, for loom.wait and loom.as_completed: watch returns
** 1 (with *failed set) when t is already done, else links w. */
loom_object *loom__test_thread(lua_State *L, int idx);
int loom__thread_watch(loom_object *t, loom_watch *w, int *failed);
void loom__thread_unwatch(loom_object *t, loom_watch *w);

/* Pool workers (pool.c): a loom thread whose state runs body(ud) (called
** as a Lua C function with ud as its light userdata argument) instead of
** a copied function; failed(ud) runs instead when no state could be made
** for it. Returns the thread with a reference for the caller, or NULL
** with *err set to an errno (then neither runs). */
loom_thread *loom__thread_start_native(const char *name, int cancel_hook,
                                       const loom_paths *paths,
                                       lua_CFunction body,
                                       void (*failed)(void *ud), void *ud,
                                       int *err);
/* A malloc'd copy of t's name (t NULL: the main thread's); NULL on OOM. */
char *loom__thread_name(loom_thread *t);
/* Makes a running thread a daemon: the exit no longer waits for it. */
void loom__thread_set_daemon(loom_thread *t);
/* t:cancel(): the cancellation flag, and a wake-up of its current wait. */
void loom__thread_cancel(loom_thread *t);
/* Only the wake-up, for a caller that raised the flag itself. */
void loom__thread_wake(loom_thread *t);
/* Message handler for lua_pcall: the error becomes {value, traceback}. */
int loom__traceback_handler(lua_State *L);
/* Clears the calling thread's cancellation (a worker between tasks). */
void loom__thread_clear_cancel(void);
/* At exit, before threads are joined: shut every pool down (pool.c). */
void loom__pools_exit(void);

/* A bare state with loom's allocator (heap.c), and its closing. */
lua_State *loom__heap_newstate(void);
void loom__heap_close(lua_State *L);


/* Host configuration (core.c), read under a lock. */
size_t loom__config_stack_size(void);
int loom__config_default_workers(void);
void loom__config_hook(loom_state_hook *fn, void **ud);

/* Per-file openers, called by luaopen_loom_core with the module table on
** top: each registers its classes and adds its functions. */
void loom__open_transfer(lua_State *L); /* loom.copy */
void loom__open_thread(lua_State *L);
void loom__open_sync(lua_State *L);   /* sync.c: Lock, RLock, Condition... */
void loom__open_shared(lua_State *L); /* shared.c: loom.shared */
void loom__open_queue(lua_State *L);  /* queue.c: Queue family, select */
void loom__open_future(lua_State *L); /* future.c: wait, as_completed */
void loom__open_pool(lua_State *L);   /* pool.c: ThreadPoolExecutor */
void loom__open_loop(lua_State *L);
/* foreign.c: a registered userdata at idx as a new loom object (one
** reference, the caller's), or NULL when its type is not registered;
** raises when its exporter refuses it. */
loom_object *loom__foreign_export(lua_State *L, int idx);   /* loop.c: the core of loom.async */

#pragma GCC visibility pop

#endif
