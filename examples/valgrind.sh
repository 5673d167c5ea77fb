#!/bin/sh
# Runs every example, 10,000 threads started and joined in sequence, and
# objects that hold references to themselves, under valgrind: any leak
# (definite or possible) or memory error fails. Example 02 gets a small
# input (valgrind is ~50x slower).
build=${LOOM_BUILD:-build}
status=0

# check LABEL SCRIPT [ARGS...]
check() {
  label=$1
  shift
  if LUA_CPATH="./$build/?.so;;" LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' \
     valgrind -q --leak-check=full --show-leak-kinds=definite,possible \
       --errors-for-leak-kinds=definite,possible --error-exitcode=99 \
       lua5.4 "$@" >/tmp/loom-valgrind.out 2>&1; then
    echo "valgrind clean: $label"
  else
    echo "valgrind FAILED: $label"; cat /tmp/loom-valgrind.out; status=1
  fi
}

for f in examples/[0-9][0-9]_*.lua examples/echo_server.lua; do
  case "$f" in
    *02_no_gil*) check "$f" "$f" 20000 ;;
    *) check "$f" "$f" ;;
  esac
done
check "10000 threads started and joined" spec/support/many_threads.lua 10000
check "self references" spec/support/self_references.lua
# the embedding host (its userdata cross threads by loom.h's protocol)
if [ -x examples/embed/host ]; then
  if LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' valgrind -q --leak-check=full \
       --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
       --error-exitcode=99 examples/embed/host examples/embed/script.lua >/tmp/loom-valgrind.out 2>&1; then
    echo "valgrind clean: embedding host"
  else
    echo "valgrind FAILED: embedding host"; cat /tmp/loom-valgrind.out; status=1
  fi
fi
exit $status
