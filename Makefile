# moelab: two commands do everything on a fresh machine (see README.md)
#   make figures   install, then run every notebook on the embedded model and refresh figures/
#   make test      install, then run the whole test suite (notebooks included) and the version checks
#
# Installs are pinned by requirements/lock.txt (the versions CI tested); `make lock` refreshes it.
# `make test-latest` checks the tracer, the store and the architecture sweep against the newest versions pyproject allows,
# `make test-oldest` against the oldest transformers it allows; `make test` runs both.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
# A CPU build of torch on machines without a GPU (this pin is served from local disk here);
# on a CUDA machine use e.g. `make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" ...`
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.moelab-installed
OLDEST_TRANSFORMERS := $(shell sed -n 's/.*"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)
CORE_TESTS := tests/test_tracking.py tests/test_feeding.py tests/test_tracer.py tests/test_store.py tests/test_codec.py

.PHONY: install figures lab test test-fast test-suite test-latest test-oldest bench wheel lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (moelab)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

figures: $(STAMP)
	$(BIN)/moelab figures

lab: $(STAMP)           # pair every notebooks/NN_*.py with an .ipynb (jupytext.toml) and open JupyterLab
	$(BIN)/jupytext --sync --update-metadata "$$($(BIN)/python -c 'import json, ipykernel.ipkernel as k; print(json.dumps({"language_info": k.IPythonKernel.language_info}))')" notebooks/[01]*.py
	$(BIN)/jupyter lab notebooks/

test: test-suite test-oldest test-latest

test-suite: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)     # the inner loop: everything but notebooks, subprocess runs and browsers (< 1 min)
	$(BIN)/python -m pytest -q -m "not slow"

test-oldest: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps --target .compat/transformers-$(OLDEST_TRANSFORMERS) \
		"transformers==$(OLDEST_TRANSFORMERS)"
	PYTHONPATH=.compat/transformers-$(OLDEST_TRANSFORMERS) $(BIN)/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)

test-latest:            # a new venv each time: pip then picks the newest release of everything but the pinned torch
	$(PYTHON) -m venv --clear .venv-latest
	.venv-latest/bin/python -m pip install -q $(TORCH)
	.venv-latest/bin/python -m pip install -q -e . pytest duckdb polars
	.venv-latest/bin/python -c "import transformers, torch; print('newest allowed: transformers', transformers.__version__, 'torch', torch.__version__)"
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS) tests/test_arch_sweep.py

bench: $(STAMP)
	$(BIN)/python bench/bench_tracer.py --out bench/results/tracer_cpu.json
	$(BIN)/python bench/bench_streaming.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_moe_vs_dense.py --out bench/results/moe_vs_dense_cpu.csv

wheel: $(STAMP)         # dist/moelab-*.whl: code, corpus and every embedded model's final weights; size -> bench/results/wheel.txt
	$(BIN)/python scripts/build_wheel.py

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > $(LOCK)

clean:
	rm -rf $(VENV) .venv-latest .compat .pytest_cache notebooks/*.ipynb
