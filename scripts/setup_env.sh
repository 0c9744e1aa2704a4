#!/usr/bin/env bash
# Create or refresh ./.venv with everything geoop needs on a fresh CPU machine.
#
# Idempotent: a stamp file keyed on this script and pyproject.toml skips the work when
# nothing changed. torch-cluster builds from source (~10 min on 2 cores) the first time;
# pip's wheel cache makes later installs on the same machine instant.
#
# Environment knobs:
#   GEOOP_SKIP_FAST=1   skip the optional fast paths (torch-cluster, open3d)
#   PYTHON=python3.11   interpreter used to create the venv
#   GEOOP_WITH_OPENFOAM=1  also install OpenFOAM (Debian package openfoam, as root) for
#                       `geoop data airfoil --solver rans` and benchmarks/nested.py; CI does not need it
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

# Optional system dependency of geoop.data.rans (before the stamp check: independent of the venv)
if [ "${GEOOP_WITH_OPENFOAM:-0}" = 1 ] && ! command -v simpleFoam >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    printf '[setup] %s\n' "apt-get install openfoam openfoam-examples" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openfoam openfoam-examples >/dev/null
  else
    printf '[setup] %s\n' "GEOOP_WITH_OPENFOAM=1: install OpenFOAM yourself (Debian: apt-get install openfoam)" >&2
  fi
fi
VENV=.venv
STAMP=$VENV/.geoop-setup-stamp
want=$(cat scripts/setup_env.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

log() { printf '[setup] %s\n' "$*" >&2; }

# System libraries: open3d needs libusb; VTK off-screen rendering needs GL/X libs; jemalloc is
# the optional allocator (LD_PRELOAD) for large CPU cases (README: "One large car across ranks").
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in libusb-1.0-0 libgl1 libxrender1 libgomp1 libosmesa6 libjemalloc2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# Headless Chromium for the test that loads the interactive HTML viewer like a person would
# (tests/test_viewer.py; skipped with a reason where it is absent). GEOOP_SKIP_CHROMIUM=1 skips it.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ "${GEOOP_SKIP_CHROMIUM:-0}" != 1 ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    log "apt-get install chromium (HTML viewer test)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || log "chromium unavailable: the HTML viewer test will be skipped"
  fi
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install -U pip setuptools wheel ninja

# CPU torch pin first: anything later that says "torch" is then already satisfied.
log "torch (CPU build)"
$PIP install "torch==2.13.0"

log "core dependencies"
$PIP install "numpy>=1.24" "scipy>=1.10" "meshio>=5.3" "trimesh>=4" "torch-geometric>=2.5" \
  "tensorly>=0.8" "pyyaml>=6" "tqdm>=4" "matplotlib>=3.7" "threadpoolctl>=3.5" "rtree>=1.0" "pyvista>=0.43" \
  "pytest>=7" "pytest-timeout" "hypothesis>=6" "h5py" "tomli-w>=1.0" "ruff>=0.6" "plotly>=5"

# Packed case stores (optional extra geoop[store]; geoop data pack, geoop.data.store): zarr format 3
log "zarr"
$PIP install "zarr>=3.1,<4"

# TensorBoard logging of training runs (optional extra geoop[tensorboard]; geoop train --tensorboard DIR)
log "tensorboard"
$PIP install "tensorboard>=2.14" || log "tensorboard unavailable: geoop train --tensorboard will say so"

# torch-harmonics: binary wheels are tied to one torch; 0.8.0 builds against 2.13.
if ! $VENV/bin/python -c "import torch_harmonics" 2>/dev/null; then
  log "torch-harmonics 0.8.0 (source build against the pinned torch)"
  $PIP install --no-build-isolation "torch-harmonics==0.8.0"
fi

if [ "${GEOOP_SKIP_FAST:-0}" != 1 ]; then
  log "open3d"
  $PIP install "open3d>=0.18" || log "open3d unavailable: geoop falls back to other backends"
  if ! $VENV/bin/python -c "import torch_cluster" 2>/dev/null; then
    log "torch-cluster (source build, ~10 min the first time, cached afterwards)"
    MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation "torch-cluster==1.6.3" \
      || log "torch-cluster build failed: geoop falls back to other backends"
  fi
fi

log "geoop (editable)"
$PIP install --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
log "done"
