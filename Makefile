# One-command set-up: everything a fresh machine needs lives here.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# The CPU wheel is installed first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test lint bench demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,triton,series,rl,hdf5,hf]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check fwp tests benchmarks

# Triton kernels run on CPU tensors through Triton's interpreter: slow, but checks them in CI.
test: setup lint
	TRITON_INTERPRET=1 $(VENV)/bin/pytest -n 2 -q

# The main job: baseline vs bootstrapped few-shot learner on the built-in glyphs, evaluated and reported.
demo: setup
	scripts/demo.sh $(OUT)

bench: setup
	$(PY) benchmarks/ops.py

clean:
	rm -rf $(VENV) build *.egg-info
