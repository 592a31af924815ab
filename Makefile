# moelab: two commands do everything on a fresh machine (see README.md)
#   make figures   install, then run every notebook on the embedded model and refresh figures/
#   make test      install, then run the whole test suite (notebooks included)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch on machines without a GPU (this pin is served from local disk here);
# on a CUDA machine use e.g. `make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" ...`
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.moelab-installed

.PHONY: install figures test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (moelab)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

figures: $(STAMP)
	$(BIN)/moelab figures

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/bench_tracer.py --out bench/results/tracer_cpu.json
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_moe_vs_dense.py --out bench/results/moe_vs_dense_cpu.csv

clean:
	rm -rf $(VENV) .pytest_cache notebooks/*.ipynb
