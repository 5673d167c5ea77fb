rockspec_format = "3.0"
package = "loom"
version = "scm-1"
source = {
  url = "git+https://example.invalid/loom.git",
}
description = {
  summary = "Real parallelism for Lua 5.4: threads, locks, queues, pools, async",
  detailed = [[
loom runs Lua code on native threads, each with its own lua_State (no global
lock), and gives it Python's concurrency toolkit: threads, locks and the other
synchronisation primitives, queues and channels, a thread pool with futures,
and an async event loop.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
-- loom.async's event loop runs on libuv (Debian: libuv1-dev)
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
}
build = {
  type = "builtin",
  modules = {
    ["loom.core"] = {
      sources = {
        "csrc/core.c", "csrc/error.c", "csrc/foreign.c", "csrc/future.c", "csrc/heap.c", "csrc/object.c",
        "csrc/loop.c", "csrc/loop_net.c", "csrc/pool.c", "csrc/queue.c",
        "csrc/shared.c",
        "csrc/stream.c", "csrc/sync.c", "csrc/thread.c", "csrc/transfer.c",
        "csrc/wait.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(LIBUV_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)" },
      libraries = { "pthread", "uv" },
    },
    ["loom"] = "lua/loom/init.lua",
    ["loom.sync"] = "lua/loom/sync.lua",
    ["loom.pool"] = "lua/loom/pool.lua",
    ["loom.async"] = "lua/loom/async.lua",
    ["loom.async_sync"] = "lua/loom/async_sync.lua",
    ["loom.async_net"] = "lua/loom/async_net.lua",
  },
}
