# Two commands (README): `make reproduce` and `make test`. Each builds .venv from requirements.txt
# on first use (about 2 minutes), then reuses it.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SCALE  ?= tiny
OUT    ?= runs/reproduce

.PHONY: reproduce test venv clean-venv chromium gpu-check

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed

# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads otherwise spin while waiting and starve each other
# when the cores are shared (a 2-thread bert-tiny step: 0.2 s -> 1-4 s on a busy 2-core machine).
reproduce: venv
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m workbench reproduce all --scale $(SCALE) --out $(OUT)

# pytest prints its summary line ("N passed, M skipped in ...") and the reason of every skip (-rs,
# pyproject's addopts). `chromium` first: the browser tests need it, and it says so when it cannot.
test: venv chromium
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest tests

# The GPU paths in one go (about 5 minutes on one GPU; one JSON line per check). Without CUDA it says
# so in one line and exits 0. See workbench/bench/gpu_check.py.
gpu-check: venv
	HF_HUB_OFFLINE=1 $(PY) -m workbench.bench.gpu_check

# The browser test (tests/test_browser.py) drives Debian's Chromium through Playwright; it skips
# without it. Installs it when missing (root, or sudo). Playwright's own browser download is not used.
chromium:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) || true; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  (sudo -n apt-get update -q && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) || true; \
	fi
	@[ -x /usr/bin/chromium ] || echo "warning: /usr/bin/chromium is missing and could not be installed here (needs root or passwordless sudo, and the network): the browser tests (tests/test_browser.py, the report's browser test) will SKIP; install it with: apt-get install -y chromium" >&2

clean-venv:
	rm -rf $(VENV)
