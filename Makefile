VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean cpu-torch
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# On a machine without a GPU: CPU-only torch (a much smaller virtualenv), then the package as usual.
cpu-torch: $(PY)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install torch torchvision --index-url $(TORCH_CPU_INDEX)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/yolo-transfer demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
