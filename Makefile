# make serve: run the gateway on the bundled models at http://127.0.0.1:8000
#             (ARGS="--admin-token s3cret ..." adds flags of `gateway serve`)
# make test:  everything the test suite needs, then the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# gRPC beside HTTP (SPEC 15); its address is in the startup log
GRPC_PORT ?= 8001
# extra flags for `gateway serve`, e.g. make serve ARGS="--admin-token s3cret --log-level debug"
ARGS ?=
# make bench QUICK=1: one model, two connection counts, one open-loop rate, 2 s per level
QUICK_BENCH_ARGS := --models mlp --connections 1 64 --rate mlp=2000 --duration 2

.PHONY: serve test protos redis-server check-models lint bench bench-compare bench-drift bench-payload bench-protocols bench-profile bench-handler bench-features wrk clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the stamp files re-run the install whenever pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/gateway serve --model-repository models --host 127.0.0.1 --port $(PORT) \
	  --grpc-port $(GRPC_PORT) --features-file models/fraud/entities.csv $(ARGS)

# the tests start their own redis-server on free ports; install it where it is missing
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install it (e.g. apt-get install redis-server)"; exit 1; \
	  fi; }

test: $(VENV)/.installed-test redis-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the gRPC protocol's compiled descriptor set (gateway/rpc/messages.py loads it); a
# test fails while it is older than gateway/rpc/inference.proto
protos: $(VENV)/.installed-test
	$(BIN)/python -m grpc_tools.protoc -I gateway/rpc \
	  --descriptor_set_out=gateway/rpc/inference.desc gateway/rpc/inference.proto

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gateway tests loadtests
	$(BIN)/ruff format --check gateway tests loadtests
	$(BIN)/mypy  # gateway and tests, strict: [tool.mypy] in pyproject.toml

$(VENV)/.installed-loadtest: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[loadtest]'
	touch $@ $(VENV)/.installed

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is missing: install it (e.g. apt-get install wrk)"; exit 1; \
	  fi; }

# the benchmark of loadtests/benchmark.py; BENCH_ARGS="--duration 4" etc. to change it
# (options in BENCH_ARGS win over QUICK=1's, which come first)
bench: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.benchmark $(if $(QUICK),$(QUICK_BENCH_ARGS)) $(BENCH_ARGS)

# the working tree against a commit, alternating rounds (loadtests/compare.py); e.g.
# make bench-compare BENCH_ARGS="--baseline HEAD~1 --models mlp"
bench-compare: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.compare $(BENCH_ARGS)

# drift monitoring on vs off, side by side, and the time to bin one batch (loadtests/drift_cost.py)
bench-drift: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.drift_cost $(BENCH_ARGS)

# the payload log's cost: every request logged to a file vs no log, side by side
bench-payload: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.payload_cost $(BENCH_ARGS)

# REST JSON, REST binary and gRPC side by side on one gateway (loadtests/protocols.py)
bench-protocols: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.protocols $(BENCH_ARGS)

# where a request's microseconds go, by step, under wrk (loadtests/profile_request.py)
bench-profile: $(VENV)/.installed-loadtest wrk
	$(BIN)/python -m loadtests.profile_request $(BENCH_ARGS)

# what the inference handler costs per request, and each of its steps, in process
# (loadtests/handler_cost.py)
bench-handler: $(VENV)/.installed-loadtest
	$(BIN)/python -m loadtests.handler_cost $(BENCH_ARGS)

# features from Redis against the feature vector inline (loadtests/features_benchmark.py)
bench-features: $(VENV)/.installed-loadtest wrk redis-server
	$(BIN)/python -m loadtests.features_benchmark $(BENCH_ARGS)

check-models: $(VENV)/.installed
	$(BIN)/gateway models check models

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
