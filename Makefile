# Two entry points (see README.md): `make book` and `make test`. Both create .venv when it is
# missing and install requirements.txt into it first.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
SMOKE_DIR := _build/smoke
CELL_TIMEOUT ?= 1200
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' | sort)

.PHONY: book test unit smoke paper-smoke gpu-check setup clean models paper bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

# Claims records of this build go to _build/claims (the dashboard page collects them).
book: $(STAMP)
	FEATADV_CLAIMS_DIR=$(CURDIR)/_build/claims $(VENV)/bin/jupyter-book build .
	@echo "book: open _build/html/index.html"

# Retrain the zoo's own models whose shipped checkpoint is stale (FORCE=1: all of them; IDS=...: these).
models: $(STAMP)
	$(PY) -m featadv_core.models.retrain $(if $(FORCE),--all) $(IDS)

# One notebook at the paper's scale: its <notebook>.paper.yaml preset (papermill -f), optionally
# on a device: make paper NB=book/01_sabour2016/label_stats.ipynb DEVICE=cuda
paper: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make paper NB=book/<chapter>/<notebook>.ipynb [DEVICE=cuda]"; exit 2; }
	mkdir -p _build/paper
	$(VENV)/bin/papermill "$(NB)" "_build/paper/$(notdir $(NB))" -f "$(NB:.ipynb=.paper.yaml)" $(if $(DEVICE),-p device $(DEVICE))
	@echo "paper-scale run: _build/paper/$(notdir $(NB))"

# Every benchmark, results as JSON (with the machine they ran on) in benchmarks/results/. Peers that are
# not installed (benchmarks/requirements.txt) are reported as such.
BENCHMARKS := feature_opt_solvers solver_overhead lots_attempts training_speed deepfool_peers fsa_speed
bench: $(STAMP)
	mkdir -p benchmarks/results
	for b in $(BENCHMARKS); do \
	  (cd benchmarks && $(CURDIR)/$(PY) $$b.py --json results/$$b.json) || exit 1; \
	done

# Notebook runs: SMOKE_JOBS notebooks at a time (pytest-xdist, one notebook per worker), each pinned to one
# thread when there are several. Measured on the 2-core CI machine, cold cache: the smoke run 318 s serial
# vs 224 s with 2 jobs; the presets' smoke run 18.7 min serial vs 9.5 min. (The unit tests gain nothing:
# one test, the zoo's retraining check, is most of their time.)
SMOKE_JOBS ?= 2
NBVAL = $(if $(filter 1,$(SMOKE_JOBS)),,OMP_NUM_THREADS=1) $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
  --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) $(if $(filter 1,$(SMOKE_JOBS)),,-n $(SMOKE_JOBS) --dist loadfile)

test: unit smoke paper-smoke

unit: $(STAMP)
	$(PY) -m pytest -q tests

# Notebook smoke run: papermill injects smoke=True into a copy of every book notebook,
# nbval executes the copies (outputs are not compared: --nbval-lax).
smoke: $(STAMP)
	rm -rf $(SMOKE_DIR) && mkdir -p $(SMOKE_DIR)
	for nb in $(NOTEBOOKS); do \
	  $(VENV)/bin/papermill --prepare-only -p smoke True "$$nb" "$(SMOKE_DIR)/$$(basename $$(dirname $$nb))__$$(basename $$nb)" || exit 1; \
	done
	FEATADV_CLAIMS_DIR=$(CURDIR)/$(SMOKE_DIR)/claims $(NBVAL) $(SMOKE_DIR)

# Every paper preset, executed on this CPU: each notebook with its <notebook>.paper.yaml and smoke=True on top,
# random weights for torchvision's ImageNet models, a few training steps for the paper-scale recipes and a
# stand-in image folder for the presets' image folders (book/_ext/paper_smoke.py says what stands in for what).
PAPER_SMOKE_DIR := _build/paper-smoke
paper-smoke: $(STAMP)
	rm -rf $(PAPER_SMOKE_DIR)/*.ipynb && mkdir -p $(PAPER_SMOKE_DIR)
	$(PY) book/_ext/paper_smoke.py $(PAPER_SMOKE_DIR)
	FEATADV_WEIGHTS=random FEATADV_TRAIN_BUDGET=smoke FEATADV_CLAIMS_DIR=$(CURDIR)/$(PAPER_SMOKE_DIR)/claims \
	  $(NBVAL) $(PAPER_SMOKE_DIR)

# On a lent CUDA machine: device-path tests, one smoke notebook and one paper preset per chapter on the GPU,
# the benchmarks' GPU rows; one summary table (benchmarks/results/gpu_check.json). About 8 minutes on one GPU.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf _build
