# l3d: `make figures` reproduces every figure, `make test` runs the tests. Every target sets up .venv first.
#   make env              .venv with the exact versions of requirements.lock and l3d (editable); `. .venv/bin/activate`
#   make lock             requirements.lock anew: a fresh venv from pyproject.toml's ranges, every version it installed
#   make figures          every notebook at paper scale -> figures/<notebook>/ (PNG, PDF, metrics.json), then a table:
#                         each headline number now against the committed one, within its tolerance or not
#   make -B figures       the same, even where figures/ is already up to date
#   make figures DEVICE=cuda JOBS=1
#   make notebook NB=01 PARAMS="-p n_features 10 -p n_hidden 4 -p n_subnetworks 10"
#                         one notebook with your parameters -> runs/<notebook>/ (figures/ stays as it is);
#                         prints the notebook's output and progress bars (every 10 s) as it runs
#   make test             unit tests + every notebook under nbval with small parameters
#   make test-references  new reference headline numbers of the notebooks (tests/notebooks/<notebook>.json);
#                         make test-references NB="02 07" for those notebooks only
#   make models           train 05's and 06's embedded models again (one thread, about a minute) and ship them:
#                         l3d/experiments/weights/ (safetensors, manifest.json with SHA-256); another CPU, another model
#   make lab              JupyterLab on notebooks/; make lab LAB_ARGS="--no-browser --port 8890"
#   make benchmark        speed and memory numbers (benchmarks/)
# CPU threads: l3d uses one thread for small models (l3d/runtime/threads.py); set L3D_THREADS to choose.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVICE ?= auto
JOBS ?= 2
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := build/lock-venv
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
METRICS := $(patsubst notebooks/%.ipynb,figures/%/metrics.json,$(NOTEBOOKS))
NB ?=
PARAMS ?=
NB_FILE := $(firstword $(wildcard notebooks/$(NB)*.ipynb))
NB_NAME := $(basename $(notdir $(NB_FILE)))
LAB_ARGS ?=
SOURCES := $(shell find l3d -name '*.py' -o -name 'manifest.json')   # the shipped models' manifest too

.PHONY: all env lock models figures compare notebook test unit notebooks-test test-references lab benchmark clean-figures
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

compare: $(STAMP)
	@$(PY) tools/notebooks.py compare

figures/%/metrics.json: notebooks/%.ipynb $(SOURCES) $(STAMP)
	@mkdir -p figures/$*
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MPLBACKEND=Agg $(VENV)/bin/papermill --cwd notebooks --progress-bar \
		$< figures/$*/$*.ipynb -p device $(DEVICE)
	$(PY) tools/notebooks.py embed-figures figures/$*/$*.ipynb

# One notebook, e.g. NB=01 (or its full name), with papermill parameters PARAMS, into runs/<notebook>/.
notebook: $(STAMP)
	@test -n "$(NB)" -a -n "$(NB_FILE)" || { echo 'usage: make notebook NB=01 [PARAMS="-p n_features 10 -p n_hidden 4"]; NB is one of: $(basename $(notdir $(NOTEBOOKS)))'; exit 2; }
	@mkdir -p runs/$(NB_NAME)
	L3D_PROGRESS=text TQDM_MININTERVAL=10 MPLBACKEND=Agg $(VENV)/bin/papermill --cwd notebooks --log-output --no-progress-bar $(NB_FILE) \
		runs/$(NB_NAME)/$(NB_NAME).ipynb -p device $(DEVICE) -p out_dir $(CURDIR)/runs/$(NB_NAME) $(PARAMS)
	@echo "outputs: runs/$(NB_NAME)/ (figures, metrics.json, the executed notebook $(NB_NAME).ipynb)"

test: unit notebooks-test

unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

# The notebooks with small parameters under nbval; each headline cell checks its numbers against
# tests/notebooks/<notebook>.json within the tolerances of l3d/report/headlines.py.
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
