# make setup  - virtual environment with torch, then rnnkit built against it
# make bench  - the benchmark and self-check (python -m rnnkit.bench)
# make test   - the test suite
# make sanitize - the op and module tests on a CPU build under ASan + UBSan
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.14.1
# nvcc on the PATH may be a wrapper script; setup.py also looks for the toolkit.
export CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda))

.PHONY: setup bench test sanitize clean

setup: $(VENV)/.built

$(VENV)/.deps:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" numpy pytest hypothesis ninja matplotlib tqdm statsmodels
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(wildcard csrc/*.* csrc/*/*.*)
	MAX_JOBS=2 $(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

bench: setup
	$(PY) -m rnnkit.bench

test: setup
	$(PY) -m pytest tests -q -rs

sanitize: $(VENV)/.deps
	MAX_JOBS=2 bash tools/sanitize_cpu.sh $(PY)

clean:
	rm -rf build *.egg-info rnnkit/_C*.so
