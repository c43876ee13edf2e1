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

.PHONY: venv data book test lint bench clean help

help:
	@echo "make book [MODE=fast|full]  build and execute the book"
	@echo "make test                   lint + tests (CI)"
	@echo "make data [MODE=...]        generate PolyMNIST for the mode"
	@echo "make bench                  speed benchmarks (not tests; run on a quiet machine)"

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

test: venv lint
	$(PY) -m mopoe_lib.data polymnist --variant fast
	$(PY) -m pytest

# Benchmarks print ratios measured in one run; results (with machine, torch version, date) go to
# benchmarks/results/. They are not part of the tests: run them on a quiet machine.
bench: venv
	$(PY) -m mopoe_lib.data polymnist --variant fast
	$(PY) benchmarks/train_throughput.py --model all --precision fp32
	$(PY) benchmarks/train_throughput.py --model all --precision fp32 --channels-last
	$(PY) benchmarks/train_throughput.py --model mopoe --precision fp32 --data
	$(PY) benchmarks/fusion_scaling.py
	$(PY) benchmarks/polymnist_generation.py

clean:
	rm -rf build .pytest_cache .ruff_cache
