/*
** wait.c: monotonic time, deadlines, and waiting that t:cancel() can
** interrupt.
**
** Cancellation protocol (lock order: never a thread's registration lock
** and an object's mutex `mu` at the same time on the canceller's side):
**   waiter, holding mu:  register (owner, cv, mu) on its thread; loop
**                        { if cancelled: stop; cond_timedwait }; clear.
**   canceller:           set the flag; under the registration lock read
**                        the registration and retain owner; then lock mu,
**                        broadcast cv, unlock mu; release owner.
** The waiter checks the flag under mu after registering, so a canceller
** either sees the registration and its broadcast finds the waiter asleep
** (it needs mu), or the waiter sees the flag.
*/
#include <errno.h>
#include <math.h>

#include "loom_internal.h"

/* One attribute object for every condition variable: made once, only
** read afterwards. */
static pthread_condattr_t mono_attr;
static int mono_rc;
static pthread_once_t mono_once = PTHREAD_ONCE_INIT;

static void make_mono_attr(void) {
  mono_rc = pthread_condattr_init(&mono_attr);
  if (mono_rc == 0) mono_rc = pthread_condattr_setclock(&mono_attr, CLOCK_MONOTONIC);
}

int loom__cond_init(pthread_cond_t *cv) {
  pthread_once(&mono_once, make_mono_attr);
  if (mono_rc != 0) return mono_rc;
  return pthread_cond_init(cv, &mono_attr);
}

double loom__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void loom__deadline_after(double seconds, struct timespec *ts) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  if (seconds > 1e9) seconds = 1e9; /* ~31 years: "forever" without overflow */
  double whole = floor(seconds);
  ts->tv_sec += (time_t)whole;
  ts->tv_nsec += (long)((seconds - whole) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec += 1;
    ts->tv_nsec -= 1000000000L;
  }
}

int loom__deadline_passed(const struct timespec *dl) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > dl->tv_sec ||
         (now.tv_sec == dl->tv_sec && now.tv_nsec >= dl->tv_nsec);
}

int loom__opt_deadline(lua_State *L, int idx, struct timespec *ts) {
  if (lua_isnoneornil(L, idx)) return 0;
  lua_Number s = luaL_checknumber(L, idx);
  if (!(s >= 0)) /* also NaN */
    luaL_argerror(L, idx, "timeout must be a non-negative number");
  loom__deadline_after((double)s, ts);
  return 1;
}

int loom__spin_until(atomic_int *flag, double seconds) {
  int v = atomic_load_explicit(flag, memory_order_acquire);
  if (v) return v;
  double end = loom__now() + seconds;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      LOOM_CPU_RELAX();
      v = atomic_load_explicit(flag, memory_order_acquire);
      if (v) return v;
    }
    if (loom__now() >= end) return 0;
  }
}

int loom__cancel_requested(void) {
  loom_thread *self = loom__self();
  return self != NULL &&
         atomic_load_explicit(loom__thread_cancel_flag(self),
                              memory_order_acquire) != 0;
}

int loom__raise_cancelled(lua_State *L) {
  return loom__raise(L, "cancelled", "thread was cancelled");
}

int loom__wait(loom_object *owner, pthread_cond_t *cv, pthread_mutex_t *mu,
               const struct timespec *deadline) {
  loom_thread *self = loom__self();
  int rc;
  if (self == NULL) { /* not a loom thread: nobody can cancel it */
    rc = deadline ? pthread_cond_timedwait(cv, mu, deadline)
                  : pthread_cond_wait(cv, mu);
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
  }
  atomic_int *flag = loom__thread_cancel_flag(self);
  if (atomic_load_explicit(flag, memory_order_acquire)) return LOOM_CANCELLED;
  loom__thread_set_waiting(self, owner, cv, mu);
  if (atomic_load_explicit(flag, memory_order_seq_cst)) {
    rc = LOOM_CANCELLED;
  } else {
    rc = deadline ? pthread_cond_timedwait(cv, mu, deadline)
                  : pthread_cond_wait(cv, mu);
    if (atomic_load_explicit(flag, memory_order_acquire))
      rc = LOOM_CANCELLED;
    else if (rc != ETIMEDOUT)
      rc = 0;
  }
  loom__thread_set_waiting(self, NULL, NULL, NULL);
  return rc;
}
