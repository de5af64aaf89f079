# The two commands a new user needs: `make run` and `make test`.
# Python 3.11 (what the control plane is built and tested on) where the machine has it by that name.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
PYTHON_CHECK = import sys; sys.exit(None if sys.version_info >= (3, 11) else 'controlplane needs Python 3.11 or newer; $(PYTHON) is ' + sys.version.split()[0] + ' (set PYTHON=...)')
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT
# The demo product make run starts beside the control plane (development only).
DEMO_PRODUCT_PORT ?= $(shell expr $(PORT) + 1)

.PHONY: run test bench lint arrows format install install-dev clean

# The venv is (re)built when a requirements file changes; a second `make run` reuses it and var/.
$(BIN)/.installed-runtime: requirements.txt
	test -x $(BIN)/python || { $(PYTHON) -c "$(PYTHON_CHECK)" && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || { $(PYTHON) -c "$(PYTHON_CHECK)" && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(BIN)/.installed-runtime $@

install: $(BIN)/.installed-runtime
install-dev: $(BIN)/.installed-dev

## make run: web, worker and beat on http://127.0.0.1:$(PORT) with the embedded defaults, and the demo product
## on 127.0.0.1:$(DEMO_PRODUCT_PORT) (Ctrl-C stops them all).
run: install
	$(BIN)/python manage.py preflight
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py import_flags --if-empty flags/fixtures/wingmanmatch.json
	$(BIN)/python manage.py ensure_demo_environment
	@# Exit status 3: production, where the demo is refused; its line (Procfile.dev) then idles.
	$(BIN)/python manage.py ensure_demo_product --port $(DEMO_PRODUCT_PORT) \
		--control-plane-url http://127.0.0.1:$(PORT) || [ $$? -eq 3 ]
	cat Procfile Procfile.dev > $${CONTROLPLANE_VAR_DIR:-var}/Procfile.run
	rm -rf $${PROMETHEUS_MULTIPROC_DIR:-$${CONTROLPLANE_VAR_DIR:-var}/prometheus}  # counters of an earlier run
	@# Last before the three start, so that its lines (the password and the file keeping it) are the
	@# nearest to the prompt; the worker names the file again once it is ready.
	$(BIN)/python manage.py ensure_operator
	@# Ctrl-C: honcho stops the three and exits 130, which is how a stop is asked for here, not an error.
	@# CONTROLPLANE_RUN_PID: make; if it is killed, controlplane/attached.py stops the three.
	@trap : INT; CONTROLPLANE_RUN_PID=$$PPID PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/honcho start --no-colour --port $(PORT) --procfile $${CONTROLPLANE_VAR_DIR:-var}/Procfile.run; \
		status=$$?; [ $$status -eq 130 ] && exit 0; exit $$status

## make test: the whole suite, in TEST_PROCESSES processes (default 2). Set DATABASE_URL, REDIS_URL,
## CELERY_BROKER_URL to run it on real servers.
TEST_PROCESSES ?= 2
test: install-dev
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadgroup $(PYTEST_ARGS)

## make bench: every benchmark in bench/.
bench: install-dev
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@set -e; found=0; for script in bench/[!_]*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(BIN)/python "$$script"; \
	done; [ $$found -eq 1 ] || echo "no benchmarks in bench/ yet"

## make lint: ruff, the import contracts of pyproject.toml (the arrows between the packages), and mypy.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## make arrows: which package imports which (docs/architecture.md says which may).
arrows: install-dev
	$(BIN)/python -m tests.test_architecture

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/cache var/broker var/static var/test
