-- luacheck config for `make lint` (luacheck over lua/ spec/ examples/ bench/).
std = "lua54"

files["spec"] = { std = "+busted" }

-- Globals the code really uses:
-- example 3's point is that every thread state has its own `counter`;
files["examples/03_isolated_states.lua"] = { globals = { "counter" } }
-- examples/embed/host gives every state of its script these two;
files["examples/embed/script.lua"] = { read_globals = { "HOST_NAME", "host" } }
-- tasks and initializers of these specs keep state in their worker's globals.
files["spec/pool_spec.lua"] = {
  globals = { "kept_value", "counter", "survived", "BASE", "COUNT", "INIT" },
}

exclude_files = {
  -- owned by async work, lint pending (2 findings: an unused function and
  -- an unused variable)
  "lua/loom/async.lua",
}
