# Two commands (README): `make reproduce` and `make test`. Each builds .venv from requirements.txt
# on first use (about 2 minutes), then reuses it.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SCALE  ?= tiny
OUT    ?= runs/reproduce

.PHONY: reproduce test venv clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed

reproduce: venv
	HF_HUB_OFFLINE=1 $(PY) -m workbench reproduce all --scale $(SCALE) --out $(OUT)

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
