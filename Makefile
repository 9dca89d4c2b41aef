# The two commands of the README: `make demo` and `make test`.  Both create .venv when it is
# missing and install everything from PyPI (no apt, no sudo).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sparseforge-installed

.PHONY: demo test test-all clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[test,sweep]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sparseforge demo

# Everything but the tests marked slow; still runs real cocotb simulations and a real bitstream.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
