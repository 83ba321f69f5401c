# `make serve` and `make test` each set up .venv on first use (and after pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: compiled serve test lint bench clean cluster

# The server's own dependencies: all that `make serve` needs, and a new user waits for.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

# The test tools (pytest, Playwright, mypy, ruff...), on top.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

# Where Python is told not to write bytecode (PYTHONDONTWRITEBYTECODE), every process would compile
# watchroute's modules from source again: a quarter of a second per server start, and the tests
# start hundreds. Compiled here (only what changed), they are read instead.
compiled: $(STAMP)
	$(BIN)/python -m compileall -q src

serve: compiled
	$(BIN)/watchroute serve

# Three instances on one PostgreSQL database behind nginx (docs/scale-out.md).
cluster: compiled
	deploy/cluster.sh $(DATABASE)

# Type checking (mypy, configured in pyproject.toml) runs after the linters, before the tests:
# a file per process (a module's server is started once), four at a time: most of a test's
# time is a server starting or a watch waiting, not CPU.
test: compiled $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 4 --dist loadfile

lint: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: compiled
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	# The peers (bench/peers/): nchan runs in nginx; wrk drives the write runs. bench/run.py stops,
	# saying what is missing, should any of them still be absent.
	command -v nginx >/dev/null && command -v wrk >/dev/null && test -f /usr/lib/nginx/modules/ngx_nchan_module.so \
	  || (apt-get update -q && apt-get install -y -q nginx-light libnginx-mod-nchan wrk)
	$(BIN)/python bench/run.py --write-docs
	# Change capture (docs/scale-out.md): needs PostgreSQL with wal_level = logical.
	$(BIN)/python bench/capture.py --write-docs || echo "capture benchmark not run (PostgreSQL unreachable or not logical)"
	# Bridges (docs/bridges.md): changes/s out to NATS JetStream (a nats-server of its own).
	$(BIN)/python bench/bridges.py || echo "bridges benchmark not run (nats-server missing)"
	# Bridges in (docs/bridges.md): messages/s from MQTT and from JetStream into a watched collection.
	$(BIN)/python bench/bridges_in.py || echo "bridges-in benchmark not run (nats-server or mosquitto missing)"

clean:
	rm -rf $(VENV) *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
