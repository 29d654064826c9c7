# The few commands people type. `make run` sets up and runs everything; `make test` runs the suite.
.PHONY: run setup test lint format bench bench-full worker web train-defaults

run:
	scripts/run.sh

setup:
	scripts/setup.sh

test:
	scripts/test.sh

lint:
	.venv/bin/ruff check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: setup
	.venv/bin/python -m bench.run --quick

bench-full: setup
	.venv/bin/python -m bench.run --full

train-defaults: setup
	scripts/train_defaults.sh
