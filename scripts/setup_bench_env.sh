#!/usr/bin/env bash
# Create or refresh ./.venv-bench: geoop + PyPI neuraloperator + torch-scatter, all on the
# same CPU torch, for benchmarks/gino.py (geoop's GINO against neuralop.models.GINO).
#
# Why a separate venv: neuraloperator's runtime extras (tensorly-torch, zencfg, ...) and the
# torch-scatter build are not geoop dependencies and must not leak into ./.venv.
#
# Pins and choices
# - torch==2.13.0 (CPU build) is installed first and then held by a constraints file for
#   every later pip call, so nothing can swap it for another (or a CUDA) build.
# - torch-scatter is built from source with --no-build-isolation against that torch
#   (~10 min on 2 cores the first time; pip's wheel cache makes it instant afterwards).
#   neuralop.layers.segment_csr uses it when importlib.util.find_spec("torch_scatter") is
#   not None and use_scatter=True; otherwise it falls back to a Python loop over segments.
# - neuraloperator 2.0.0 declares wandb, ruamel-yaml, zencfg, configmypy, tensorly,
#   tensorly-torch, matplotlib, numpy>=1.25, opt-einsum, h5py (no torch). It is installed
#   with --no-deps plus exactly those it imports at `import neuralop`; wandb is skipped
#   (neuralop imports it inside try/except and only uses it for logging).
# - torch-harmonics 0.8.0 (a geoop core dependency) is built from source against the
#   pinned torch, as in scripts/setup_env.sh.
#
# Idempotent: a stamp keyed on this script and pyproject.toml skips the work when nothing
# changed. Knobs: PYTHON=python3.11, MAX_JOBS=2.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-bench
STAMP=$VENV/.geoop-bench-stamp
want=$(cat scripts/setup_bench_env.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

log() { printf '[setup-bench] %s\n' "$*" >&2; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
CONSTRAINTS=$VENV/torch-constraint.txt
echo "torch==2.13.0" > "$CONSTRAINTS"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install -U pip setuptools wheel ninja

log "torch 2.13.0 (CPU build)"
$PIP install -c "$CONSTRAINTS" "torch==2.13.0"
$VENV/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.version.cuda is None, f"a CUDA build of torch was installed: {torch.version.cuda}"
PY

log "geoop core dependencies"
$PIP install -c "$CONSTRAINTS" "numpy>=1.25" "scipy>=1.10" "meshio>=5.3" "trimesh>=4" \
  "torch-geometric>=2.5" "tensorly>=0.8" "pyyaml>=6" "tqdm>=4" "matplotlib>=3.7" "h5py" \
  "threadpoolctl>=3.5" "rtree>=1.0" "pyvista>=0.43"  # rtree: trimesh SDF; pyvista/VTK: .vtp (benchmarks/body_rans.py)

if ! $VENV/bin/python -c "import torch_harmonics" 2>/dev/null; then
  log "torch-harmonics 0.8.0 (source build against the pinned torch)"
  $PIP install -c "$CONSTRAINTS" --no-build-isolation "torch-harmonics==0.8.0"
fi

if ! $VENV/bin/python -c "import torch_scatter" 2>/dev/null; then
  log "torch-scatter (source build, ~10 min the first time, cached afterwards)"
  MAX_JOBS=${MAX_JOBS:-2} $PIP install -c "$CONSTRAINTS" --no-build-isolation "torch-scatter==2.1.2"
fi

log "neuraloperator 2.0.0 (--no-deps) and the dependencies it imports"
$PIP install -c "$CONSTRAINTS" "tensorly-torch" "opt-einsum" "ruamel.yaml" "configmypy" "zencfg>=0.3.0"
$PIP install -c "$CONSTRAINTS" --no-deps "neuraloperator==2.0.0"

log "geoop (editable)"
$PIP install --no-deps --no-build-isolation -e .

$VENV/bin/python - <<'PY'
import importlib.util
import torch, torch_scatter, neuralop, pyvista  # noqa: F401
from neuralop.models import GINO
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert importlib.util.find_spec("torch_scatter") is not None
print(f"[setup-bench] torch {torch.__version__}, torch_scatter {torch_scatter.__version__}, "
      f"neuralop {neuralop.__version__}")
PY
echo "$want" > "$STAMP"
log "done"
