/*
** error.c: loom's own error values (timeout, cancelled, broken, ...).
**
** An error value is a table {kind = "timeout", message = "..."} whose
** metatable is the registered "loom.Error"; tostring(e) is its message.
** Also the check of callable arguments (misuse raises Lua's own message).
** No shared state.
*/
#include <stdarg.h>
#include <string.h>

#include "loom_internal.h"

#define ERROR_META "loom.Error"

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, 1, "kind");
    lua_pushfstring(L, "loom error (%s)", lua_tostring(L, -1));
  }
  return 1;
}

static void push_error_meta(lua_State *L) {
  if (luaL_newmetatable(L, ERROR_META)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

static void vpush_error(lua_State *L, const char *kind, const char *fmt,
                        va_list ap) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  push_error_meta(L);
  lua_setmetatable(L, -2);
}

void loom__push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vpush_error(L, kind, fmt, ap);
  va_end(ap);
}

int loom__raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vpush_error(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int loom__is_error(lua_State *L, int idx, const char *kind) {
  int ok = 0;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, ERROR_META);
  if (lua_rawequal(L, -1, -2)) {
    if (kind == NULL) {
      ok = 1;
    } else {
      lua_getfield(L, idx, "kind");
      const char *k = lua_tostring(L, -1);
      ok = k != NULL && strcmp(k, kind) == 0;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
  return ok;
}

void loom__check_callable(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TFUNCTION) return;
  if (luaL_getmetafield(L, arg, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_typeerror(L, arg, "function");
}

static int l_is_kind(lua_State *L) {
  lua_pushboolean(L, loom__is_error(L, 1, lua_tostring(L, lua_upvalueindex(1))));
  return 1;
}

static int l_is_error(lua_State *L) {
  lua_pushboolean(L, loom__is_error(L, 1, NULL));
  return 1;
}

static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  loom__push_error(L, kind, "%s", msg);
  return 1;
}

void loom__open_error(lua_State *L) {
  static const char *const kinds[] = {"timeout", "cancelled", "broken",
                                      "closed", "shutdown", NULL};
  push_error_meta(L);
  lua_pop(L, 1);
  for (int i = 0; kinds[i] != NULL; i++) {
    lua_pushstring(L, kinds[i]);
    lua_pushcclosure(L, l_is_kind, 1);
    lua_pushfstring(L, "is_%s", kinds[i]);
    lua_insert(L, -2);
    lua_settable(L, -3);
  }
  lua_pushcfunction(L, l_is_error);
  lua_setfield(L, -2, "is_error");
  lua_pushcfunction(L, l_error);
  lua_setfield(L, -2, "error");
}
