# Two entry points: `make demo` (install + run the lab app on the embedded demo study) and
# `make test` (install + lint + the whole test suite). Both create ./.venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 5000

.PHONY: install demo test lint browser

install: $(VENV)/.installed

# torch and torchvision are pinned first: exactly these wheels lie on the lab machines' disk (a
# local package index pip reads), so pip takes them without a multi-GB download; an unpinned
# `torch` could resolve to a newer release and download it. They are PyPI's standard (CUDA-enabled)
# Linux builds, which also run on a CPU.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(PY) -m annotate demo --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The end-to-end test drives Debian's Chromium; as root, install it when it is missing.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: Chromium is not installed: the browser test will be skipped"

test: lint browser
	$(PY) -m pytest
