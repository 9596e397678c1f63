# Two entry points, both self-contained on a fresh machine:
#   make demo   set up .venv, build the extension, run `deem demo`
#   make test   set up .venv, build the extension, run the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; pick another build with e.g. `make TORCH=torch==2.14.1 test`.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml $(shell find csrc -type f)

.PHONY: demo test clean

$(VENV)/.installed: $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" setuptools wheel ninja pybind11
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/deem demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf build $(VENV) deem/_C*.so *.egg-info
