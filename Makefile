# One entry point for people and CI. Everything installs into .venv from the project's own files.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test ui test-browser test-distributed lint bench lock clean

# Create the virtualenv and install the pinned dependencies (re-runs when a requirements file changes).
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	@# Put plugins/ (the marketbars package, as Airflow does) and the project root on the venv's path.
	printf '%s\n%s\n' "$(CURDIR)/plugins" "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/market-bars-project.pth"
	touch $@

## Run the main job end to end on embedded defaults (PostgreSQL, S3 server, Airflow) and print what it did.
demo: $(STAMP)
	$(BIN)/python -m sandbox.demo

## Run the whole test suite: lint, types, import layers, then unit, integration (real servers on loopback) and DAG runs.
test: lint
	$(BIN)/pytest

## The Airflow UI locally: airflow standalone with the project's DAGs and airflow_settings.yaml.
ui: $(STAMP)
	$(BIN)/python -m sandbox.ui

## A real browser drives the UI (Debian's Chromium + Playwright, both installed here if missing).
test-browser: $(STAMP)
	@test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(BIN)/pip install --quiet -r requirements-browser.txt -c constraints.txt
	$(BIN)/pytest -m browser

## Airflow's components as processes, two Celery workers, the machine's PostgreSQL and Redis.
test-distributed: $(STAMP)
	$(BIN)/pytest -m distributed

## ruff (with AIR3 on the DAGs and the complexity cap), mypy (strict), import-linter (layers).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR3 dags
	$(BIN)/mypy
	$(BIN)/lint-imports

## Benchmarks, each side by side with its baseline in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench.flatfile_load
	$(BIN)/python -m bench.backtest
	$(BIN)/python -m bench.backtest_universe
	$(BIN)/python -m bench.backtest_search
	$(BIN)/python -m bench.adjusted_reads

## Re-resolve and lock every transitive version (run after editing a requirements file).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -r requirements-dev.txt
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
