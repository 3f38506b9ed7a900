# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install into .venv, then run the whole pipeline on the bundled samples
#   make test   install into .venv (with test extras), then run the test suite
#   make mutate mutation testing of the critical modules (not part of CI; see docs/testing.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# torch 2.13.0 first: on machines that carry its CPU wheel this avoids a multi-GB CUDA download;
# elsewhere pip takes it from PyPI like any other dependency.
TORCH ?= torch==2.13.0

.PHONY: demo test install mutate clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# Mutation testing (minutes to hours; not part of CI): MODULES="megatron minhash" limits the run.
MODULES ?=
mutate: $(VENV)/.installed
	$(BIN)/cosmic-ray --version >/dev/null 2>&1 || $(BIN)/python -m pip install -q -e ".[test,mutation]"
	$(BIN)/python mutation/run.py $(MODULES)

# The whole pipeline on the bundled samples: corpus -> tokenizer -> packed data -> training -> text.
demo: $(VENV)/.installed
	rm -rf $(OUT)
	$(BIN)/cpm corpus build --source all --output $(OUT)/corpus
	$(BIN)/cpm shards inspect $(OUT)/corpus --verify --rows 1
	$(BIN)/cpm tokenizer train --input $(OUT)/corpus --output $(OUT)/tokenizer --vocab-size 3000
	$(BIN)/cpm data pack --input $(OUT)/corpus --tokenizer $(OUT)/tokenizer --output $(OUT)/packed --seq-len 128 --valid-fraction 0.05
	$(BIN)/cpm shards inspect $(OUT)/packed --tokenizer $(OUT)/tokenizer --rows 1
	OMP_NUM_THREADS=2 $(BIN)/cpm train --size tiny --input $(OUT)/packed --output $(OUT)/run \
	    --max-steps 200 --global-batch 8 --micro-batch 8 --warmup-steps 20 --eval-every 100 --save-every 100 --log-every 20 --no-progress
	$(BIN)/cpm eval ppl --checkpoint $(OUT)/run --data $(OUT)/packed --split valid
	$(BIN)/cpm eval choice --checkpoint $(OUT)/run --task tnews --output $(OUT)/tnews-predictions.jsonl
	$(BIN)/cpm export hf --checkpoint $(OUT)/run --output $(OUT)/hf
	$(BIN)/cpm generate --checkpoint $(OUT)/run --prompt "今天天气不错，" --max-new-tokens 48 --seed 1

clean:
	rm -rf $(VENV) out
