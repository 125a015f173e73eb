# The two commands a user needs: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/plano.yaml

.PHONY: install run test test-unit test-integration lint proto bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/plano-extproc up $(CONFIG)

test: install lint
	$(BIN)/python -m pytest -q tests

test-unit: install
	$(BIN)/python -m pytest -q -m unit tests

test-integration: install
	$(BIN)/python -m pytest -q -m integration tests

lint: install
	$(BIN)/ruff check plano_extproc tests
	$(BIN)/ruff format --check plano_extproc tests
	$(BIN)/mypy plano_extproc

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=plano_extproc/_proto \
		--pyi_out=plano_extproc/_proto proto/ext_proc.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
