# sinelr: `make demo` and `make test` work on a fresh machine (they install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo report findings test test-slow test-all lint format docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# A rank sweep (plain vs sine) of the occupancy task on a built-in shape, offline, then a table.
demo: install
	rm -rf outputs/demo
	$(BIN)/python run.py -m +experiment=demo_bof hydra.sweep.dir=outputs/demo
	$(BIN)/python -m scripts.report outputs/demo --scale 100

# The dashboard of every run under outputs/: outputs/report/index.html, report.md, plots/.
report: install
	$(BIN)/python -m scripts.report outputs --out outputs/report

# docs/findings.md and docs/findings.svg from the runs benchmarks/findings.yaml names.
findings: install
	$(BIN)/python -m scripts.findings

# One worker per core (pytest-xdist); each test runs single-threaded (tests/conftest.py).
# `test`: everything checked in-process (a minute or two). `test-slow`: the tests marked slow,
# which start fresh processes (run.py, scripts, a wandb service, PEFT's own test suite, the
# README's tour; about 18 min on 2 cores, 8 of them PEFT's suite), each paying ~11 s of imports
# on a slow CPU. CI runs `test`, then `test-slow`; `test-all` is both in one pytest.
test: install
	$(BIN)/python -m pytest -n auto -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -n auto -m slow

test-all: install
	$(BIN)/python -m pytest -n auto

# The documentation site (mkdocs-material, mkdocs.yml) from README.md and docs/, into outputs/site/.
# Strict: any warning fails it, and every internal link and anchor is checked (docs/development.md).
# (NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2, which pyproject's `mkdocs<2` rules out.)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
