#!/usr/bin/env bash
# The prepared GPU check for a lent device machine (one call, ~5 min): geoop on CUDA agrees
# with the CPU (and GraphedGINO's CUDA-graph replay with eager), the CUDA tests when pytest is
# importable, then benchmarks/gino.py on CUDA (geoop eager and CUDA-graphed vs neuraloperator,
# batch of 8, GNO with 10 M edges, query at 1 M points).
#
# Needs, next to the repo checkout: .gpu_site/ holding the pure-Python packages the
# machine lacks (neuralop 2.0.0, tensorly, tltorch, torch_harmonics, configmypy, zencfg,
# opt_einsum; copied from .venv-bench's site-packages; add pytest, _pytest, pluggy, iniconfig
# from .venv for the CUDA tests), and benchmarks/gpu_shims/ (a
# torch_scatter.segment_csr built on torch.segment_reduce, see its docstring). Made here with
#   SP=.venv-bench/lib/python3.11/site-packages; mkdir -p .gpu_site
#   cp -r $SP/{neuralop,tensorly,tltorch,torch_harmonics,configmypy,zencfg,opt_einsum} .gpu_site/
#   echo /.gpu_site/ >> .git/info/exclude
# and sent with the device tool's carry=[".gpu_site"].
set -u
OUT=${OUT:-/tmp/geoop_gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.gpu_site:$PWD/benchmarks/gpu_shims" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, neuralop; print('torch', torch.__version__, 'neuralop', neuralop.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
python3 benchmarks/cuda_agreement.py 2>&1 | tee "$OUT/agreement.txt"
if python3 -c "import pytest" 2>/dev/null; then
    python3 -m pytest -q -p no:cacheprovider tests/test_graphed.py 2>&1 | tail -15 | tee "$OUT/pytest_cuda.txt"
fi
python3 benchmarks/gino.py --device cuda --threads 4 --steps ${STEPS:-10} --warmup 3 --only ${ONLY:-step,batch8,gno,query} \
    --out "$OUT/gino_cuda.json" 2>&1 | tee "$OUT/gino_cuda.txt"
