PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bytecode demo test lint bench clean

# torch is pinned first so that pip takes the local CPU build on CPU-only
# machines instead of resolving a multi-GB CUDA build through transformers/trl.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$${SFTDATA_TORCH_VERSION:-2.13.0}" || $(BIN)/pip install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) bytecode
	touch $(STAMP)

setup: $(STAMP)

# An editable install leaves sftdata's modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set
# (as on the CI machine) every process compiles them again: 0.12 s of each run's start-up. A wheel
# install compiles them; this does the same for the source tree (stale files are ignored by Python).
bytecode:
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q sftdata

demo: setup
	rm -rf out/demo out/demo-model
	$(BIN)/sftdata run pipelines/demo.yaml --input examples/demo.jsonl --output out/demo --workers 2
	$(BIN)/sftdata train out/demo --model builtin:tiny-llama3 --output-dir out/demo-model \
		--max-steps 8 --batch-size 2 --lr 5e-3 --set logging_steps=1 --set save_strategy=no

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check sftdata tests benchmarks

bench: setup bytecode
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf out build dist *.egg-info .pytest_cache .ruff_cache
