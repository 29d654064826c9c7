# The few commands people type. `make run` sets up and runs everything; `make test` runs the suite.
.PHONY: run setup test lint format bench bench-full bench-scale bench-features worker web train-defaults screenshots

run:
	scripts/run.sh

setup:
	scripts/setup.sh

test:
	scripts/test.sh

lint:
	.venv/bin/ruff check .

# the admin's review loop in headless Chromium; one PNG per page under var/screenshots/
screenshots:
	.venv/bin/python -m pytest tests/browser/test_result_pages_browser.py -q -s

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: setup
	.venv/bin/python -m bench.run --quick

bench-full: setup
	.venv/bin/python -m bench.run --full

# pages, lists and job submission at 1,000 and 20,000 recordings (SIZES=1000,100000 for a 100k batch;
# ARGS=--pgvector: in a PostgreSQL with pgvector, started for the run)
bench-scale: setup
	.venv/bin/python -m bench.scale --sizes $(or $(SIZES),1000,20000) $(ARGS)

bench-features: setup
	.venv/bin/python -m bench.features --cold --write

train-defaults: setup
	scripts/train_defaults.sh
