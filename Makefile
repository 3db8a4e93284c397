# The two commands: `make demo` and `make test`. Both set up what they need first.
# `make test-fast` runs the tests not marked slow: no `facilities run`, browser or Prometheus.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-postgresql setup system system-tests npm-tools lint bench soak clean schemas dashboards messages

demo: setup
	$(BIN)/facilities demo

# Three workers, each test file whole in one of them (each worker starts its own broker and
# PostgreSQL): most tests wait on brokers and processes, so three share the two cores well.
# On a slow 2-core machine (2026-12-05) the suite took 14 min 4 s in two workers, 10 min 2 s
# in three: CI stays within 15 minutes.
test: setup system-tests npm-tools lint
	$(BIN)/pytest -n 3 --dist loadfile --durations=15

test-fast: setup
	$(BIN)/pytest -m "not slow"

# The tests on the tests' own PostgreSQL only (make test runs those that use the database on
# both stores: docs/postgresql.md, "Tests").
test-postgresql: setup system-tests npm-tools
	$(BIN)/pytest --store postgresql

setup: system $(STAMP)

system:
	@PY=$(PY) scripts/setup-system.sh

# What only the tests need (PostgreSQL, Prometheus, Chromium): not installed for `make demo`.
system-tests:
	@PY=$(PY) scripts/setup-system.sh --tests

# The tests' npm tools (tests/npm: the OpenAPI linters), once per machine into a cache
# outside the work tree (scripts/setup-npm.sh); the tests that use them install them too.
npm-tools: system-tests
	@scripts/setup-npm.sh >/dev/null

# Reinstalled when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy facilities simulators

# Payload JSON Schemas and the AsyncAPI document for integrators (docs/schemas); a test
# fails when they are stale.
schemas: setup
	$(BIN)/facilities schemas --out docs/schemas

# Grafana dashboards (deploy/grafana/dashboards); a test fails when they are stale.
dashboards: setup
	$(BIN)/python scripts/dashboards.py

# The pages' texts: extract, then merge into the catalogs (translate what is new; a test
# fails while a text has no Chinese translation).
messages: setup
	@mkdir -p var
	$(BIN)/pybabel extract -F babel.cfg --no-location --omit-header -o var/messages.pot .
	$(BIN)/pybabel update -i var/messages.pot -d facilities/api/web/locale --ignore-obsolete

# Benchmarks run on demand, never in `make test`.
bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/alert_latency.py
	$(BIN)/python bench/api.py

# The soak (docs/reliability.md): 30 minutes at 50 times the district's rate, with faults;
# `make soak SOAK_ARGS="--minutes 3"` for a short run.
soak: setup
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
