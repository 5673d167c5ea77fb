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

#ifdef __cplusplus
extern "C" {
#endif

/* inside extern "C": upstream Lua's lua.h has no guards of its own */
#include "lua.h"

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

/*
** Userdata of other C libraries crossing threads. Values are copied between
** loom threads, and a userdata that loom does not know is refused. A host
** (or the library itself) makes a type cross by registering, under the
** metatable name the library gives luaL_newmetatable (its `__name`), three
** functions; the library's own code needs no change:
**
**   export_udata(L, idx, ud) runs in the sending thread for the userdata
**     at idx and returns a pointer that stands for its value: a malloc'ed
**     copy of its C struct (copied), or the shared C object with one more
**     reference taken (shared). NULL refuses: the send raises.
**   import_udata(L, p, ud) runs in a receiving thread and pushes exactly
**     one value, a new userdata made from p (a copy, or a new box that
**     takes a reference of its own) with the library's metatable (the
**     thread may not have loaded the library yet: if luaL_getmetatable
**     finds nothing, load it first, e.g. with luaL_requiref). loom
**     keeps p: it may import the same p again (every read of a
**     loom.shared field decodes anew), in any thread, at the same time.
**   drop_udata(p, ud) runs once no message mentions p any more, in
**     whichever thread freed the last one: free the copy, or drop the
**     reference. May be NULL.
**
** Each occurrence of the userdata in a message arrives as its own value.
** Registering a name again replaces its functions (values already in
** flight keep the old ones); ops == NULL unregisters it. Returns 0, or -1
** when the name is NULL or too long (63 bytes), a function is missing, or
** 64 types are registered already. Thread-safe.
*/
typedef struct loom_udata_ops {
  void *(*export_udata)(lua_State *L, int idx, void *ud);
  void (*import_udata)(lua_State *L, void *p, void *ud);
  void (*drop_udata)(void *p, void *ud);
  void *ud;
} loom_udata_ops;

LOOM_API int loom_register_udata(const char *tname, const loom_udata_ops *ops);

/*
** The same entry points as a table of pointers, for a host that loads
** loom/core.so through `require` and so cannot link against it:
**   lua_getfield(L, -1, "c_api") on the loom.core table gives a light
**   userdata pointing to this struct (check `version` first).
*/
typedef struct loom_c_api {
  int version; /* LOOM_C_API_VERSION */
  void (*set_state_hook)(loom_state_hook fn, void *ud);
  void (*set_stack_size)(size_t bytes);
  void (*set_default_workers)(int n);
  int (*register_udata)(const char *tname, const loom_udata_ops *ops);
} loom_c_api;

#define LOOM_C_API_VERSION 1

/* Opens the module; returns the `loom.core` table. */
LOOM_API int luaopen_loom_core(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
