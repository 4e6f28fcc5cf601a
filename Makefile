# The two commands of braid:
#   make demo   set up, build, install into build/install, run the demo
#   make test   set up, build from scratch, run every suite
# Other targets: build, install, python, bench, format, clean.

BUILD   ?= build
PREFIX  := $(abspath $(BUILD)/install)
JOBS    ?= 2
CMAKE   := cmake
PKGCFG  := PKG_CONFIG_PATH=$(PREFIX)/lib/pkgconfig:$(PREFIX)/lib/$(shell gcc -dumpmachine)/pkgconfig
PY      := $(CURDIR)/.venv/bin/python

.PHONY: demo test setup build install python bench format clean \
        test-python test-python-asan test-release test-asan test-tsan test-ucontext test-examples test-abi test-aarch64

setup:
	@scripts/setup

build: setup
	$(CMAKE) -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	$(CMAKE) --build $(BUILD)/release -j$(JOBS)

install: build
	$(CMAKE) --install $(BUILD)/release >/dev/null

# The Python binding, built against the installed library (pkg-config) and
# installed into the project's virtual environment (.venv, from scripts/setup).
python: install
	rm -rf bindings/python/build
	$(PKGCFG) $(PY) -m pip install -q --no-build-isolation --force-reinstall --no-deps ./bindings/python

demo: python
	@mkdir -p $(BUILD)/examples
	@for ex in demo bridge; do \
	  $(PKGCFG) sh -c "cc -std=c11 -Wall -Wextra -Werror examples/c/$$ex.c \$$(pkg-config --cflags --libs braid) \
	    -Wl,-rpath,$(PREFIX)/lib -o $(BUILD)/examples/$$ex" || exit 1; \
	done
	@$(BUILD)/examples/demo
	@echo
	@echo "braid thread bridge example"
	@$(BUILD)/examples/bridge
	@echo
	@echo "braid from Python (examples/python/demo.py)"
	@$(PY) examples/python/demo.py

# Every suite, from scratch. ctest runs the CMocka unit tests and the
# conformance scenarios (C testee: stackful, stepped, mixed) in four builds:
# release, ucontext fallback, ASan+UBSan, TSan. Plus the examples linked
# through pkg-config only, the ABI check, and the aarch64 context switch
# under qemu.
test: setup
	rm -rf $(BUILD)
	$(MAKE) --no-print-directory test-release test-examples test-abi test-python test-ucontext test-aarch64 test-asan \
	    test-python-asan test-tsan
	@echo "make test: all suites passed"

# Sanitizers stop at the first report. libuv is not instrumented: see
# tests/tsan.supp for why its interceptor calls are ignored under TSan.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
           TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp"

define cmake_suite
	$(CMAKE) -S . -B $(BUILD)/$(1) $(2) >/dev/null
	$(CMAKE) --build $(BUILD)/$(1) -j$(JOBS)
	cd $(BUILD)/$(1) && $(SAN_ENV) ctest --output-on-failure -j$(JOBS) $(3)
endef

test-release:
	$(call cmake_suite,release,-DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX))

test-ucontext:
	$(call cmake_suite,ucontext,-DCMAKE_BUILD_TYPE=Debug -DBRAID_CONTEXT=ucontext -DBRAID_BUILD_BENCH=OFF)

test-asan:
	$(call cmake_suite,asan,-DCMAKE_BUILD_TYPE=Debug -DBRAID_SANITIZE=address -DBRAID_BUILD_BENCH=OFF)

test-tsan:
	$(call cmake_suite,tsan,-DCMAKE_BUILD_TYPE=Debug -DBRAID_SANITIZE=thread -DBRAID_BUILD_BENCH=OFF)

test-examples: test-release
	$(CMAKE) --install $(BUILD)/release >/dev/null
	scripts/check-examples $(PREFIX)

test-abi: test-release
	scripts/check-abi $(BUILD)/release/libbraid.so

# The Python binding: its pytest suite, the type check (mypy --strict) of
# the package and the example, and the Python conformance testee, on the
# installed package (not the source tree).
test-python: test-release
	$(MAKE) --no-print-directory python
	cd bindings/python/tests && $(PY) -m pytest -q -p no:cacheprovider -c ../pyproject.toml --rootdir=.. .
	$(PY) -m mypy --strict --no-incremental bindings/python/braid examples/python/demo.py
	$(PY) tests/conformance/compare.py --testee "$(PY) tests/conformance/python/testee.py" \
	    --scenarios tests/conformance/scenarios --known-failures tests/conformance/python/known-failures.txt

# The pytest suite again, with the installed extension loading the
# AddressSanitizer + UBSan build of libbraid (LD_LIBRARY_PATH wins over its
# RUNPATH): the core's memory and arithmetic checked under Python's use.
test-python-asan: test-asan
	cd bindings/python/tests && LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	    LD_LIBRARY_PATH=$(CURDIR)/$(BUILD)/asan PYTHONMALLOC=malloc \
	    ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(PY) -m pytest -q -p no:cacheprovider -c ../pyproject.toml --rootdir=.. .

# the aarch64 context switch, cross-built and run under qemu-user
test-aarch64:
	scripts/check-ctx-aarch64

bench: python
	BRAID_BUILD_DIR=$(BUILD)/release bench/run

format:
	clang-format -i include/*.h core/*.c core/*.h tests/c/*.c tests/c/*.h tests/ctx/*.c examples/c/*.c bench/c/*.c \
	    $(wildcard tests/conformance/c/*.c tests/conformance/c/*.h bench/c/*.h) bindings/python/src/*.c bindings/python/src/*.h

clean:
	rm -rf $(BUILD)
