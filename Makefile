# Two commands do all set-up: `make run` (local stack with demo data) and `make test` (every test).
# Both create .venv and install Python and npm dependencies when missing or changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .make

.PHONY: deps run test test-fast lint bench clean

$(STAMPS):
	mkdir -p $(STAMPS)

$(STAMPS)/venv: requirements.txt requirements-dev.txt | $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(STAMPS)/npm: package.json package-lock.json | $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

local.settings.json:
	cp local.settings.sample.json local.settings.json

# checkov (infra checks, tests/infra) pins dependencies that clash with the app's: it gets its own venv.
CHECKOV_VERSION := 3.3.30
$(STAMPS)/checkov: | $(STAMPS)
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	touch $@

deps: $(STAMPS)/venv $(STAMPS)/npm

run: deps local.settings.json
	$(PY) -m devhost.stack

# Most tests wait on real processes (Azurite, hosts, the sandbox), not the CPU: three workers, each with its own
# Azurite and sandbox on free ports, take the suite from ~16 to ~7 minutes on two cores. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3
test: deps $(STAMPS)/checkov
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

bench: deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov $(STAMPS) node_modules .stack
