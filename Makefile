# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install into .venv, then run the whole pipeline on the bundled samples
#   make test   install into .venv (with the test and dask extras), then run the test suite
#   make mutate mutation testing of the critical modules (not part of CI; see docs/testing.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# torch 2.13.0 first: on machines that carry its CPU wheel this avoids a multi-GB CUDA download;
# elsewhere pip takes it from PyPI like any other dependency. Every other package comes from
# requirements.lock: exact versions with sha256 hashes, the set the test suite passed with.
TORCH ?= torch==2.13.0
LOCK ?= requirements.lock
UV ?= uv==0.13.9

.PHONY: demo test install chromium mutate clean lock test-latest

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/activate
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

install: $(VENV)/.installed

# Headless Chromium renders the corpus report in the test suite (the test skips, saying so, without it).
# Installed with apt-get where that works without a password (root, or sudo -n); elsewhere a note only.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	      else sudo -n apt-get update -q && sudo -n apt-get install -y -q --no-install-recommends chromium; fi; } ; } || \
	  echo "note: chromium is not installed; tests/test_corpus_report.py will skip its browser check"

test: $(VENV)/.installed chromium
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
	$(BIN)/cpm corpus report $(OUT)/corpus --output $(OUT)/corpus-report.html
	$(BIN)/cpm tokenizer train --input $(OUT)/corpus --output $(OUT)/tokenizer --vocab-size 3000
	$(BIN)/cpm data pack --input $(OUT)/corpus --tokenizer $(OUT)/tokenizer --output $(OUT)/packed --seq-len 128 --valid-fraction 0.05
	$(BIN)/cpm shards inspect $(OUT)/packed --tokenizer $(OUT)/tokenizer --rows 1
	OMP_NUM_THREADS=2 $(BIN)/cpm train --size tiny --input $(OUT)/packed --output $(OUT)/run \
	    --max-steps 200 --global-batch 8 --micro-batch 8 --warmup-steps 20 --eval-every 100 --save-every 100 --log-every 20 --no-progress
	$(BIN)/cpm eval ppl --checkpoint $(OUT)/run --data $(OUT)/packed --split valid
	$(BIN)/cpm eval choice --checkpoint $(OUT)/run --task tnews --output $(OUT)/tnews-predictions.jsonl
	$(BIN)/cpm export hf --checkpoint $(OUT)/run --output $(OUT)/hf
	$(BIN)/cpm generate --checkpoint $(OUT)/run --prompt "今天天气不错，" --max-new-tokens 48 --seed 1

# Re-resolve requirements.lock: the newest versions pyproject.toml's ranges allow, for every
# Python cpm supports, every extra, with hashes. torch and its CUDA-only dependencies stay out
# (torch is installed first, from $(TORCH)). Run `make test` afterwards and commit the lock.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q "$(UV)"
	echo "$(TORCH)" > .venv-lock/torch-pin.txt
	.venv-lock/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
	    --constraint .venv-lock/torch-pin.txt --no-header -q -o .venv-lock/all.txt
	.venv-lock/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
	    --constraint .venv-lock/torch-pin.txt --generate-hashes --no-strip-markers \
	    $$(grep -oE '^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' .venv-lock/all.txt \
	       | sed 's/==$$//; s/^/--no-emit-package /') \
	    --custom-compile-command "make lock" -o $(LOCK)

# The suite against the newest releases pyproject.toml's ranges allow (torch stays $(TORCH)):
# finds dependency drift on purpose, before users do. Uses its own virtualenv.
test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > .venv-latest/torch-pin.txt
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager \
	    -c .venv-latest/torch-pin.txt -e ".[test,dask,bench]"
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-lock .venv-latest out
