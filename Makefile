# syslet-compat — build, test, demo, bench, docs.
#
#   make demo    system packages (if missing) + .venv + run the demo
#   make test    system packages (if missing) + .venv + suite under both backends + docs
#
# PYTHON picks the interpreter the venv is made from (default: python3).

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       := .venv
VPY        := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
# Per-backend wall-clock cap for one pytest run (keeps `make test` well under 10 min).
TEST_TIMEOUT ?= 420
PYTEST_ARGS  ?= -q

# Anything that changes what `pip install -e` builds: packaging metadata and
# the cffi build scripts, cdefs and C sources of both packages.
BUILD_INPUTS := pyproject.toml setup.py \
	$(wildcard */_build.py */_build_*.py */_cdef.h */csrc/*.c */csrc/*.h */csrc/*/*.c */csrc/*/*.h */csrc/*.map */include/*.h)

.PHONY: all deps venv test demo bench docs clean help fuzz-long leak-long

all: help

help:
	@echo "make demo   - install what is missing, build .venv, run the demo"
	@echo "make test   - install what is missing, build .venv, run tests (io_uring + threadpool), build docs"
	@echo "make deps   - system packages only (liburing-dev gcc python3-dev python3-venv)"
	@echo "make venv   - (re)build .venv and the cffi modules when sources change"
	@echo "make bench  - run the benchmarks (installs fio and matplotlib if missing)"
	@echo "make docs   - Sphinx HTML into docs/_build/html (warnings are errors)"
	@echo "make fuzz-long - 1.6M random hostile chains per backend (docs/reliability.md)"
	@echo "make leak-long - 1M mixed syslets per backend, fds/threads/RSS flat"
	@echo "make clean  - remove .venv, build products and caches"

deps:
	@PYTHON='$(PYTHON)' bash scripts/deps.sh

venv: deps $(STAMP)

# Order-only on deps: checked every time, but does not by itself force a rebuild.
$(STAMP): $(BUILD_INPUTS) | deps
	@if [ ! -x $(VPY) ]; then \
		echo "venv: creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,docs]'
	@touch $@

test: deps venv
	URING_SHIM_BACKEND=io_uring timeout $(TEST_TIMEOUT) $(VPY) -m pytest $(PYTEST_ARGS)
	URING_SHIM_BACKEND=threadpool timeout $(TEST_TIMEOUT) $(VPY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory docs

demo: deps venv
	$(VPY) -m compat demo

bench: deps venv
	@VPY='$(VPY)' bash scripts/bench-deps.sh
	$(VPY) bench/bench_shim.py
	$(VPY) bench/bench_compat.py
	$(VPY) bench/bench_dropin.py
	$(VPY) bench/bench_blocking.py
	$(VPY) bench/bench_personalities.py
	$(VPY) bench/bench_asyncio.py

# Long reliability runs (docs/reliability.md): the bounded versions are in `make test`.
fuzz-long: deps venv
	for b in io_uring threadpool; do \
		SYSLET_LONG=1 URING_SHIM_BACKEND=$$b $(VPY) -m pytest -q -s --timeout=3600 \
			tests/reliability/test_rel_fuzz.py || exit 1; \
	done

leak-long: deps venv
	for b in io_uring threadpool; do \
		SYSLET_LONG=1 URING_SHIM_BACKEND=$$b $(VPY) -m pytest -q -s --timeout=7200 \
			tests/reliability/test_rel_leaks.py || exit 1; \
	done

docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build .pytest_cache .hypothesis .mypy_cache bench/_build
	rm -f uring_shim/_liburing.c compat/_engine.c
	find uring_shim compat -name '*.so' -delete -o -name '*.o' -delete
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
