# retina-fusion: `make demo` and `make test` are the two commands a new user needs.
# Both create .venv when it is missing and (re)install when pyproject.toml changed.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo demo-quick test lint format bench serve serve-stack serve-api clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/retina demo

demo-quick: $(STAMP)
	$(BIN)/retina demo --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick,)

# The Prefect stack (server, worker, deployments) and the prediction service side by side;
# Ctrl-C stops both. Each runs alone as `make serve-stack` or `make serve-api`.
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 8000

serve: $(STAMP)
	$(MAKE) --no-print-directory -j2 serve-stack serve-api

serve-stack: $(STAMP)
	$(BIN)/python -m deployments.stack

serve-api: $(STAMP)
	$(BIN)/retina serve --host $(SERVE_HOST) --port $(SERVE_PORT)

clean:
	rm -rf .retina .pytest_cache .ruff_cache
