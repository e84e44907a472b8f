# Two entry points (see README): `make quickstart` and `make test`. Both create .venv when missing and
# (re)install the package whenever pyproject.toml changes, so a fresh machine needs only python3 + pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmfer-installed

.PHONY: quickstart test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[sample,asr,cluster,dev]'
	@touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/mmfer quickstart $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP)
	@bash tools/ensure-chromium.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) mmfer-quickstart .pytest_cache .ruff_cache
