# l3d: `make figures` reproduces every figure, `make test` runs the tests. Every target sets up .venv first.
#   make env              .venv with the exact versions of requirements.lock and l3d (editable); `. .venv/bin/activate`
#   make lock             requirements.lock anew: a fresh venv from pyproject.toml's ranges, every version it installed
#   make figures          every notebook at paper scale -> figures/<notebook>/ (PNG, PDF, metrics.json), then a table:
#                         each headline number now against the committed one, within its tolerance or not; then make docs
#   make -B figures       the same, even where figures/ is already up to date
#   make figures DEVICE=cuda JOBS=1
#   make docs             README.md's results table and docs/ written anew from figures/*/metrics.json (make figures
#                         ends with it); every number there comes from those files
#   make quickstart       a first run in about half a minute: L3D on a toy model of superposition -> runs/quickstart/
#                         (the numbers, figures, a dashboard; python -m l3d.examples.quickstart)
#   make notebook NB=01 PARAMS="-p n_features 10 -p n_hidden 4 -p n_subnetworks 10"
#                         one notebook with your parameters -> runs/<notebook>/ (figures/ stays as it is); a
#                         parameter the notebook does not have stops it at once, naming the nearest one; the
#                         previous runs/<notebook>/ is replaced only when the new run succeeds; prints the
#                         notebook's output and a progress line every 10 s as it runs
#   make parameters NB=05 the parameters of a notebook, with their defaults
#   make test             ruff (make lint), unit tests, every notebook under nbval with small parameters
#   make test-references  new reference headline numbers of the notebooks (tests/notebooks/<notebook>.json);
#                         make test-references NB="02 07" for those notebooks only
#   make models           train 05's and 06's embedded models again (one thread, about a minute) and ship them:
#                         l3d/experiments/weights/ (safetensors, manifest.json with SHA-256); another CPU, another model
#   make lab              JupyterLab on notebooks/; make lab LAB_ARGS="--no-browser --port 8890"
#   make benchmark        speed and memory numbers (benchmarks/)
# CPU threads: l3d uses one thread for small models (l3d/runtime/threads.py); set L3D_THREADS to choose.
# Memory: every target's processes keep the memory they free for reuse (glibc's MALLOC_MMAP_THRESHOLD_ and
# MALLOC_TRIM_THRESHOLD_ below, unless set already): fewer page faults, the same numbers (docs/reproducing.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVICE ?= auto
JOBS ?= 2
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := build/lock-venv
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# make -j starts the notebooks in this order, the longest first (their minutes in benchmarks/results/
# make_figures_cpu.json), so that two slots end together; notebooks not listed follow in name order.
LONGEST_FIRST := 04 03 08 01 07 02 06 05
ORDERED := $(foreach n,$(LONGEST_FIRST),$(filter notebooks/$(n)_%,$(NOTEBOOKS)))
ORDERED += $(filter-out $(ORDERED),$(NOTEBOOKS))
METRICS := $(patsubst notebooks/%.ipynb,figures/%/metrics.json,$(ORDERED))
NB ?=
PARAMS ?=
NB_FILE := $(firstword $(wildcard notebooks/$(NB)*.ipynb))
NB_NAME := $(basename $(notdir $(NB_FILE)))
LAB_ARGS ?=
SOURCES := $(shell find l3d -name '*.py' -o -name 'manifest.json' -o -name 'page.*')   # the shipped models' manifest and the dashboard's page too

.PHONY: all env lock models figures compare docs quickstart notebook parameters test lint unit notebooks-test test-references lab \
	benchmark clean-figures
.DELETE_ON_ERROR:

all: figures

env: $(STAMP)

# The exact versions of requirements.lock, then l3d itself (editable, nothing more: the lock has its dependencies).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# requirements.lock anew from pyproject.toml's ranges: every package a fresh venv installs, at its version (pip
# itself left out; the CUDA libraries torch brings on Linux keep torch's own marker).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[experiments,notebooks,test]'
	{ echo "# Every package 'make env' installs, at the version it was tested with; 'make lock' writes it anew."; \
	  echo "# Made on $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.machine(), "Python", platform.python_version())') from pyproject.toml ([experiments,notebooks,test])."; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable --disable-pip-version-check | grep -v '^pip==' \
	    | sed -E 's/^((nvidia-|cuda-|triton)[^ ]*)$$/\1 ; platform_system == "Linux"/'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

# 05's and 06's embedded models trained again and shipped (tools/notebooks.py models).
models: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tools/notebooks.py models

# Every notebook at paper scale; outputs (figures, metrics.json, the executed notebook) in figures/<notebook>/;
# then the table of headline numbers now against the committed ones.
figures: $(STAMP)
	$(MAKE) --no-print-directory -j$(JOBS) $(METRICS)
	@$(PY) tools/notebooks.py compare
	$(PY) tools/docs.py

compare: $(STAMP)
	@$(PY) tools/notebooks.py compare

# README.md's results table and docs/ from figures/*/metrics.json and benchmarks/results/ (tools/docs.py).
docs: $(STAMP)
	$(PY) tools/docs.py

figures/%/metrics.json: notebooks/%.ipynb $(SOURCES) $(STAMP)
	@$(PY) tools/notebooks.py check-parameters $< device
	@mkdir -p figures/$*
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MPLBACKEND=Agg $(VENV)/bin/papermill --cwd notebooks --progress-bar \
		$< figures/$*/$*.ipynb -p device $(DEVICE)
	$(PY) tools/notebooks.py embed-figures figures/$*/$*.ipynb

# The first run the README shows: TMS end to end, its numbers printed, figures and a dashboard in runs/quickstart/.
quickstart: $(STAMP)
	$(PY) -m l3d.examples.quickstart --out runs/quickstart

# One notebook, e.g. NB=01 (or its full name), with papermill parameters PARAMS, into runs/<notebook>/: the names
# checked first, the run made in runs/.<notebook>.partial/ and swapped in when it succeeds (tools/notebooks.py run).
notebook: $(STAMP)
	@test -n "$(NB)" -a -n "$(NB_FILE)" || { echo 'usage: make notebook NB=01 [PARAMS="-p n_features 10 -p n_hidden 4"]; NB is one of: $(basename $(notdir $(NOTEBOOKS)))'; exit 2; }
	$(PY) tools/notebooks.py run $(NB_NAME) -p device $(DEVICE) $(PARAMS)

parameters: $(STAMP)
	@test -n "$(NB)" -a -n "$(NB_FILE)" || { echo 'usage: make parameters NB=05; NB is one of: $(basename $(notdir $(NOTEBOOKS)))'; exit 2; }
	@$(PY) tools/notebooks.py parameters $(NB_NAME)

# The linter first (ruff, pinned in requirements.lock; its rules in pyproject.toml), then the unit tests, then the
# notebooks.
test: lint unit notebooks-test

# ruff on the code (the notebooks are not linted); it changes nothing, it only reports.
lint: $(STAMP)
	$(PY) -m ruff check l3d tests tools benchmarks

unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

# The notebooks with small parameters under nbval; each headline cell checks its numbers against
# tests/notebooks/<notebook>.json within the tolerances of l3d/report/tolerances.py.
notebooks-test: $(STAMP)
	rm -rf build/nbtest
	$(PY) tools/notebooks.py prepare-tests build/nbtest
	$(if $(NOTEBOOKS),OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -q -p no:cacheprovider build/nbtest,@echo "no notebooks yet")

# New reference headline numbers for make test, after a change that moves a headline number on purpose.
test-references: $(STAMP)
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) tools/notebooks.py references tests/notebooks $(NB)

# JupyterLab refuses to run as root unless told; LAB_ARGS go to it as they are.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

benchmark: $(STAMP)
	$(PY) benchmarks/bench.py --device $(DEVICE)

clean-figures:
	rm -rf figures/*/
