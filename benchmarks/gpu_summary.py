"""One JSON line from the files ``gpu_check.sh`` writes into its output folder.

Keys: ``device``; ``tests`` (pytest's last line); ``agreement_ok`` and the CPU/CUDA and
replay differences of ``cuda_agreement.py``; the GPU floors' ratios from ``gino.py``:
``step_ratio_eager`` / ``step_ratio_compiled`` / ``step_ratio_graphed`` (car step, geoop /
neuraloperator; graphed = the better of ``GraphedGINO`` and ``RaggedGraphedGINO``, both also
given), ``batch8_over_single8`` (8 different cars in one call / 8 single calls, eager),
``memory_ratio`` (peak, geoop eager / neuraloperator) and ``floors`` (met or not; null when
not measured).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FLOORS = {"step_ratio_best": 0.25, "batch8_over_single8": 0.5, "memory_ratio": 0.5}


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path) -> dict:
    res: dict = {}
    gpu = (out / "gpu.txt").read_text().strip().splitlines() if (out / "gpu.txt").exists() else []
    res["device"] = " | ".join(gpu[-2:])
    tests = (out / "pytest.txt").read_text().strip().splitlines() if (out / "pytest.txt").exists() else []
    res["tests"] = tests[-1] if tests else None
    agr = _load(out / "agreement.json") or {}
    res["agreement_ok"] = agr.get("ok")
    for k in ("gino_output_rel_diff", "gino_grad_rel_diff_max", "graphed_max_rel_diff", "ragged_max_rel_diff",
              "compiled_max_rel_diff", "syncs_per_training_step", "skipped", "graphed_error", "ragged_error",
              "compiled_error"):
        if k in agr:
            res["agreement_" + k] = agr[k]
    g = _load(out / "gino.json")
    if g is None:
        res["gino_error"] = ((out / "gino.err").read_text().strip().splitlines() or ["no gino.json"])[-1][:300] \
            if (out / "gino.err").exists() else "no gino.json"
        return res
    s, r = g["summary"], g["results"]
    res["gino_partial"] = bool(g.get("partial", False))  # cut short by its timeout: the workers it reached
    graphed = [v for v in (s.get("step_time_ratio_graphed"), s.get("step_time_ratio_ragged")) if v is not None]
    res.update({
        "step_ratio_eager": s.get("step_time_ratio"),
        "step_ratio_compiled": s.get("step_time_ratio_compiled"),
        "step_ratio_graphed": min(graphed) if graphed else None,
        "step_ratio_graphed_single_geometry": s.get("step_time_ratio_graphed"),
        "step_ratio_graphed_ragged": s.get("step_time_ratio_ragged"),
        "batch8_over_single8": s.get("batch8_ratio"),
        "memory_ratio": s.get("step_memory_ratio"),
        "memory_ratio_compiled": s.get("step_memory_ratio_compiled"),
        "memory_ratio_graphed_ragged": s.get("step_memory_ratio_ragged"),
        "compiled_over_eager": s.get("compiled_over_eager"),
        "times_s": {k: v.get("time_s") for k, v in r.items() if isinstance(v, dict)},
        "errors": {k: v["error"][:200] for k, v in r.items() if isinstance(v, dict) and "error" in v},
    })
    steps = [res[k] for k in ("step_ratio_eager", "step_ratio_compiled", "step_ratio_graphed") if res[k] is not None]
    res["step_ratio_best"] = min(steps) if steps else None
    res["floors"] = {k: (None if res.get(k) is None else bool(res[k] <= v)) for k, v in FLOORS.items()}
    return res


if __name__ == "__main__":
    print(json.dumps(summary(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/geoop_gpu"))))
