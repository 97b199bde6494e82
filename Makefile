# Two commands for a newcomer: `make serve` (the gateway on :5000 with the shipped fr/es models) and `make test`.
PYTHON ?= python3
PORT ?= 5000
TEST_WORKERS ?= 2
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test bench gpu-check demo-models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Serving needs no torch: onnxruntime, tokenizers, numpy, FastAPI.
$(VENV)/.serve-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.serve-deps

serve: $(VENV)/.serve-deps
	$(BIN)/glotta serve --port $(PORT)

# The playground tests drive Debian's chromium (Playwright uses it as it is: no browser download). Installed here when
# missing and apt-get can (root); elsewhere those tests are skipped with the reason, except in CI where they must run.
$(VENV)/.browser:
	@{ command -v chromium && command -v jq; } >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium jq >/dev/null; } || \
		echo "note: no chromium or jq: the browser and README-example tests will be skipped (apt-get install chromium jq)"
	touch $@

test: $(VENV)/.test-deps $(VENV)/.browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

$(VENV)/.bench-deps: pyproject.toml $(VENV)/.test-deps
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/serving_spine.py
	$(BIN)/python benchmarks/scheduling.py
	$(BIN)/python benchmarks/triton_gateway.py
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/data_prep.py

# First contact with a GPU machine (bare host): installs TensorRT-LLM into .venv-trtllm, builds fp16 / INT8 weight-only /
# INT8-KV / 2:4 engines of the demo model, runs them, compares greedy tokens with the CPU engine; exit 3 without a GPU.
gpu-check: $(VENV)/.test-deps
	$(BIN)/python -m glotta.export.gpu_check

# Rebuild the shipped demo models through the whole pipeline (data prepare → tokenizer → convert → train local →
# export) from the corpus in ../shared: both at once, one thread each, about 25 minutes on 2 cores. Intermediate
# results stay in build/ (an interrupted build resumes; delete build/ to start again).
CORPUS ?= ../shared/corpus
demo-models: $(VENV)/.test-deps
	$(BIN)/python -m glotta.cli.demo_models --input $(CORPUS)/fr.jsonl.gz --lang fr \
		--output model_repository/glotta-fr-tiny --work build/demo-fr & \
	$(BIN)/python -m glotta.cli.demo_models --input $(CORPUS)/es.jsonl.gz --lang es \
		--output model_repository/glotta-es-tiny --work build/demo-es & \
	wait

clean:
	rm -rf $(VENV) *.egg-info
