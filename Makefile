# Two commands do everything on a fresh machine (each creates the environment when missing):
#   make book [MODE=fast|full]   prepare data and execute every chapter of the book
#   make test                    lint and run the test suite (what CI runs)
# Override the torch requirement for a GPU build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
MODE   ?= fast

PY    := $(VENV)/bin/python
# The stamp's name depends on TORCH, so changing TORCH reinstalls.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)

.PHONY: venv data book test test-fast lint bench bench-env browser clean help

help:
	@echo "make book [MODE=fast|full]  build and execute the book"
	@echo "make test                   lint + tests (CI)"
	@echo "make test-fast              lint + unit tests, without the chapters and the browser (minutes)"
	@echo "make data [MODE=...]        generate PolyMNIST for the mode"
	@echo "make bench                  speed benchmarks (not tests; run on a quiet machine)"
	@echo "make bench-env              the separate environment with multivae 1.0.3 for the comparison"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

data: venv
	$(PY) -m mopoe_lib.data polymnist --variant $(MODE)

book: data
	$(PY) -m mopoe_lib.book --mode $(MODE) --html

lint: venv
	$(PY) -m ruff check mopoe_lib tests benchmarks notebooks

# The browser test drives Debian's chromium (Playwright's own browser download does not work offline).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
		|| echo "could not install chromium: tests/test_browser.py will be skipped"; \
	else echo "chromium is missing and cannot be installed here (needs root and apt-get):" \
		"tests/test_browser.py will be skipped"; fi

test: venv lint browser
	$(PY) -m mopoe_lib.data polymnist --variant fast
	$(PY) -m pytest

test-fast: venv lint
	$(PY) -m mopoe_lib.data polymnist --variant fast
	$(PY) -m pytest -m "not notebook" --ignore=tests/test_browser.py

# Benchmarks print ratios measured in one run; results (with machine, torch version, date) go to
# benchmarks/results/. They are not part of the tests: run them on a quiet machine.
bench: venv bench-env
	$(PY) -m mopoe_lib.data polymnist --variant fast
	$(PY) benchmarks/train_throughput.py --model all --precision fp32 --steps 20
	$(BENCH_VENV)/bin/python benchmarks/multivae_mopoe.py --batch 256
	$(PY) benchmarks/train_throughput.py --model all --precision fp32 --channels-last
	$(PY) benchmarks/train_throughput.py --model mopoe --precision fp32 --compile
	$(PY) benchmarks/train_throughput.py --model networks-only --precision bf16 --steps 2 --warmup 1
	$(PY) benchmarks/train_throughput.py --model mopoe --precision fp32 --data
	$(PY) benchmarks/profile_step.py --model mopoe
	$(PY) benchmarks/profile_step.py --model mvae
	$(PY) benchmarks/fusion_scaling.py
	$(PY) benchmarks/polymnist_generation.py
	$(PY) benchmarks/summary.py

# The reference library multivae 1.0.3, in its own environment (never a dependency of the book). The
# constraints file pins torch, so pip keeps the build chosen by TORCH instead of pulling a CUDA one.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed:
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	printf '%s\n' '$(firstword $(TORCH))' > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c $(BENCH_VENV)/constraints.txt multivae==1.0.3
	@touch $@

bench-env: $(BENCH_VENV)/.installed

clean:
	rm -rf build .pytest_cache .ruff_cache
