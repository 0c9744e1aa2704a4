# The two set-up commands (see README): `make demo` and `make test`.
# Both create or refresh ./.venv (scripts/setup_env.sh is idempotent and fast when up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-fallback bench clean

# ruff: pyflakes, pycodestyle and import order (configured in pyproject.toml)
lint: setup
	$(PY) -m ruff check geoop tests benchmarks examples scripts

setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) -m geoop demo

test: setup lint
	OMP_NUM_THREADS=2 $(PY) -m pytest -q $(PYTEST_ARGS)
	GEOOP_DISABLE_BACKENDS=torch_cluster,open3d OMP_NUM_THREADS=2 $(PY) -m pytest -q tests/test_neighbors.py $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/neighbors.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/fno.py
	$(PY) benchmarks/sdf.py
	bash scripts/setup_bench_env.sh   # neuraloperator + torch-scatter, only for the comparison
	.venv-bench/bin/python benchmarks/gino.py
	.venv-bench/bin/python benchmarks/launches.py

clean:
	rm -rf $(VENV) .pytest_cache
