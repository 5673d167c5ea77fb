#!/bin/sh
# Runs every example, and 2000 threads started and joined in sequence,
# under valgrind: any leak (definite or possible) or memory error fails.
# Example 02 gets a small input (valgrind is ~50x slower).
build=${LOOM_BUILD:-build}
status=0
for f in examples/[0-9][0-9]_*.lua; do
  args=""
  case "$f" in *02_no_gil*) args=20000 ;; esac
  if LUA_CPATH="./$build/?.so;;" LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' \
     valgrind -q --leak-check=full --show-leak-kinds=definite,possible \
       --errors-for-leak-kinds=definite,possible --error-exitcode=99 \
       lua5.4 "$f" $args >/tmp/loom-valgrind.out 2>&1; then
    echo "valgrind clean: $f"
  else
    echo "valgrind FAILED: $f"; cat /tmp/loom-valgrind.out; status=1
  fi
done
# threads started and joined in sequence leak nothing
if LUA_CPATH="./$build/?.so;;" LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' \
   valgrind -q --leak-check=full --show-leak-kinds=definite,possible \
     --errors-for-leak-kinds=definite,possible --error-exitcode=99 \
     lua5.4 spec/support/many_threads.lua 2000 >/tmp/loom-valgrind.out 2>&1; then
  echo "valgrind clean: 2000 threads started and joined"
else
  echo "valgrind FAILED: many threads"; cat /tmp/loom-valgrind.out; status=1
fi
# objects that hold references to themselves are still freed
if LUA_CPATH="./$build/?.so;;" LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' \
   valgrind -q --leak-check=full --show-leak-kinds=definite,possible \
     --errors-for-leak-kinds=definite,possible --error-exitcode=99 \
     lua5.4 spec/support/self_references.lua >/tmp/loom-valgrind.out 2>&1; then
  echo "valgrind clean: self references"
else
  echo "valgrind FAILED: self references"; cat /tmp/loom-valgrind.out; status=1
fi
exit $status
