# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG := config/imagehub.toml
export IMAGEHUB_CONFIG ?= $(CURDIR)/$(CONFIG)

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Initialise a demo catalog under var/ (seeded on the first run only), start the gateway in the
# background (output appended to var/serve.log) and wait until it has bound every port, then open the
# TUI; quitting the TUI stops that gateway. A gateway that cannot start stops make run with its reason
# (exit 1); one that dies later is shown in the TUI, which then runs the jobs itself. See cli/run.py.
run: install
	@$(BIN)/python -m cli.run --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The guest test (a Debian VM booted twice under TCG, a core's worth of CPU for a minute or two) runs
# on its own after the rest, so that it does not slow the suite's timing checks.
test: install lint
	$(BIN)/pytest -m "not guest"
	$(BIN)/pytest -m guest -n 0

# Speed and memory against targets and reference tools (gateway.py and upload.py need nginx, vsftpd, openssh-server).
bench: install
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/tui.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) var .pytest_cache
