#!/usr/bin/env bash
# Create or refresh ./.venv-pnemo: PhysicsNeMo (PyPI nvidia-physicsnemo) for the Transolver
# arm of benchmarks/body_rans.py, run on the CPU. The arm's worker runs in this venv's Python
# with PYTHONPATH at the checkout, so geoop itself is not installed here.
#
# Why a separate venv, and why this torch
# - physicsnemo 2.x imports timm at `import physicsnemo.models.transolver` (physicsnemo.nn
#   -> dit_layers / transformer_layers -> timm.layers), and timm.layers imports
#   torchvision.ops unconditionally, so Transolver cannot be imported without a working
#   torchvision. PyPI's torchvision does not load beside the CPU torch 2.13.0 of ./.venv
#   and ./.venv-bench ("operator torchvision::nms does not exist"), and PyPI has no CPU
#   build of it; torch 2.14.1 with torchvision 0.29.1 (PyPI's default, CUDA, builds) load
#   and run on the CPU. That is ~5.5 GB of CUDA libraries that never run here; the
#   alternatives (stubbing torchvision, copying Transolver's source out of the package)
#   would no longer be the published package.
# - physicsnemo 1.x imports transformer_engine unconditionally in its Transolver module.
#
# Pins: torch==2.14.1, torchvision==0.29.1 held by a constraints file for every later pip
# call; nvidia-physicsnemo==2.2.2 with its declared dependencies; the few geoop runtime
# dependencies the worker imports (reading the cases: meshio, pyvista/VTK for .vtp; preprocessing, scoring). Not
# torch-harmonics / torch-geometric: the worker builds no geoop model.
#
# Idempotent: a stamp keyed on this script skips the work when nothing changed.
# Knobs: PYTHON=python3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-pnemo
STAMP=$VENV/.geoop-pnemo-stamp
want=$(cat scripts/setup_peer_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

log() { printf '[setup-pnemo] %s\n' "$*" >&2; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
CONSTRAINTS=$VENV/torch-constraint.txt
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$CONSTRAINTS"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install -U pip setuptools wheel

log "torch 2.14.1 + torchvision 0.29.1 (PyPI builds, run on the CPU)"
$PIP install -c "$CONSTRAINTS" "torch==2.14.1" "torchvision==0.29.1"

log "nvidia-physicsnemo 2.2.2"
$PIP install -c "$CONSTRAINTS" "nvidia-physicsnemo==2.2.2"

log "geoop runtime dependencies of the worker"
$PIP install -c "$CONSTRAINTS" "numpy>=1.24" "scipy>=1.10" "meshio>=5.3" "trimesh>=4" "rtree>=1.0" \
  "pyyaml>=6" "tqdm>=4" "matplotlib>=3.7" "threadpoolctl>=3.5" "h5py" "pyvista>=0.43"

CUDA_VISIBLE_DEVICES="" PYTHONPATH=$PWD $VENV/bin/python - <<'PY'
import torch, torchvision, physicsnemo
from physicsnemo.models.transolver import Transolver
import pyvista, geoop.data.folder, geoop.train.metrics  # noqa: F401  (the worker's imports)
assert torch.__version__.startswith("2.14.1"), torch.__version__
m = Transolver(functional_dim=4, out_dim=8, embedding_dim=3, n_layers=1, n_hidden=16, n_head=2, slice_num=4, use_te=False)
y = m(torch.randn(1, 10, 4), torch.randn(1, 10, 3))
assert y.shape == (1, 10, 8), y.shape
print(f"[setup-pnemo] torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"physicsnemo {physicsnemo.__version__}: Transolver runs on the CPU")
PY
echo "$want" > "$STAMP"
log "done"
