# loom: build, test, bench, install, sanitizer builds.
LUA        ?= lua5.4
LUA_VERSION = 5.4
PKG_CONFIG ?= pkg-config
LUA_INCDIR ?= $(shell $(PKG_CONFIG) --variable=includedir lua$(LUA_VERSION) 2>/dev/null || echo /usr/include)/lua$(LUA_VERSION)
BUSTED     ?= busted
PREFIX     ?= /usr/local
DESTDIR    ?=
LUA_LIBDIR_INSTALL ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR_INSTALL ?= $(PREFIX)/share/lua/$(LUA_VERSION)
DOCDIR     ?= $(PREFIX)/share/doc/loom
PKGCONFIGDIR ?= $(PREFIX)/lib/pkgconfig
VERSION     = $(shell sed -n 's/^\#define LOOM_VERSION "\(.*\)"/\1/p' csrc/loom.h)

CC      ?= cc
OPT     ?= -O2 -g
WERROR  ?= -Werror
WARN    = -Wall -Wextra $(WERROR) -Wshadow -Wmissing-prototypes -Wstrict-prototypes
CFLAGS  ?= $(OPT)
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(CFLAGS) $(WARN) -fPIC -pthread \
             -fvisibility=hidden -I$(LUA_INCDIR) -Icsrc $(UV_CFLAGS)
LIBFLAG ?= -shared
LDFLAGS ?=
# loom.async's loop (csrc/loop.c) runs on libuv
UV_CFLAGS = $(shell $(PKG_CONFIG) --cflags libuv 2>/dev/null)
UV_LIBS   = $(shell $(PKG_CONFIG) --libs libuv 2>/dev/null || echo -luv)

SRCS = $(wildcard csrc/*.c)
HDRS = $(wildcard csrc/*.h)
BUILD ?= build
OBJS = $(SRCS:csrc/%.c=$(BUILD)/obj/%.o)
SO   = $(BUILD)/loom/core.so

.PHONY: san-run all test asan tsan oom bench install uninstall clean examples demo valgrind embed deps \
        stress stress-tsan stress-asan stress-run rock rock-install lint lint-lua lint-cppcheck lint-clang-tidy

all: $(SO)

$(BUILD)/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(ALL_CFLAGS) $(OBJS) -o $@ $(LDFLAGS) $(UV_LIBS)

# The embedding example: a C host with loom linked in (a host links liblua;
# the module itself never does).
EMBED = examples/embed/host
embed: $(EMBED)
$(EMBED): examples/embed/host.c $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fvisibility=default examples/embed/host.c $(SRCS) -o $@ \
	  $$($(PKG_CONFIG) --libs lua$(LUA_VERSION) 2>/dev/null || echo -llua$(LUA_VERSION)) -lm -ldl $(UV_LIBS) $(LDFLAGS)

# Installs what building and testing need on Debian (once; needs root).
deps:
	@command -v lua5.4 >/dev/null && command -v busted >/dev/null && \
	  command -v luarocks >/dev/null && test -f $(LUA_INCDIR)/lua.h && \
	  $(PKG_CONFIG) --exists libuv 2>/dev/null && \
	  lua5.4 -e 'require "socket"' 2>/dev/null || \
	  { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); $$SUDO apt-get update -q && \
	    $$SUDO apt-get install -y -q lua5.4 liblua5.4-dev lua-busted luarocks make gcc python3 lua-socket libuv1-dev pkg-config; }

# A C library whose userdata the specs send across threads (loom.h's
# userdata protocol); a module like any other, built with $(BUILD)'s flags.
UDATA = $(BUILD)/udata_lib.so
$(UDATA): spec/support/udata_lib.c csrc/loom.h
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(ALL_CFLAGS) $< -o $@ $(LDFLAGS)

# Runs the whole spec suite against $(BUILD).
test: $(SO) $(EMBED) $(UDATA)
	LOOM_BUILD=$(BUILD) $(LUA) spec/run.lua $(SPEC)

# Linters (Debian: lua-check cppcheck clang-tidy), each with its config:
# .luacheckrc, .cppcheck-suppressions, .clang-tidy. `make -k lint` runs all
# three even when one fails. The embedding example is the caller of
# loom.h's setters, so it is checked with the sources.
LUACHECK   ?= luacheck
CPPCHECK   ?= cppcheck
CLANG_TIDY ?= clang-tidy
LINT_C = $(SRCS) examples/embed/host.c
CPPCHECK_FLAGS = --std=c11 -D_POSIX_C_SOURCE=200809L -Icsrc --library=posix \
  --enable=warning,style,performance,portability,unusedFunction \
  --inline-suppr --suppressions-list=.cppcheck-suppressions --error-exitcode=1 --quiet

lint: lint-lua lint-cppcheck lint-clang-tidy

lint-lua:
	$(LUACHECK) -q lua spec examples bench

lint-cppcheck:
	$(CPPCHECK) $(CPPCHECK_FLAGS) $(LINT_C)

lint-clang-tidy:
	$(CLANG_TIDY) --quiet $(LINT_C) -- $(ALL_CFLAGS)

demo: $(SO)
	LOOM_BUILD=$(BUILD) $(LUA) examples/run_all.lua

# Sanitizer builds: the module and a small Lua runner (spec/support/) are
# built with the sanitizer, and the whole suite runs under that runner.
LUA_LIBS = $$($(PKG_CONFIG) --libs lua$(LUA_VERSION) 2>/dev/null || echo -llua$(LUA_VERSION)) -lm -ldl
SAN_RUN = LOOM_LUA=$(BUILD)/lua LOOM_BUILD=$(BUILD) $(BUILD)/lua spec/run.lua $(SPEC)

# -rdynamic: under TSan the runner's __longjmp_chk must take liblua's calls
# (see lua_runner.c).
$(BUILD)/lua: spec/support/lua_runner.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ -rdynamic $(LDFLAGS) $(LUA_LIBS)

ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# ASan checks more when each Lua object of a thread state is a malloc block.
ASAN_HEAP ?= -DLOOM_SYSTEM_HEAP
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g $(ASAN_FLAGS) $(ASAN_HEAP)" LDFLAGS="$(ASAN_FLAGS)" \
	  build-asan/loom/core.so build-asan/lua build-asan/udata_lib.so
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  LOOM_SANITIZER=asan $(MAKE) --no-print-directory BUILD=build-asan san-run

# libuv is not instrumented: spec/support/tsan.supp says what that hides.
TSAN_OPTIONS_ALL = halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/spec/support/tsan.supp

tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" \
	  build-tsan/loom/core.so build-tsan/lua build-tsan/udata_lib.so
	TSAN_OPTIONS="$(TSAN_OPTIONS_ALL)" \
	  LOOM_SANITIZER=tsan $(MAKE) --no-print-directory BUILD=build-tsan san-run
	$(MAKE) --no-print-directory EMBED=build-tsan/host OPT="-O1 -g -fsanitize=thread" \
	  LDFLAGS="-fsanitize=thread" build-tsan/host
	LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' TSAN_OPTIONS="$(TSAN_OPTIONS_ALL)" \
	  build-tsan/host examples/embed/script.lua >/dev/null && echo "embedding host clean under TSan"

# Allocation-failure test build: loom's own mallocs can be made to fail one
# at a time (csrc/failalloc.h); spec/oom_spec.lua walks them under ASan.
oom:
	$(MAKE) BUILD=build-oom OPT="-O1 -g $(ASAN_FLAGS) -DLOOM_FAILING_ALLOC -include csrc/failalloc.h" \
	  LDFLAGS="$(ASAN_FLAGS)" build-oom/loom/core.so build-oom/lua
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 LOOM_SANITIZER=asan \
	  $(MAKE) --no-print-directory BUILD=build-oom SPEC=spec/oom_spec.lua san-run

san-run:
	$(SAN_RUN)

# The randomized stress run (stress/stress.lua): scenarios drawn from a
# printed seed until STRESS_SECONDS (300; 30 under a sanitizer) are spent;
# STRESS_SEED=n reproduces a run, STRESS_ROUND=k one round of it. Ends with
# "N passed, N failed" (N = scenarios run). The run's own watchdog names a
# stuck round; the outer timeout is a last resort.
STRESS_RUN = LOOM_BUILD=$(BUILD) STRESS_SECONDS=$${STRESS_SECONDS:-$(STRESS_DEFAULT)} \
  timeout -k 10 $$(( $${STRESS_SECONDS:-$(STRESS_DEFAULT)} + 1800 )) $(STRESS_LUA) stress/stress.lua
STRESS_DEFAULT = 300
STRESS_LUA = $(LUA)

stress: $(SO)
	$(STRESS_RUN)

stress-run:
	$(STRESS_RUN)

# The same against the sanitizer builds, for a short time by default;
# under ASan with LeakSanitizer on (whatever the run leaves unfreed when
# the state closes fails it).
stress-tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" \
	  build-tsan/loom/core.so build-tsan/lua
	TSAN_OPTIONS="$(TSAN_OPTIONS_ALL)" LOOM_SANITIZER=tsan \
	  $(MAKE) --no-print-directory BUILD=build-tsan STRESS_DEFAULT=30 STRESS_LUA=build-tsan/lua stress-run

stress-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g $(ASAN_FLAGS) $(ASAN_HEAP)" LDFLAGS="$(ASAN_FLAGS)" \
	  build-asan/loom/core.so build-asan/lua
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 LOOM_SANITIZER=asan \
	  $(MAKE) --no-print-directory BUILD=build-asan STRESS_DEFAULT=30 STRESS_LUA=build-asan/lua stress-run

bench: $(SO)
	LOOM_BUILD=$(BUILD) $(LUA) bench/run.lua

valgrind: $(SO) $(EMBED)
	LOOM_BUILD=$(BUILD) sh examples/valgrind.sh

# The module, its Lua files, loom.h, a loom.pc for C hosts, and the docs.
install: $(SO)
	install -d $(DESTDIR)$(LUA_LIBDIR_INSTALL)/loom $(DESTDIR)$(LUA_SHAREDIR_INSTALL)/loom
	install -m 755 $(SO) $(DESTDIR)$(LUA_LIBDIR_INSTALL)/loom/core.so
	install -m 644 lua/loom/*.lua $(DESTDIR)$(LUA_SHAREDIR_INSTALL)/loom/
	install -d $(DESTDIR)$(PREFIX)/include
	install -m 644 csrc/loom.h $(DESTDIR)$(PREFIX)/include/loom.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@MODULEDIR@|$(LUA_LIBDIR_INSTALL)/loom|' \
	    -e 's|@LUA_INCDIR@|$(LUA_INCDIR)|' -e 's|@VERSION@|$(VERSION)|' loom.pc.in > $(BUILD)/loom.pc
	install -d $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(BUILD)/loom.pc $(DESTDIR)$(PKGCONFIGDIR)/loom.pc
	install -d $(DESTDIR)$(DOCDIR)/docs
	install -m 644 README.md LICENSE $(DESTDIR)$(DOCDIR)/
	install -m 644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/

uninstall:
	rm -rf $(DESTDIR)$(LUA_LIBDIR_INSTALL)/loom $(DESTDIR)$(LUA_SHAREDIR_INSTALL)/loom \
	  $(DESTDIR)$(PREFIX)/include/loom.h $(DESTDIR)$(PKGCONFIGDIR)/loom.pc $(DESTDIR)$(DOCDIR)

# What the rockspecs run (build type "make"): LuaRocks passes its CFLAGS,
# LIBFLAG, LUA_INCDIR, libuv's paths and the rock's LIBDIR and LUADIR. The
# build goes to build-rock/, which rock-install removes once the rock is
# installed, so `luarocks make` leaves nothing in the source tree.
ROCK_BUILD = build-rock
rock:
	$(MAKE) BUILD=$(ROCK_BUILD) $(ROCK_BUILD)/loom/core.so

rock-install:
	install -d $(LIBDIR)/loom $(LUADIR)/loom
	install -m 755 $(ROCK_BUILD)/loom/core.so $(LIBDIR)/loom/core.so
	install -m 644 lua/loom/*.lua $(LUADIR)/loom/
	rm -rf $(ROCK_BUILD)

clean:
	rm -rf build build-asan build-tsan build-oom $(ROCK_BUILD) $(EMBED)

# ---- the copier's fuzzer (fuzz/README.md) ----------------------------
# `make fuzz` builds fuzz/fuzz_copy.c with clang's libFuzzer, ASan and
# UBSan, and runs it for FUZZ_SECONDS on one core, growing
# $(FUZZ_BUILD)/corpus from the seeds in fuzz/corpus; what it finds goes to
# fuzz/crashes/. `make fuzz-replay` runs the corpus through the same target
# built with $(CC) and the sanitizers, without libFuzzer (CI does this).
# `make fuzz-merge` minimizes fuzz/corpus with what runs have added.
# FUZZ_LUA_SRC=<Lua 5.4 source directory> builds Lua itself into the fuzz
# target, with ASan and its API checks (LUA_USE_APICHECK) on.
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build/fuzz
FUZZ_CC      ?= clang
FUZZ_FLAGS   ?=
FUZZ_LUA_SRC ?=
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g $(WARN) -pthread -DLOOM_SYSTEM_HEAP \
                -Icsrc -I$(FUZZ_BUILD) $(UV_CFLAGS)
FUZZ_ENV      = ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1} \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/fuzz/ubsan.supp
ifeq ($(FUZZ_LUA_SRC),)
FUZZ_LUA_INC  = -I$(LUA_INCDIR)
FUZZ_LUA_OBJS =
FUZZ_LUA_LIBS = $(LUA_LIBS)
else
FUZZ_LUA_INC  = -I$(FUZZ_LUA_SRC) -DLUA_USE_APICHECK
FUZZ_LUA_OBJS = $(patsubst $(FUZZ_LUA_SRC)/%.c,$(FUZZ_BUILD)/lua/%.o,$(filter-out \
                  %/lua.c %/luac.c %/onelua.c %/ltests.c,$(wildcard $(FUZZ_LUA_SRC)/*.c)))
FUZZ_LUA_LIBS = -lm -ldl
endif

.PHONY: fuzz fuzz-replay fuzz-merge

# The generator becomes a C array of its bytes, 0-terminated.
FUZZ_EMBED = local s = io.read("a") io.write("static const unsigned char fuzz_copy_lua[] = {") for i = 1, \#s do io.write(s:byte(i), i % 24 == 0 and ",\n" or ",") end io.write("0};\n")

$(FUZZ_BUILD)/fuzz_copy_lua.h: fuzz/fuzz_copy.lua
	@mkdir -p $(dir $@)
	$(LUA) -e '$(FUZZ_EMBED)' < $< > $@

# Lua's own sources: ASan, no coverage (the fuzzer steers by loom's code).
$(FUZZ_BUILD)/lua/%.o: $(FUZZ_LUA_SRC)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O1 -g $(FUZZ_SAN) -DLUA_USE_LINUX -DLUA_USE_APICHECK -c $< -o $@

$(FUZZ_BUILD)/fuzz_copy: fuzz/fuzz_copy.c $(FUZZ_BUILD)/fuzz_copy_lua.h $(SRCS) $(HDRS) $(FUZZ_LUA_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LUA_INC) -fsanitize=fuzzer $(FUZZ_SAN) \
	  -fsanitize-recover=pointer-overflow fuzz/fuzz_copy.c $(SRCS) \
	  $(FUZZ_LUA_OBJS) -o $@ $(FUZZ_LUA_LIBS) $(UV_LIBS)

fuzz: $(FUZZ_BUILD)/fuzz_copy
	@mkdir -p $(FUZZ_BUILD)/corpus fuzz/crashes
	$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_copy -max_total_time=$(FUZZ_SECONDS) -max_len=1024 \
	  -timeout=60 -rss_limit_mb=4096 -artifact_prefix=fuzz/crashes/ $(FUZZ_FLAGS) \
	  $(FUZZ_BUILD)/corpus fuzz/corpus

fuzz-merge: $(FUZZ_BUILD)/fuzz_copy
	rm -rf $(FUZZ_BUILD)/merged && mkdir -p $(FUZZ_BUILD)/merged $(FUZZ_BUILD)/corpus
	$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_copy -merge=1 -max_len=1024 -timeout=60 -rss_limit_mb=4096 \
	  $(FUZZ_BUILD)/merged fuzz/corpus $(FUZZ_BUILD)/corpus
	rm -f fuzz/corpus/* && cp $(FUZZ_BUILD)/merged/* fuzz/corpus/

$(FUZZ_BUILD)/replay: fuzz/replay.c fuzz/fuzz_copy.c $(FUZZ_BUILD)/fuzz_copy_lua.h $(SRCS) $(HDRS)
	$(CC) $(FUZZ_CFLAGS) -I$(LUA_INCDIR) $(ASAN_FLAGS) fuzz/replay.c fuzz/fuzz_copy.c $(SRCS) \
	  -o $@ $(LUA_LIBS) $(UV_LIBS)

fuzz-replay: $(FUZZ_BUILD)/replay
	$(FUZZ_ENV) $(FUZZ_BUILD)/replay fuzz/corpus/*
