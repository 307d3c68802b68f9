# make demo: set up .venv and run the main job; make test: set up .venv and run the tests.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: demo test setup clean leaderboard bench

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vreid demo --output runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

leaderboard: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/leaderboard.py --methods all --seeds 3 --skip-done  # one thread, as the table was made

clean:
	rm -rf $(VENV) runs .pytest_cache
