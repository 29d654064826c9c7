# The few commands people type. `make run` sets up and runs everything; `make test` runs the suite.
.PHONY: run setup test lint format bench bench-full bench-features worker web train-defaults screenshots

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

bench-features: setup
	.venv/bin/python -m bench.features --cold --write

train-defaults: setup
	scripts/train_defaults.sh
