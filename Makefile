# l3d: `make figures` reproduces every figure, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVICE ?= auto
JOBS ?= 2
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
METRICS := $(patsubst notebooks/%.ipynb,figures/%/metrics.json,$(NOTEBOOKS))
SOURCES := $(wildcard l3d/*.py)

.PHONY: all env figures test unit notebooks-test lab clean-figures
.DELETE_ON_ERROR:

all: figures

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[notebooks,test]'
	touch $@

# Every notebook at paper scale; outputs (figures, metrics.json, the executed notebook) in figures/<notebook>/.
figures: $(STAMP)
	$(MAKE) --no-print-directory -j$(JOBS) $(METRICS)

figures/%/metrics.json: notebooks/%.ipynb $(SOURCES) $(STAMP)
	@mkdir -p figures/$*
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/papermill --cwd notebooks --progress-bar \
		$< figures/$*/$*.ipynb -p device $(DEVICE)

test: unit notebooks-test

unit: $(STAMP)
	$(PY) -m pytest tests -q

notebooks-test: $(STAMP)
	rm -rf build/nbtest
	$(PY) tools/notebooks.py prepare-tests build/nbtest
	$(if $(NOTEBOOKS),$(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -q -p no:cacheprovider build/nbtest,@echo "no notebooks yet")

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean-figures:
	rm -rf figures/*/
