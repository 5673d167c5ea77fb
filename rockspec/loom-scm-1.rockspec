rockspec_format = "3.0"
package = "loom"
version = "scm-1"
source = {
  url = "git+https://example.invalid/loom.git",
}
description = {
  summary = "Native threads for Lua 5.4: locks, queues, a thread pool, async on libuv",
  detailed = [[
loom runs Lua functions on native threads, each in its own lua_State, with
no global lock: CPU-bound Lua code on two threads uses two cores. Values
are copied between threads; loom's own objects cross by reference. Its API
follows Python's threading, queue, concurrent.futures and asyncio:
threads (loom.thread, loom.Thread); Lock, RLock, Condition, Semaphore,
BoundedSemaphore, Event, Barrier and Timer; shared tables (loom.shared);
Queue, LifoQueue, PriorityQueue and SimpleQueue with loom.select; a
ThreadPoolExecutor with futures, loom.wait and loom.as_completed; and
loom.async, an event loop on libuv with tasks, timers, gather, wait_for,
task groups, async primitives and bridges to threads and pools.
A C host can embed it (loom.h).]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
-- loom.async's event loop runs on libuv (Debian: libuv1-dev)
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
}
-- The Makefile builds (target rock, into build-rock/) and installs (target
-- rock-install, which removes build-rock/ again). Keep this section the same
-- in every loom rockspec.
build = {
  type = "make",
  build_target = "rock",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    UV_CFLAGS = "-I$(LIBUV_INCDIR)",
    UV_LIBS = "-L$(LIBUV_LIBDIR) -luv",
    WERROR = "",
  },
  install_target = "rock-install",
  install_variables = {
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
  },
}
