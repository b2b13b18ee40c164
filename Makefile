# l3d: `make figures` reproduces every figure, `make test` runs the tests. Both set up .venv first.
#   make figures          every notebook at paper scale -> figures/<notebook>/ (PNG, PDF, metrics.json)
#   make -B figures       the same, even where figures/ is already up to date
#   make figures DEVICE=cuda JOBS=1
#   make test             unit tests + every notebook under nbval with small parameters
#   make lab              JupyterLab on notebooks/
#   make benchmark        speed and memory numbers (benchmarks/)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVICE ?= auto
JOBS ?= 2
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
METRICS := $(patsubst notebooks/%.ipynb,figures/%/metrics.json,$(NOTEBOOKS))
SOURCES := $(shell find l3d -name '*.py')

.PHONY: all env figures test unit notebooks-test lab benchmark clean-figures
.DELETE_ON_ERROR:

all: figures

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[experiments,notebooks,test]'
	touch $@

# Every notebook at paper scale; outputs (figures, metrics.json, the executed notebook) in figures/<notebook>/.
figures: $(STAMP)
	$(MAKE) --no-print-directory -j$(JOBS) $(METRICS)

figures/%/metrics.json: notebooks/%.ipynb $(SOURCES) $(STAMP)
	@mkdir -p figures/$*
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MPLBACKEND=Agg $(VENV)/bin/papermill --cwd notebooks --progress-bar \
		$< figures/$*/$*.ipynb -p device $(DEVICE)

test: unit notebooks-test

unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

notebooks-test: $(STAMP)
	rm -rf build/nbtest
	$(PY) tools/notebooks.py prepare-tests build/nbtest
	$(if $(NOTEBOOKS),MPLBACKEND=Agg $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -q -p no:cacheprovider build/nbtest,@echo "no notebooks yet")

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

benchmark: $(STAMP)
	$(PY) benchmarks/bench.py --device $(DEVICE)

clean-figures:
	rm -rf figures/*/
