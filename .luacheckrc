-- luacheck config for `make lint` (luacheck over lua/ spec/ examples/ bench/).
std = "lua54"

-- spec descriptions (`it` names) run long: 160 columns there
files["spec"] = { std = "+busted", max_line_length = 160 }

-- Globals the code really uses:
-- example 3's point is that every thread state has its own `counter`;
files["examples/03_isolated_states.lua"] = { globals = { "counter" } }
-- examples/embed/host gives every state of its script these two;
files["examples/embed/script.lua"] = { read_globals = { "HOST_NAME", "host" } }
-- tasks and initializers of these specs keep state in their worker's globals.
files["spec/pool_spec.lua"] = {
  globals = { "kept_value", "counter", "survived", "BASE", "COUNT", "INIT" },
}


