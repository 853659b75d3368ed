# syncd — two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: test demo lint typecheck pytest chromium caldav-servers bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

# Debian's Chromium for the browser tests (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# Cyrus, DAViCal and SOGo from Debian's packages for the CalDAV server matrix (the tests
# start each as processes of their own on loopback; the system services are never used).
caldav-servers:
	@bash tests/debian_servers/install.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check syncd adapters tests bench
	$(BIN)/ruff format --check syncd adapters tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict syncd adapters

pytest: $(VENV)/.installed-test chromium caldav-servers
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(VENV)/.installed-demo
	$(BIN)/syncd demo $(DEMO_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
