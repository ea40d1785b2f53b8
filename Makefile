# make setup  - virtual environment with torch, then rnnkit built against it
# make bench  - the benchmark and self-check (python -m rnnkit.bench)
# make test   - the test suite
# make sanitize - the op and module tests on a CPU build under ASan + UBSan
# make setup TORCH=torch==2.13.0  - a CPU-only torch instead of the CUDA build (see README)
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.14.1
# Where torch comes from, e.g. https://download.pytorch.org/whl/cpu for its CPU-only builds.
TORCH_INDEX ?=
# nvcc on the PATH may be a wrapper script; setup.py also looks for the toolkit.
export CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda))

.PHONY: setup bench test sanitize clean

setup: $(VENV)/.built

$(VENV)/.deps:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet numpy pytest hypothesis ninja matplotlib tqdm statsmodels \
		onnx onnxscript onnxruntime
	touch $@

# --no-build-isolation: rnnkit is compiled against the torch in $(VENV), the one that will run it.
$(VENV)/.built: $(VENV)/.deps setup.py rnnkit/_build.py $(wildcard csrc/*.* csrc/*/*.*)
	MAX_JOBS=2 $(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

bench: setup
	$(PY) -m rnnkit.bench

test: setup
	$(PY) -m pytest tests -q -rs

sanitize: $(VENV)/.deps
	MAX_JOBS=2 bash tools/sanitize_cpu.sh $(PY)

clean:
	rm -rf build *.egg-info rnnkit/_C*.so rnnkit/_build_info.py
