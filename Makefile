# The front door: `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLES := examples
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv examples serve test stress lint bench clean protos

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'pip==26.3'
	$(PY) -m pip install -q -c constraints.txt -e '.[tensorflow,onnx,remote,watch,server,grpc,optimize,dev]'
	touch $(STAMP)

examples: $(STAMP)
	$(PY) -m keepwarm.examples $(EXAMPLES)

serve: examples
	$(VENV)/bin/keepwarm serve $(EXAMPLES)/models

test: $(STAMP)
	$(PY) -m pytest -m "not stress" -q

stress: $(STAMP)
	$(PY) -m pytest -m stress -q -s

# Regenerate the committed gRPC stubs from src/keepwarm/grpc/protos/**/*.proto.
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: examples
	$(PY) bench/loadonce.py --models $(EXAMPLES)/models --json bench/results/loadonce.json
	$(PY) bench/multimodel.py --json bench/results/multimodel.json
	$(PY) bench/warmup.py --models $(EXAMPLES)/models --json bench/results/warmup.json
	$(PY) bench/serve.py --models $(EXAMPLES)/models --json bench/results/serve.json
	$(PY) bench/perf_analyzer.py --models $(EXAMPLES)/models --json bench/results/perf_analyzer.json
	$(PY) bench/hotpath.py --json bench/results/hotpath.json
	$(PY) bench/optimize.py --models $(EXAMPLES)/models --json bench/results/optimize.json
	$(PY) bench/workers.py --json bench/results/workers.json

clean:
	rm -rf $(VENV) $(EXAMPLES)/models $(EXAMPLES)/hub $(EXAMPLES)/.builder-hash .test-cache .pytest_cache
