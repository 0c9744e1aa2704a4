# The two set-up commands (see README): `make demo` and `make test`.
# Both create or refresh ./.venv (scripts/setup_env.sh is idempotent and fast when up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-fallback bench bench-peers bench-body-rans clean

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

# The peers' environments of benchmarks/body_rans.py: .venv-bench (neuraloperator's GINO) and
# .venv-pnemo (PhysicsNeMo's Transolver, ~6 GB: a CUDA torch run on the CPU), then every arm
# on 12 synthetic cases for a minute each (proof that each arm runs, not a comparison).
bench-peers: setup
	bash scripts/setup_bench_env.sh
	bash scripts/setup_peer_env.sh
	OMP_NUM_THREADS=1 $(PY) benchmarks/body_rans.py --synthetic 12 --minutes 1 --tiny --threads 1 --out runs/body_rans_smoke

# The 3-D car comparison on a generated set (geoop data body --solver rans --out data/body_rans):
# five arms, 30 min each on 2 threads
bench-body-rans: setup
	bash scripts/setup_bench_env.sh
	bash scripts/setup_peer_env.sh
	$(PY) benchmarks/body_rans.py --data data/body_rans --minutes 30 --threads 2 --out runs/body_rans_bench

clean:
	rm -rf $(VENV) .pytest_cache
