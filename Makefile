# Two entry points (see README.md): `make book` and `make test`. Both create .venv when it is
# missing and install requirements.txt into it first.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
SMOKE_DIR := _build/smoke
CELL_TIMEOUT ?= 1200
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' | sort)

.PHONY: book test unit smoke setup clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

book: $(STAMP)
	$(VENV)/bin/jupyter-book build .
	@echo "book: open _build/html/index.html"

test: unit smoke

unit: $(STAMP)
	$(PY) -m pytest -q tests

# Notebook smoke run: papermill injects smoke=True into a copy of every book notebook,
# nbval executes the copies (outputs are not compared: --nbval-lax).
smoke: $(STAMP)
	rm -rf $(SMOKE_DIR) && mkdir -p $(SMOKE_DIR)
	for nb in $(NOTEBOOKS); do \
	  $(VENV)/bin/papermill --prepare-only -p smoke True "$$nb" "$(SMOKE_DIR)/$$(basename $$(dirname $$nb))__$$(basename $$nb)" || exit 1; \
	done
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=$(CELL_TIMEOUT) $(SMOKE_DIR)

clean:
	rm -rf _build
