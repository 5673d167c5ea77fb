/*
** core.c: luaopen_loom_core, and the host configuration of loom.h.
**
** Owns: the host settings (hook, stack size, default workers), guarded by
** config_mu, which is only ever taken alone.
*/
#include <errno.h>

#include "loom_internal.h"

static pthread_mutex_t config_mu = PTHREAD_MUTEX_INITIALIZER;
static loom_state_hook config_hook_fn;
static void *config_hook_ud;
static size_t config_stack;
static int config_workers;

void loom_set_state_hook(loom_state_hook fn, void *ud) {
  pthread_mutex_lock(&config_mu);
  config_hook_fn = fn;
  config_hook_ud = ud;
  pthread_mutex_unlock(&config_mu);
}

void loom_set_stack_size(size_t bytes) {
  pthread_mutex_lock(&config_mu);
  config_stack = bytes;
  pthread_mutex_unlock(&config_mu);
}

void loom_set_default_workers(int n) {
  pthread_mutex_lock(&config_mu);
  config_workers = n > 0 ? n : 0;
  pthread_mutex_unlock(&config_mu);
}

void loom__config_hook(loom_state_hook *fn, void **ud) {
  pthread_mutex_lock(&config_mu);
  *fn = config_hook_fn;
  *ud = config_hook_ud;
  pthread_mutex_unlock(&config_mu);
}

size_t loom__config_stack_size(void) {
  pthread_mutex_lock(&config_mu);
  size_t n = config_stack;
  pthread_mutex_unlock(&config_mu);
  return n;
}

int loom__config_default_workers(void) {
  pthread_mutex_lock(&config_mu);
  int n = config_workers;
  pthread_mutex_unlock(&config_mu);
  return n;
}

static const loom_c_api c_api = {
  LOOM_C_API_VERSION, loom_set_state_hook, loom_set_stack_size,
  loom_set_default_workers, loom_register_udata
};

#ifdef LOOM_FAILING_ALLOC
/* The allocation-failure test build: allocation number fail_at (counting
** from when it was set) fails once; 0 = none. */
#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef posix_memalign
#include <stdlib.h>
static atomic_long fail_at;

static int should_fail(void) {
  long n = atomic_load(&fail_at);
  while (n > 0) {
    if (atomic_compare_exchange_weak(&fail_at, &n, n - 1)) return n == 1;
  }
  return 0;
}

void *loom__test_malloc(size_t n) { return should_fail() ? NULL : malloc(n); }
void *loom__test_calloc(size_t n, size_t s) { return should_fail() ? NULL : calloc(n, s); }
void *loom__test_realloc(void *p, size_t n) {
  return (n > 0 && should_fail()) ? NULL : realloc(p, n);
}
void *loom__test_aligned_alloc(size_t a, size_t n) {
  return should_fail() ? NULL : aligned_alloc(a, n);
}
int loom__test_posix_memalign(void **p, size_t a, size_t n) {
  return should_fail() ? ENOMEM : posix_memalign(p, a, n);
}

/* loom.core._fail_alloc(n): the nth allocation of loom from now fails
** (0: none). Returns how many were still to go before this call. */
static int l_fail_alloc(lua_State *L) {
  long n = (long)luaL_checkinteger(L, 1);
  lua_pushinteger(L, atomic_exchange(&fail_at, n > 0 ? n : 0));
  return 1;
}
#endif

static int l_now(lua_State *L) {
  lua_pushnumber(L, loom__now());
  return 1;
}

LOOM_API int luaopen_loom_core(lua_State *L) {
  luaL_checkversion(L);
  lua_newtable(L);
  loom__open_error(L);
  loom__open_transfer(L);
  loom__open_thread(L);
  loom__open_sync(L);
  loom__open_shared(L);
  loom__open_queue(L);
  loom__open_future(L);
  loom__open_pool(L);
  loom__open_loop(L);
  lua_pushcfunction(L, l_now);
  lua_setfield(L, -2, "now");
  lua_pushliteral(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushlightuserdata(L, (void *)&c_api);
  lua_setfield(L, -2, "c_api");
#ifdef LOOM_FAILING_ALLOC
  lua_pushcfunction(L, l_fail_alloc);
  lua_setfield(L, -2, "_fail_alloc");
#endif
  return 1;
}
