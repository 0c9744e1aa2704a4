#!/usr/bin/env bash
# The prepared GPU check for a lent device machine: one call, under 5 minutes (timeouts 90 +
# 75 + 130 s; Inductor's cache makes the later compilations of the same graph fast), ends with ONE
# JSON line (benchmarks/gpu_summary.py): the CUDA tests, CPU/CUDA agreement (eager, GraphedGINO,
# RaggedGraphedGINO, compile_gino), and the ratios of the GPU floors: car step
# geoop/neuraloperator (eager, compiled, graphed), batch of 8 different cars in one call /
# 8 single calls, peak memory geoop/neuraloperator.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   DRY_RUN=1 bash benchmarks/gpu_check.sh   # anywhere: the same pipeline on the CPU, short
#                                            # (CUDA-only pieces report "skipped")
#
# Needs, next to the repo checkout: .gpu_site/ holding the pure-Python packages the
# machine lacks (neuralop 2.0.0, tensorly, tltorch, torch_harmonics, configmypy, zencfg,
# opt_einsum; copied from .venv-bench's site-packages; add pytest, _pytest, pluggy, iniconfig
# from .venv for the CUDA tests), and benchmarks/gpu_shims/ (a
# torch_scatter.segment_csr built on torch.segment_reduce, see its docstring). Made here with
#   SP=.venv-bench/lib/python3.11/site-packages; mkdir -p .gpu_site
#   cp -r $SP/{neuralop,tensorly,tltorch,torch_harmonics,configmypy,zencfg,opt_einsum} .gpu_site/
#   echo /.gpu_site/ >> .git/info/exclude
# and sent with the device tool's carry=[".gpu_site"]. Without neuralop the geoop-only
# numbers are still measured (the neuralop ratios are then null).
set -u
OUT=${OUT:-/tmp/geoop_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD:$PWD/.gpu_site:$PWD/benchmarks/gpu_shims" PYTHONUNBUFFERED=1
if [ "${DRY_RUN:-0}" = "1" ]; then
    DEV=cpu; STEPS=${STEPS:-2}; WARMUP=1; THREADS=1; ONLY=${ONLY:-neuralop_step,geoop_step,geoop_step_compiled}
    GINO_TIMEOUT=${GINO_TIMEOUT:-400}  # CPU Inductor compiles for minutes
    echo "dry run: CPU, $STEPS steps" > "$OUT/gpu.txt"
    echo '{"skipped": "dry run (CPU)"}' > "$OUT/agreement.json"
    PYTEST_SEL=(-m "not slow" tests/test_compiled.py tests/test_graphed.py)
else
    DEV=cuda; STEPS=${STEPS:-10}; WARMUP=3; THREADS=4
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
    timeout 90 $PY benchmarks/cuda_agreement.py > "$OUT/agreement.json" 2> "$OUT/agreement.err"
    PYTEST_SEL=(-k cuda tests/test_compiled.py tests/test_graphed.py)
fi
$PY -c "import torch; print('torch', torch.__version__)" >> "$OUT/gpu.txt" 2>&1
if $PY -c "import pytest" 2>/dev/null; then
    timeout ${PYTEST_TIMEOUT:-75} $PY -m pytest -q -p no:cacheprovider "${PYTEST_SEL[@]}" > "$OUT/pytest.txt" 2>&1
else
    echo "pytest not importable" > "$OUT/pytest.txt"
fi
timeout ${GINO_TIMEOUT:-130} $PY benchmarks/gino.py --device $DEV --threads $THREADS --steps $STEPS --warmup $WARMUP \
    --only ${ONLY:-neuralop_step,geoop_step,geoop_step_graphed,geoop_step_ragged,geoop_batch8,geoop_single8,geoop_step_compiled} \
    --out "$OUT/gino.json" > "$OUT/gino.txt" 2> "$OUT/gino.err"
$PY benchmarks/gpu_summary.py "$OUT"
