# The two commands a user needs, each doing its own set-up on a fresh machine:
#   make repro   build the environment, then run every pipeline (dvc repro --keep-going + summary)
#   make test    build the environment, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The page `dvc plots show` fills, with Vega inlined so it draws offline (.dvc/config: plots.html_template)
PLOTS_PAGE := .dvc/offline_plots.html
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.md5(open('requirements.txt','rb').read()).hexdigest()[:12])")

export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup repro test bench clean-env

setup: $(STAMP) $(PLOTS_PAGE)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

$(PLOTS_PAGE): $(STAMP) stages/plots_page.py
	$(BIN)/python -m stages.plots_page $@

repro: setup
	$(BIN)/python -m stages repro

test: setup
	$(BIN)/ruff check stages tests benchmarks
	$(BIN)/ruff format --check stages tests benchmarks
	$(BIN)/python -m pytest -q -n auto tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean-env:
	rm -rf $(VENV)
