/*
** loom.h: the embedding API of loom, the only public header.
**
** A host application that embeds Lua 5.4 opens loom into its state with
** luaL_requiref(L, "loom.core", luaopen_loom_core, 0) (or lets `require`
** find the module), and may, before starting any thread:
**   - register a hook that runs on every new thread state before user code,
**     to give threads the host's own libraries;
**   - choose the stack size of loom's threads and the default pool size.
** All setters are thread-safe; they affect threads started afterwards.
*/
#ifndef LOOM_H
#define LOOM_H

#include <stddef.h>
#include "lua.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0
#define LOOM_VERSION "0.1.0"

#if defined(__GNUC__)
#define LOOM_API __attribute__((visibility("default")))
#else
#define LOOM_API
#endif

/* Runs in the new thread, on its fresh state, after the standard libraries
** and loom are available and before the thread's function is loaded.
** It may push nothing and must leave the stack as it found it. An error
** raised here fails the thread like an error in its function. */
typedef void (*loom_state_hook)(lua_State *L, void *ud);

/* Sets (or, with fn == NULL, clears) the hook for thread states. */
LOOM_API void loom_set_state_hook(loom_state_hook fn, void *ud);

/* Stack size in bytes of threads started from now on; 0 = system default. */
LOOM_API void loom_set_stack_size(size_t bytes);

/* Default max_workers of pools created without one; 0 = cpu count + 4
** capped at 32 (Python's rule). */
LOOM_API void loom_set_default_workers(int n);

/* Opens the module; returns the `loom.core` table. */
LOOM_API int luaopen_loom_core(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
