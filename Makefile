# netproxy - the PROXY protocol for any TCP server.
#
#   make            the library (shared and static) and the tools
#   make check      every test: unit tests (also under ASan+UBSan), the fuzz
#                   corpus replayed, integration tests, the daemon's and the
#                   preload shim's threaded tests under ThreadSanitizer (make
#                   tsan), man page lint
#   make run        netproxyd on its default config
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (default 60); an input
#                   taking FUZZ_TIMEOUT seconds (default 10) is a finding
#   make bench      the library's ns-per-call table
#   make bench-compare  netproxyd, HAProxy, nginx stream and the direct path
#                   side by side (bench/README.md); ONLY=, MODES=, REPEAT=
#   make bench-prosody ORIGINAL=file  Prosody's CPU per connection with
#                   mod_net_proxy, the original module and none (bench/README.md)
#   make install    PREFIX (/usr/local) and DESTDIR honoured; ldconfig runs
#                   when DESTDIR is empty (the files are where they run from);
#                   the systemd units too (UNITDIR, SYSUSERSDIR, SYSCONFDIR)
#   make deb        Debian packages, with Debian's tools, in $(BUILD)/deb
#
# GNU make. Objects go to $(BUILD); nothing is written in the source tree.

VERSION    := 0.1.0
SOVERSION  := 0

PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# systemd's own search paths include /usr/local/lib/systemd/system and
# /usr/local/lib/sysusers.d. The units name the config in SYSCONFDIR, which
# nothing installs: the admin writes it (Debian's package ships one).
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
SYSCONFDIR ?= /etc
NPD_CONFIG ?= $(SYSCONFDIR)/netproxyd/netproxyd.conf.lua
LDCONFIG   ?= /sbin/ldconfig
# The Lua binding where Lua 5.4's package.cpath looks (/usr/local/lib/lua/5.4/?.so,
# /usr/lib/lua/5.4/?.so); mod_net_proxy where one plugin_paths line finds it
# (or Prosody's own /usr/lib/prosody/modules with PREFIX=/usr).
LUA_CMODDIR ?= $(LIBDIR)/lua/5.4
PROSODY_MODDIR ?= $(PREFIX)/lib/prosody/modules

CC      ?= cc
SAN_CC  ?= clang
FUZZ_CC ?= clang
CFLAGS  ?= -O2 -g
PYTHON  ?= /usr/bin/python3
PROVE   ?= prove
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 10

BUILD   ?= build

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wvla
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude
LIB_CFLAGS  := $(BASE_CFLAGS) -Ilib -fPIC -fvisibility=hidden -DNP_BUILDING_LIBRARY
SAN_FLAGS   := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

LIB_SRC  := $(wildcard lib/*.c)
LIB_HDR  := include/netproxy.h lib/internal.h
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
SAN_OBJ  := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)

SONAME     := libnetproxy.so.$(SOVERSION)
SHARED     := $(BUILD)/libnetproxy.so.$(VERSION)
STATIC     := $(BUILD)/libnetproxy.a
SAN_STATIC := $(BUILD)/asan/libnetproxy.a

TOOLS    := $(patsubst tools/%.c,$(BUILD)/%,$(wildcard tools/netproxy-*.c)) $(BUILD)/netproxy-bench
TOOLS_COMMON := tools/common.c tools/common.h
BENCH_SRC := $(wildcard tools/bench/*.c)
BENCH_HDR := $(wildcard tools/bench/*.h)

# netproxyd: daemon/*.c; everything but main.c also goes into libnpd.a, an
# internal archive the daemon's unit tests (tests/unit/test_npd_*.c) link.
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
NPD_CFLAGS := $(BASE_CFLAGS) -Idaemon $(LUA_CFLAGS) -pthread
NPD_LIBS   := $(LUA_LIBS) -lcap -pthread -lm
NPD_SRC    := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
NPD_HDR    := $(wildcard daemon/*.h) include/netproxy.h
NPD_OBJ    := $(NPD_SRC:%.c=$(BUILD)/%.o)
NPD_SAN_OBJ := $(NPD_SRC:%.c=$(BUILD)/asan/%.o)
NETPROXYD  := $(if $(wildcard daemon/main.c),$(BUILD)/netproxyd)

# The preload shim: preload/*.c with the library's objects, one .so.
PRELOAD    := $(BUILD)/libnetproxy_preload.so
PRELOAD_SRC := $(wildcard preload/*.c)
PRELOAD_HDR := $(wildcard preload/*.h)

# The Lua 5.4 binding, lua/netproxy.c with the library's objects, one .so
# that require "netproxy" loads.
LUA_MOD    := $(BUILD)/lua/netproxy.so
LUA_TESTS  := $(wildcard tests/lua/test_*.lua)
PROSODY_MOD := prosody/mod_net_proxy.lua

# Unit tests: every tests/unit/test_*.c is one TAP program.
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
SAN_UNIT  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)
VECTORS_H := $(BUILD)/gen/vectors.h

# Fuzz targets: every fuzz/fuzz_*.c, seeded from fuzz/corpus/<name>/.
FUZZ_SRC    := $(wildcard fuzz/fuzz_*.c)
FUZZ_NAMES  := $(FUZZ_SRC:fuzz/%.c=%)
FUZZ_BIN    := $(FUZZ_NAMES:%=$(BUILD)/fuzz/%)
REPLAY_BIN  := $(FUZZ_NAMES:%=$(BUILD)/replay/%)

MAN_PAGES := $(wildcard man/*.[1-8])
MAN_SECTIONS := $(sort $(foreach m,$(MAN_PAGES),$(lastword $(subst ., ,$(m)))))

.PHONY: all deps check check-all unit unit-asan replay integration tsan lint-man fuzz \
        bench bench-compare run install uninstall clean install-systemd uninstall-systemd deb check-deb \
        lua-unit bench-prosody
.DELETE_ON_ERROR:

all: $(SHARED) $(STATIC) $(TOOLS) $(NETPROXYD) $(PRELOAD) $(LUA_MOD)

# --- the library -----------------------------------------------------------

$(BUILD)/lib/%.o: lib/%.c $(LIB_HDR) | $(BUILD)/lib
	$(CC) $(LIB_CFLAGS) $(CFLAGS) -c $< -o $@

$(SHARED): $(LIB_OBJ) lib/libnetproxy.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/libnetproxy.map \
		-Wl,--no-undefined $(CFLAGS) $(LDFLAGS) $(LIB_OBJ) -o $@
	ln -sf libnetproxy.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libnetproxy.so

$(STATIC): $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

# --- tools -----------------------------------------------------------------

$(BUILD)/%: tools/%.c $(TOOLS_COMMON) $(STATIC) include/netproxy.h
	$(CC) $(BASE_CFLAGS) -Itools $(CFLAGS) $< tools/common.c $(STATIC) $(LDFLAGS) -o $@

# netproxy-bench: the load generator and its backend, one job a file (tools/bench/).
$(BUILD)/netproxy-bench: $(BENCH_SRC) $(BENCH_HDR) $(TOOLS_COMMON) $(STATIC) include/netproxy.h
	$(CC) $(BASE_CFLAGS) -Itools $(CFLAGS) $(BENCH_SRC) tools/common.c $(STATIC) $(LDFLAGS) -o $@

# --- the daemon ------------------------------------------------------------

$(BUILD)/daemon/%.o: daemon/%.c $(NPD_HDR) | $(BUILD)/daemon
	$(CC) $(NPD_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libnpd.a: $(NPD_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/netproxyd: daemon/main.c $(BUILD)/libnpd.a $(STATIC) $(NPD_HDR)
	$(CC) $(NPD_CFLAGS) $(CFLAGS) $< $(BUILD)/libnpd.a $(STATIC) $(LDFLAGS) $(NPD_LIBS) -o $@

$(BUILD)/asan/daemon/%.o: daemon/%.c $(NPD_HDR) | $(BUILD)/asan/daemon
	$(SAN_CC) $(NPD_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/asan/libnpd.a: $(NPD_SAN_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

# --- the preload shim -----------------------------------------------------

$(PRELOAD): $(PRELOAD_SRC) $(PRELOAD_HDR) preload/preload.map $(LIB_OBJ) $(LIB_HDR)
	$(CC) $(BASE_CFLAGS) -Ilib -fPIC -fvisibility=hidden -shared $(CFLAGS) \
		-Wl,--version-script=preload/preload.map -Wl,--no-undefined \
		$(PRELOAD_SRC) $(LIB_OBJ) $(LDFLAGS) -pthread -o $@

# --- the Lua binding -------------------------------------------------------

# No -llua5.4 and no --no-undefined: the Lua API comes from the program that
# loads the module (lua5.4, Prosody), as for every Lua C module.
$(LUA_MOD): lua/netproxy.c lua/netproxy.map $(LIB_OBJ) $(LIB_HDR) | $(BUILD)/lua
	$(CC) $(BASE_CFLAGS) $(LUA_CFLAGS) -fPIC -fvisibility=hidden -shared $(CFLAGS) \
		-Wl,--version-script=lua/netproxy.map lua/netproxy.c $(LIB_OBJ) $(LDFLAGS) -o $@

# The same under ASan+UBSan; lua5.4 is not built with them, so their runtime
# is preloaded.
SAN_LUA_MOD := $(BUILD)/asan/lua/netproxy.so
$(SAN_LUA_MOD): lua/netproxy.c lua/netproxy.map $(SAN_OBJ) $(LIB_HDR) | $(BUILD)/asan/lua
	$(SAN_CC) $(BASE_CFLAGS) $(LUA_CFLAGS) -fPIC -shared $(SAN_FLAGS) -shared-libsan \
		-Wl,--version-script=lua/netproxy.map lua/netproxy.c $(SAN_OBJ) -o $@

# The binding's tests, Lua scripts printing TAP, run by the lua5.4 interpreter
# against the built module, then against the sanitized one.
lua-unit: $(LUA_MOD) $(SAN_LUA_MOD)
	LUA_CPATH_5_4='$(abspath $(BUILD))/lua/?.so;;' LUA_PATH_5_4='$(abspath tests/lua)/?.lua;;' \
		$(PROVE) --exec lua5.4 $(LUA_TESTS)
	LD_PRELOAD="$$($(SAN_CC) -print-file-name=libclang_rt.asan-x86_64.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	LUA_CPATH_5_4='$(abspath $(BUILD))/asan/lua/?.so;;' LUA_PATH_5_4='$(abspath tests/lua)/?.lua;;' \
		$(PROVE) --exec lua5.4 $(LUA_TESTS)

# --- unit tests ------------------------------------------------------------

$(VECTORS_H): tests/data/vectors-peers.json tests/gen_vectors.py | $(BUILD)/gen
	$(PYTHON) tests/gen_vectors.py $< > $@

TEST_CFLAGS := $(BASE_CFLAGS) -Ilib -Itests/unit -I$(BUILD)/gen -DNP_TEST_DATA='"tests/data"'

UNIT_HDR := $(wildcard tests/unit/*.h)

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_HDR) $(VECTORS_H) $(STATIC) | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(CFLAGS) $< $(STATIC) $(LDFLAGS) -o $@

$(BUILD)/asan/lib/%.o: lib/%.c $(LIB_HDR) | $(BUILD)/asan/lib
	$(SAN_CC) $(LIB_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(SAN_STATIC): $(SAN_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/asan/tests/%: tests/unit/%.c $(UNIT_HDR) $(VECTORS_H) $(SAN_STATIC) | $(BUILD)/asan/tests
	$(SAN_CC) $(TEST_CFLAGS) -DNP_SANITIZED=1 $(SAN_FLAGS) $< $(SAN_STATIC) -o $@

# The daemon's tests (the shorter stem makes make prefer these rules).
$(BUILD)/tests/test_npd_%: tests/unit/test_npd_%.c $(UNIT_HDR) $(BUILD)/libnpd.a $(STATIC) | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(NPD_CFLAGS) $(CFLAGS) $< $(BUILD)/libnpd.a $(STATIC) $(NPD_LIBS) -o $@

$(BUILD)/asan/tests/test_npd_%: tests/unit/test_npd_%.c $(UNIT_HDR) $(BUILD)/asan/libnpd.a $(SAN_STATIC) | $(BUILD)/asan/tests
	$(SAN_CC) $(TEST_CFLAGS) $(NPD_CFLAGS) -DNP_SANITIZED=1 $(SAN_FLAGS) $< \
		$(BUILD)/asan/libnpd.a $(SAN_STATIC) $(NPD_LIBS) -o $@

unit: $(UNIT_BIN)
	$(PROVE) $(UNIT_BIN)

unit-asan: $(SAN_UNIT)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		$(PROVE) $(SAN_UNIT)

# --- fuzzing ---------------------------------------------------------------

# The replayer runs each target over its corpus with the ordinary compiler,
# so `make check` exercises every stored input without clang's libFuzzer.
$(BUILD)/replay/%: fuzz/%.c fuzz/replay.c fuzz/check.h $(STATIC) | $(BUILD)/replay
	$(CC) $(BASE_CFLAGS) -Ilib $(CFLAGS) fuzz/replay.c $< $(STATIC) -o $@

# fuzz/corpus/<target> holds the seeds (fuzz/make_corpus.py writes them),
# fuzz/found/<target> what long fuzzing runs found that adds coverage.
replay: $(REPLAY_BIN)
	@set -e; for t in $(FUZZ_NAMES); do \
		$(BUILD)/replay/$$t fuzz/corpus/$$t $$(ls -d fuzz/found/$$t 2>/dev/null); done

$(BUILD)/fuzz/%: fuzz/%.c fuzz/check.h $(LIB_SRC) $(LIB_HDR) | $(BUILD)/fuzz
	$(FUZZ_CC) $(BASE_CFLAGS) -Ilib -DNP_BUILDING_LIBRARY -O1 -g \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$< $(LIB_SRC) -o $@

# fuzz_config runs the config loader: the daemon's config sources with Lua,
# capped at 1 million Lua instructions instead of 100 million and at 256 MiB
# allocated in all, and sealed by the wrappers of open, opendir and
# getaddrinfo in fuzz/fuzz_config.c (which says why). The replayer is built
# the same way, so that it runs the same code.
FUZZ_CONFIG_SRC   := $(filter daemon/config%.c daemon/prosody.c daemon/perms.c \
			daemon/trust.c,$(NPD_SRC))
FUZZ_CONFIG_FLAGS := -Idaemon $(LUA_CFLAGS) -DNPD_CONFIG_MAX_STEPS=1 \
		     -DNPD_CONFIG_ALLOC_BUDGET='((size_t)256 << 20)' \
		     -Wl,--wrap=open,--wrap=opendir,--wrap=getaddrinfo

$(BUILD)/fuzz/fuzz_config: fuzz/fuzz_config.c fuzz/check.h $(FUZZ_CONFIG_SRC) $(NPD_HDR) \
		$(LIB_SRC) $(LIB_HDR) | $(BUILD)/fuzz
	$(FUZZ_CC) $(BASE_CFLAGS) -Ilib -DNP_BUILDING_LIBRARY -O1 -g \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(FUZZ_CONFIG_FLAGS) \
		$< $(FUZZ_CONFIG_SRC) $(LIB_SRC) $(LUA_LIBS) -lm -o $@

$(BUILD)/replay/fuzz_config: fuzz/fuzz_config.c fuzz/replay.c fuzz/check.h $(FUZZ_CONFIG_SRC) \
		$(NPD_HDR) $(STATIC) | $(BUILD)/replay
	$(CC) $(BASE_CFLAGS) -Ilib $(CFLAGS) $(FUZZ_CONFIG_FLAGS) fuzz/replay.c $< \
		$(FUZZ_CONFIG_SRC) $(STATIC) $(LUA_LIBS) -lm -o $@

# New inputs go to $(BUILD)/fuzz/corpus-<target>; the seeds in fuzz/corpus are
# read but never written. Each target runs FUZZ_SECONDS; an input that takes
# FUZZ_TIMEOUT seconds is a finding; fuzz/<target>.dict, when there is one,
# gives the target's words.
fuzz: $(FUZZ_BIN)
	@set -e; for t in $(FUZZ_NAMES); do \
		mkdir -p $(BUILD)/fuzz/corpus-$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-timeout=$(FUZZ_TIMEOUT) $$(ls fuzz/$$t.dict 2>/dev/null | sed 's/^/-dict=/') \
			-artifact_prefix=$(BUILD)/fuzz/$$t- \
			$(BUILD)/fuzz/corpus-$$t fuzz/corpus/$$t $$(ls -d fuzz/found/$$t 2>/dev/null); \
	done

# --- integration tests and docs --------------------------------------------

integration: all
	NETPROXY_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration

# The daemon and the preload shim built with ThreadSanitizer (gcc's, whose
# runtime is a shared library), and their threaded integration tests run
# against them: the daemon's workers, signal thread, reloads under traffic,
# the stats thread reading the workers' counters and asking for their
# connections;
# the shim in servers that accept on many threads, fork, and close
# descriptors from signal handlers. The shim is loaded into programs that
# are not built for it (Python, nginx, test programs), so the runtime is
# preloaded with it, after it (tests/integration/test_preload.py,
# preload_lib(), says why after). Any report fails the target.
TSAN_BUILD := $(BUILD)/tsan
TSAN_CC    := gcc
TSAN_RUNTIME = $(shell $(TSAN_CC) -print-file-name=libtsan.so.2)
TSAN_TESTS := tests/integration/test_daemon_basic.py tests/integration/test_daemon_robust.py \
              tests/integration/test_daemon_stop.py \
              tests/integration/test_cli.py tests/integration/test_config_guard.py \
              tests/integration/test_metrics.py
TSAN_SHIM_TESTS := tests/integration/test_preload.py
TSAN_ENV = TSAN_OPTIONS="halt_on_error=1 log_path=$(abspath $(TSAN_BUILD))/reports/tsan" \
	NETPROXY_BUILD=$(abspath $(TSAN_BUILD))
tsan:
	@$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) CC=$(TSAN_CC) \
		CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS=-fsanitize=thread all
	@rm -rf $(TSAN_BUILD)/reports && mkdir -p -m 1777 $(TSAN_BUILD)/reports
	@status=0; \
	echo '$(TSAN_ENV) $(PYTHON) -m pytest -q $(TSAN_TESTS)'; \
	$(TSAN_ENV) $(PYTHON) -m pytest -q $(TSAN_TESTS) || status=1; \
	echo '$(TSAN_ENV) NETPROXY_PRELOAD_RUNTIME=$(TSAN_RUNTIME) $(PYTHON) -m pytest -q $(TSAN_SHIM_TESTS)'; \
	$(TSAN_ENV) NETPROXY_PRELOAD_RUNTIME=$(TSAN_RUNTIME) $(PYTHON) -m pytest -q $(TSAN_SHIM_TESTS) \
		|| status=1; \
	if ls $(TSAN_BUILD)/reports/* >/dev/null 2>&1; then \
		cat $(TSAN_BUILD)/reports/*; echo "tsan: ThreadSanitizer reported the above"; exit 1; fi; \
	if [ $$status != 0 ]; then echo "tsan: tests failed"; exit 1; fi
	@echo "tsan: no ThreadSanitizer report"

lint-man:
	@set -e; for m in $(MAN_PAGES); do mandoc -Tlint -Wwarning $$m; done; \
		echo "man pages: $(words $(MAN_PAGES)) clean under mandoc -Tlint"

# deps first, on its own: what it installs is needed by everything after it.
check:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory check-all

check-all: all unit unit-asan lua-unit replay integration tsan lint-man

deps:
	@scripts/deps.sh

# --- benchmarks ------------------------------------------------------------

$(BUILD)/bench/bench-lib: bench/bench_lib.c $(STATIC) | $(BUILD)/bench
	$(CC) $(BASE_CFLAGS) -Ilib -O2 -g $< $(STATIC) -o $@

bench: $(BUILD)/bench/bench-lib
	$(BUILD)/bench/bench-lib

# The shim's accept() timed with and without it (bench-compare's "shim").
$(BUILD)/bench/accept-latency: bench/accept_latency.c $(STATIC) include/netproxy.h | $(BUILD)/bench
	$(CC) $(BASE_CFLAGS) -O2 -g $< $(STATIC) -o $@

# Receivers and measurements to run, comma-separated (default: all); runs of
# each (default 5), measured seconds per run (default 2), idle connections.
BENCH_COMPARE_ARGS := $(if $(ONLY),--only $(ONLY)) $(if $(MODES),--modes $(MODES)) \
	$(if $(REPEAT),--repeat $(REPEAT)) $(if $(RUN_SECONDS),--seconds $(RUN_SECONDS)) \
	$(if $(IDLE_CONNS),--idle-conns $(IDLE_CONNS))

# deps first, on its own, as for check and run.
bench-compare:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all $(BUILD)/bench/accept-latency
	$(PYTHON) bench/compare.py --build $(BUILD) $(BENCH_COMPARE_ARGS)

# Prosody's CPU per connection through mod_net_proxy, through the original
# module (ORIGINAL=, its file fetched outside the tree: bench/README.md) and
# with no proxy; and a header's parse cost in Lua. CONNS= connections per
# run, REPEAT= rounds.
bench-prosody:
	@test -n "$(ORIGINAL)" || { echo "bench-prosody: set ORIGINAL=/path/to/the/original/mod_net_proxy.lua (bench/README.md)" >&2; exit 2; }
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/prosody.py --build $(BUILD) --original $(ORIGINAL) \
		$(if $(CONNS),--conns $(CONNS)) $(if $(REPEAT),--repeat $(REPEAT))

# --- running ---------------------------------------------------------------

run:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@echo "netproxyd on its built-in default config (15222 -> 127.0.0.1:5222, 15269 -> 127.0.0.1:5269); Ctrl-C stops it" >&2
	exec $(BUILD)/netproxyd

# --- installing ------------------------------------------------------------

install: all install-systemd
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(BINDIR) $(addprefix $(DESTDIR)$(MANDIR)/man,$(MAN_SECTIONS))
	install -m 0755 $(SHARED) $(PRELOAD) $(DESTDIR)$(LIBDIR)/
	ln -sf libnetproxy.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libnetproxy.so
	install -m 0644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 0644 include/netproxy.h $(DESTDIR)$(INCLUDEDIR)/
	# Written here, not built: it names PREFIX, which may differ at each install.
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    libnetproxy.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libnetproxy.pc
	install -m 0755 $(TOOLS) $(NETPROXYD) $(DESTDIR)$(BINDIR)/
	@set -e; for m in $(MAN_PAGES); do \
		echo "install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/"; \
		install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done
	$(run-ldconfig)
	install -d $(DESTDIR)$(LUA_CMODDIR) $(DESTDIR)$(PROSODY_MODDIR)
	install -m 0644 $(LUA_MOD) $(DESTDIR)$(LUA_CMODDIR)/netproxy.so
	install -m 0644 $(PROSODY_MOD) $(DESTDIR)$(PROSODY_MODDIR)/

uninstall: uninstall-systemd
	rm -f $(DESTDIR)$(LIBDIR)/libnetproxy.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libnetproxy.so $(DESTDIR)$(LIBDIR)/libnetproxy.a \
		$(DESTDIR)$(LIBDIR)/libnetproxy_preload.so \
		$(DESTDIR)$(INCLUDEDIR)/netproxy.h $(DESTDIR)$(PKGCONFIGDIR)/libnetproxy.pc
	rm -f $(TOOLS:$(BUILD)/%=$(DESTDIR)$(BINDIR)/%) $(NETPROXYD:$(BUILD)/%=$(DESTDIR)$(BINDIR)/%)
	@for m in $(MAN_PAGES:man/%=%); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$$m; done
	rm -f $(DESTDIR)$(LUA_CMODDIR)/netproxy.so $(PROSODY_MOD:prosody/%=$(DESTDIR)$(PROSODY_MODDIR)/%)
	$(run-ldconfig)

# Installed to the real root (no DESTDIR), the loader's cache must learn of
# the library (or forget it), or programs linked with it do not start. Into
# a DESTDIR the files are not yet where they will run: a package's
# postinst runs ldconfig there. Without root it cannot write the cache; the
# files are installed all the same, and the message says what is left.
define run-ldconfig
@if [ -z "$(DESTDIR)" ]; then \
	echo "$(LDCONFIG)"; \
	$(LDCONFIG) || echo "make: $(LDCONFIG) failed: run it as root, or programs" \
		"may not find $(SONAME) in $(LIBDIR)" >&2; \
fi
endef

# The units (systemd/*.in name where netproxyd and its config are), the
# socket example and the system user. After an install to / run
# systemd-sysusers and systemctl daemon-reload (netproxyd(8), SYSTEMD).
SYSTEMD_UNITS := $(patsubst systemd/%.in,%,$(wildcard systemd/*.service.in)) netproxyd.socket

install-systemd:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	@set -e; for u in $(SYSTEMD_UNITS); do \
		if [ -f systemd/$$u.in ]; then \
			echo "sed systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u"; \
			sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@CONFIG@|$(NPD_CONFIG)|g' \
				systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u; \
			chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
		else \
			install -m 0644 systemd/$$u $(DESTDIR)$(UNITDIR)/; \
		fi; done
	install -m 0644 systemd/netproxyd.sysusers $(DESTDIR)$(SYSUSERSDIR)/netproxyd.conf

uninstall-systemd:
	rm -f $(SYSTEMD_UNITS:%=$(DESTDIR)$(UNITDIR)/%) $(DESTDIR)$(SYSUSERSDIR)/netproxyd.conf

# Debian's packages (debian/), built by dpkg-buildpackage in a copy of the
# tree under $(BUILD)/deb/src, unsigned; the .debs and lintian's report end
# up in $(BUILD)/deb. Needs root or fakeroot, and debhelper (scripts/deps.sh
# installs it with DEB=1). Not part of check: tests/integration/test_deb.py
# runs it (make check-deb).
DEB_DIR := $(BUILD)/deb

deb:
	@DEB=1 scripts/deps.sh
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	git ls-files -z --cached --others --exclude-standard | \
		grep -zv '^$(BUILD)/' | xargs -0 cp --parents -t $(DEB_DIR)/src
	cd $(DEB_DIR)/src && dpkg-buildpackage -us -uc -b
	lintian --info --display-info $(DEB_DIR)/*.changes | tee $(DEB_DIR)/lintian.txt
	@ls $(DEB_DIR)/*.deb

check-deb:
	NETPROXY_BUILD=$(abspath $(BUILD)) NETPROXY_DEB=1 $(PYTHON) -m pytest -q tests/integration/test_deb.py

clean:
	rm -rf $(BUILD)

$(BUILD)/lib $(BUILD)/gen $(BUILD)/tests $(BUILD)/asan/lib $(BUILD)/asan/tests \
$(BUILD)/replay $(BUILD)/fuzz $(BUILD)/bench $(BUILD)/daemon $(BUILD)/asan/daemon $(BUILD)/lua \
$(BUILD)/asan/lua:
	mkdir -p $@
