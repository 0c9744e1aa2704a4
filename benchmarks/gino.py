"""GINO training step: geoop.models.GINO against neuraloperator's neuralop.models.GINO.

Run with the benchmark environment (``scripts/setup_bench_env.sh``)::

    .venv-bench/bin/python benchmarks/gino.py            # everything, ~5-10 min on 2 cores
    .venv-bench/bin/python benchmarks/gino.py --only step,batch8 --steps 5

Every measurement runs in a fresh subprocess (``--worker NAME``) so that peak memory is
that model's alone. Peak memory, as the target ``step_memory_ratio`` reads it, is the peak
of live tensor bytes on both devices: on CUDA ``torch.cuda.max_memory_allocated`` (column
"peak"), on the CPU the running sum of ``torch.profiler``'s allocation and free events
(column "live peak"). The CPU's "peak" column is the resident-set high-water mark above the
baseline after imports and data load (``step_rss_ratio``): it also counts the memory glibc
keeps after ``free``, which depends on the allocator's heuristics more than on the model.
Times are the median of ``--steps`` steps after ``--warmup`` steps, with
``torch.set_num_threads(--threads)``. Ratios are taken between numbers measured in the same
run.

Configuration (both models, the car case): 3,586 input points = the vertices of car 0 of
``mini_car.pt`` with their normals as input features (3 channels), 3,586 queries = the
same vertices, output 1 channel (pressure), latent box 16^3 over [0, 1]^3, radius 0.1 in
and out, FNO width 32, 8 modes per axis, 4 layers, GNO kernel MLP hidden (64, 64), NeRF
positional embedding with 8 frequencies, GELU; input GNO linear kernel with mean reduction
and 3 output channels, output GNO linear kernel with sum reduction (neuralop's choices),
lifting hidden 64, projection hidden 128. Loss: MSE against the CFD pressure;
one step = zero_grad + forward + backward (no optimizer, identical for both).

Measurements (``--worker`` names)
---------------------------------
``neuralop_step``  neuralop GINO step; it searches its neighbourhoods in every forward
                   (dense ``torch.cdist``: open3d's ML ops are not built for this torch);
                   torch-scatter must be importable (checked: neuralop's segment_csr uses it
                   when ``importlib.util.find_spec("torch_scatter")`` is not None).
``geoop_step``     geoop GINO step with the neighbourhoods precomputed once
                   (``model.precompute(sample)``), its intended training mode.
``geoop_step_search``  geoop GINO step that also searches the neighbourhoods in every step
                   (same work as neuralop's forward).
``geoop_step_plain_encoder``  the step with ``GINO(checkpoint_encoder=False)`` (the encoder
                   keeps its edge activations instead of recomputing them in backward):
                   fewer kernel launches on a GPU, more memory.
``geoop_step_graphed``  (CUDA only) geoop GINO step with forward and backward replayed as
                   CUDA graphs (``geoop.models.GraphedGINO``): the car step is bound by kernel
                   launches on a GPU, which a graph replays with one call.
``geoop_step_compiled``  geoop GINO step through ``torch.compile`` (``compile_gino``,
                   Inductor, dynamic sizes; compiled during the warm-up).
``geoop_step_ragged``  (CUDA only) the step replayed as CUDA graphs of a padded capacity
                   bucket (``RaggedGraphedGINO``, for folders of different geometries).
``geoop_batch8`` / ``geoop_single8``  8 different geometries (2k..8k points: vertices and
                   triangle centroids of the 3 cars, subsampled) in one batched step vs 8
                   single steps ("live peak" of single8: the largest of the 8 steps).
``geoop_batch8_ckpt``  the same batch with ``GINO(checkpoint_edges=0)``: the decoder (495k
                   edges) recomputes its edge MLP in backward too; time and memory against
                   ``geoop_batch8`` (``batch8_ckpt_time_ratio`` / ``batch8_ckpt_memory_ratio``).
``neuralop_batch8``  shows that neuralop's GINO cannot take 8 different geometries in one
                   call (records the error), and times the 8 single calls it needs.
``gno_10m``        geoop.nn.GNO training step (forward + backward) with 10 M edges,
                   kernel MLP (64, 64), 32 -> 32 channels, linear kernel; edges are random
                   CSR neighbourhoods with 100 sources per query (100k queries/sources).
``query_1m``       ``GINO.query(geometry, points)`` at 1 M random points in [0, 1]^3, no grad.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without an installed geoop
    sys.path.insert(0, str(ROOT))

CONFIG = dict(
    latent_shape=(16, 16, 16),
    radius=0.1,
    fno_width=32,
    fno_modes=8,
    fno_layers=4,
    gno_mlp=(64, 64),
    n_freqs=8,
    in_channels=3,  # vertex normals
    out_channels=1,  # pressure
)

TARGETS = {
    "step_time_ratio": 0.25,  # geoop / neuralop
    "step_memory_ratio": 0.5,
    "batch8_ratio": 0.6,  # one batched call / 8 single calls
    "gno_10m_peak_mb": 2048,
    "query_1m_peak_mb": 2048,
}


# ----------------------------------------------------------------------------- helpers
def _maxrss_mb() -> float:
    """Resident-set high-water mark of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _baseline_mb() -> float:
    """Reset the RSS high-water mark (``/proc/self/clear_refs``, as ``benchmarks/_memory.py``
    does) and return the current RSS in MiB: the baseline after imports and data load.
    Where the reset is impossible, the high-water mark so far is the baseline."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _memory import _reset_hwm, _rss_kib  # the neighbors engineer's helper
    except ImportError:
        return _maxrss_mb()
    if not _reset_hwm():
        return _maxrss_mb()
    return _rss_kib() / 1024.0


def _n_params(model) -> int:
    """Trainable real scalars (a complex parameter counts twice: neuralop stores its spectral
    weights as complex tensors, whose ``numel`` counts one per complex number)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


DEVICE = "cpu"  # set by main() from --device; the workers read it


def _to(*tensors):
    return tuple(t.to(DEVICE) for t in tensors)


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn, warmup: int, steps: int, peak: "_Peak | None" = None, model=None) -> dict:
    """Median wall and CPU (process, all threads) seconds of ``steps`` calls after ``warmup``
    (on CUDA each call is synchronised, so wall time includes the kernels). On CUDA a
    ``peak`` is restarted after the warm-up (with ``model``'s gradients released first), so
    it measures the steady-state step, not the one-off cuBLAS/cuFFT workspaces of the first."""
    for _ in range(warmup):
        fn()
    _sync()
    if peak is not None and DEVICE.startswith("cuda") and warmup > 0:
        if model is not None:
            model.zero_grad(set_to_none=True)
        peak.restart()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"time_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "times_s": wall}


class _Peak:
    """Peak memory of what runs between construction and :meth:`mb`, above the start.

    CPU: the resident-set high-water mark above the RSS at the start (``_baseline_mb``):
    what the OS sees, including memory the C allocator keeps after ``free``. CUDA:
    ``torch.cuda.max_memory_allocated`` above the allocation at the start (live tensors)."""

    def __init__(self):
        if DEVICE.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _baseline_mb()
        self.first = None

    def restart(self) -> None:
        """CUDA only: keep the peak so far as ``first`` and measure from here."""
        import torch

        torch.cuda.synchronize()
        self.first = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def mb(self) -> float:
        if DEVICE.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return _maxrss_mb() - self.base


def _live_peak_mb(fn) -> "float | None":
    """Peak of live tensor bytes during one ``fn()`` on the CPU, above the start: the
    running sum of the allocations and frees that ``torch.profiler`` records
    (``profile_memory=True``), independent of how the C allocator reuses or returns memory
    (the CPU analogue of ``torch.cuda.max_memory_allocated``). None on CUDA."""
    if DEVICE.startswith("cuda"):
        return None
    import json as _json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        events = _json.load(open(path))["traceEvents"]
    live = peak = 0
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        live += int(e["args"]["Bytes"])
        peak = max(peak, live)
    return peak / 2**20


def _car(i: int = 0):
    """Vertices (N, 3), normals (N, 3), pressure (N, 1) and centroids (F, 3) of car i."""
    from geoop.data.cars import load_mini_car_records

    r = load_mini_car_records()[i]
    return r["vertices"], r["vertex_normals"], r["press"].T.contiguous(), r["centroids"]


def _eight_geometries(seed: int = 0):
    """8 point clouds of 2k..8k points (vertices + centroids of the 3 cars, subsampled) with
    normals-like features (the nearest vertex normal is not needed for timing: unit z)."""
    import torch

    from geoop.data.cars import load_mini_car_records

    recs = load_mini_car_records()
    g = torch.Generator().manual_seed(seed)
    sizes = [2000, 8000, 3000, 7000, 4000, 6000, 5000, 2500]
    out = []
    for i, n in enumerate(sizes):
        r = recs[i % len(recs)]
        cloud = torch.cat([r["vertices"], r["centroids"]])
        pts = cloud[torch.randperm(cloud.shape[0], generator=g)[:n]]
        feat = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
        out.append((pts.contiguous(), feat, torch.randn(n, 1, generator=g)))
    return out


def _latent_grid(torch):
    n = CONFIG["latent_shape"][0]
    ax = torch.linspace(0.0, 1.0, n)
    return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)  # (n, n, n, 3)


# ----------------------------------------------------------------------------- neuralop
def _neuralop_model():
    import importlib.util

    from neuralop.models import GINO as NOGINO

    if importlib.util.find_spec("torch_scatter") is None:
        raise RuntimeError("torch_scatter is not importable: neuralop would use its Python segment loop")
    c = CONFIG
    model = NOGINO(
        in_channels=c["in_channels"],
        out_channels=c["out_channels"],
        gno_coord_dim=3,
        in_gno_radius=c["radius"],
        out_gno_radius=c["radius"],
        in_gno_transform_type="linear",
        out_gno_transform_type="linear",
        in_gno_pos_embed_type="nerf",
        out_gno_pos_embed_type="nerf",
        gno_embed_channels=c["n_freqs"],
        fno_in_channels=c["in_channels"],
        # neuralop's n_modes counts all kept frequencies of an axis (|k| < n/2); geoop's
        # fno_modes=m keeps |k| < m per axis: the same frequencies for n = 2m.
        fno_n_modes=(2 * c["fno_modes"],) * 3,
        fno_hidden_channels=c["fno_width"],
        fno_n_layers=c["fno_layers"],
        in_gno_channel_mlp_hidden_layers=list(c["gno_mlp"]),
        out_gno_channel_mlp_hidden_layers=list(c["gno_mlp"]),
        gno_use_open3d=False,
        gno_use_torch_scatter=True,
    )
    return model


def worker_neuralop_step(args) -> dict:
    import torch

    pts, nrm, prs = _to(*_car(0)[:3])
    latent = _latent_grid(torch).to(DEVICE)
    model = _neuralop_model().to(DEVICE)
    peak = _Peak()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(input_geom=pts[None], latent_queries=latent[None], output_queries=pts[None], x=nrm[None])
        loss = torch.nn.functional.mse_loss(out[0], prs)
        loss.backward()

    return {
        **_timed(step, args.warmup, args.steps, peak, model),
        "peak_mb": peak.mb(),
        "peak_incl_first_step_mb": peak.first,
        "live_peak_mb": _live_peak_mb(step),
        "params": _n_params(model),
    }


def worker_neuralop_batch8(args) -> dict:
    import torch

    geoms = [_to(*g) for g in _eight_geometries()]
    latent = _latent_grid(torch).to(DEVICE)
    model = _neuralop_model().to(DEVICE)
    # One call with 8 different geometries: the geometries must be one (1, n, 3) tensor;
    # ragged sizes cannot even be stacked, and a padded stack is not accepted either.
    error = None
    try:
        n = max(p.shape[0] for p, _, _ in geoms)
        padded = torch.zeros(len(geoms), n, 3, device=DEVICE)
        feats = torch.zeros(len(geoms), n, 3, device=DEVICE)
        for i, (p, f, _) in enumerate(geoms):
            padded[i, : p.shape[0]] = p
            feats[i, : p.shape[0]] = f
        out = model(input_geom=padded, latent_queries=latent[None], output_queries=padded, x=feats)
        error = f"no exception, but output of shape {tuple(out.shape)} from a padded (8, {n}, 3) input"
    except Exception as exc:  # what neuralop does with a batch of different geometries
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    peak = _Peak()

    def eight():
        model.zero_grad(set_to_none=True)
        loss = 0.0
        for p, f, y in geoms:
            out = model(input_geom=p[None], latent_queries=latent[None], output_queries=p[None], x=f[None])
            loss = loss + torch.nn.functional.mse_loss(out[0], y)
        loss.backward()

    return {"batched_call_error": error, **_timed(eight, 1, max(1, args.steps // 2), peak, model),
            "peak_mb": peak.mb(), "peak_incl_first_step_mb": peak.first}


# ----------------------------------------------------------------------------- geoop
def _geoop_model(**overrides):
    from geoop.models import GINO

    c = CONFIG
    return GINO(
        c["in_channels"],
        c["out_channels"],
        coord_dim=3,
        latent="box",
        latent_shape=c["latent_shape"],
        radius_in=c["radius"],
        radius_out=c["radius"],
        fno_width=c["fno_width"],
        fno_modes=c["fno_modes"],
        fno_layers=c["fno_layers"],
        gno_mlp=c["gno_mlp"],
        gno_reduction_in="mean",  # as neuralop's input GNO
        gno_reduction_out="sum",  # as neuralop's output GNO
        gno_channels=c["in_channels"],  # neuralop's linear input GNO outputs fno_in_channels = in_channels
        pos_embed="nerf",
        n_freqs=c["n_freqs"],
        projection_hidden=4 * c["fno_width"],  # neuralop: projection_channel_ratio=4
        **overrides,
    )


def _geoop_sample(pts, feat, y):
    from geoop import Geometry
    from geoop.batch import Sample

    g = Geometry(pts, fields={"x": feat, "y": y}, validate=False)
    return Sample(geometry=g)


def _geoop_step_fn(model, batch):
    import torch

    def step():
        model.zero_grad(set_to_none=True)
        out = model(batch, batch.fields["x"])
        loss = torch.nn.functional.mse_loss(out, batch.query_fields["y"] if batch.query_fields else batch.fields["y"])
        loss.backward()

    return step


def _geoop_batch(model, samples, precompute: bool):
    from geoop.batch import GeometryBatch

    if precompute:
        samples = [model.precompute(s) for s in samples]
    return GeometryBatch.from_samples(samples).to(DEVICE)


def _geoop_car(**overrides):
    """The geoop model (``GINO`` keyword overrides) and car 0 as a sample (normals in,
    pressure out), on DEVICE."""
    pts, nrm, prs, _ = _car(0)
    return _geoop_model(**overrides).to(DEVICE), _geoop_sample(*_to(pts, nrm, prs))


def worker_geoop_step(args, search: bool = False, **overrides) -> dict:
    model, sample = _geoop_car(**overrides)
    peak = _Peak()
    if search:
        def step():
            batch = _geoop_batch(model, [sample], precompute=True)
            _geoop_step_fn(model, batch)()
    else:
        batch = _geoop_batch(model, [sample], precompute=True)
        step = _geoop_step_fn(model, batch)
    return {
        **_timed(step, args.warmup, args.steps, peak, model),
        "peak_mb": peak.mb(),
        "peak_incl_first_step_mb": peak.first,
        "live_peak_mb": _live_peak_mb(step),
        "params": _n_params(model),
    }


def worker_geoop_step_search(args) -> dict:
    return worker_geoop_step(args, search=True)


def worker_geoop_step_plain_encoder(args) -> dict:
    """The step with ``GINO(checkpoint_encoder=False)``: the encoder keeps its edge
    activations (one chunk on CUDA instead of 16k-edge chunks recomputed in backward: ~100
    fewer kernel launches per step, ``benchmarks/launches.py``) for more memory."""
    return worker_geoop_step(args, checkpoint_encoder=False)


def worker_geoop_step_graphed(args) -> dict:
    """geoop step with forward and backward replayed as CUDA graphs (``GraphedGINO``, one
    fixed geometry, new input fields copied in each step). CUDA only. Peak memory is taken
    from before the capture (the graphs' memory pool is allocated then, not per replay)."""
    import torch

    if not DEVICE.startswith("cuda"):
        return {"skipped": "CUDA graphs need a GPU"}
    from geoop.models import GraphedGINO

    model, sample = _geoop_car()
    batch = _geoop_batch(model, [sample], precompute=True)
    x, y = batch.fields["x"], batch.fields["y"]
    peak = _Peak()
    graphed = GraphedGINO(model, batch, x)

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(graphed(x), y).backward()

    return {**_timed(step, args.warmup, args.steps), "peak_mb": peak.mb(), "params": _n_params(model)}


def worker_geoop_step_compiled(args) -> dict:
    """geoop step through ``torch.compile`` (``geoop.models.compile_gino``: Inductor, dynamic
    point / query / edge counts); compilation happens in the warm-up steps."""
    from geoop.models import compile_gino

    model, sample = _geoop_car()
    batch = _geoop_batch(model, [sample], precompute=True)
    cm = compile_gino(model)
    peak = _Peak()
    step = _geoop_step_fn(cm, batch)
    return {**_timed(step, max(args.warmup, 2), args.steps, peak, model), "peak_mb": peak.mb(),
            "peak_incl_first_step_mb": peak.first, "live_peak_mb": _live_peak_mb(step),
            "graphs_compiled": cm.graphs_compiled, "params": _n_params(model)}


def worker_geoop_step_ragged(args) -> dict:
    """(CUDA only) geoop step replayed as CUDA graphs of a padded capacity bucket
    (``geoop.models.RaggedGraphedGINO``: what a folder of different geometries uses)."""
    if not DEVICE.startswith("cuda"):
        return {"skipped": "CUDA graphs need a GPU"}
    from geoop.models import RaggedGraphedGINO

    model, sample = _geoop_car()
    batch = _geoop_batch(model, [sample], precompute=True)
    peak = _Peak()
    ragged = RaggedGraphedGINO(model)
    step = _geoop_step_fn(ragged, batch)
    return {**_timed(step, args.warmup, args.steps), "peak_mb": peak.mb(), "graphs": len(ragged.graphs),
            "params": _n_params(model)}


def worker_geoop_batch8(args, **overrides) -> dict:
    model = _geoop_model(**overrides).to(DEVICE)
    samples = [_geoop_sample(*_to(*g)) for g in _eight_geometries()]
    batch = _geoop_batch(model, samples, precompute=True)
    peak = _Peak()
    step = _geoop_step_fn(model, batch)
    return {**_timed(step, 1, max(1, args.steps // 2), peak, model), "peak_mb": peak.mb(),
            "peak_incl_first_step_mb": peak.first, "live_peak_mb": _live_peak_mb(step),
            "points": [int(c) for c in batch.counts()],
            "edges_in_out": [batch.neighbors_in.num_edges, batch.neighbors_out.num_edges]}


def worker_geoop_batch8_ckpt(args) -> dict:
    """The batch of 8 with ``checkpoint_edges=0``: the decoder recomputes its edges too."""
    return worker_geoop_batch8(args, checkpoint_edges=0)


def worker_geoop_single8(args) -> dict:
    model = _geoop_model().to(DEVICE)
    samples = [_geoop_sample(*_to(*g)) for g in _eight_geometries()]
    batches = [_geoop_batch(model, [s], precompute=True) for s in samples]
    steps = [_geoop_step_fn(model, b) for b in batches]
    peak = _Peak()

    def eight():
        for s in steps:
            s()

    return {**_timed(eight, 1, max(1, args.steps // 2), peak, model), "peak_mb": peak.mb(),
            "peak_incl_first_step_mb": peak.first, "live_peak_mb": _live_peak_mb(eight)}


def worker_gno_10m(args) -> dict:
    import torch

    from geoop.neighbors.neighborhoods import Neighborhoods
    from geoop.nn.gno import GNO

    g = torch.Generator().manual_seed(0)
    q = s = 100_000
    k = 100
    sources = torch.rand(s, 3, generator=g)
    queries = torch.rand(q, 3, generator=g)
    index = torch.randint(0, s, (q * k,), generator=g)
    index = index.view(q, k).sort(dim=1).values.reshape(-1)
    ptr = torch.arange(0, q * k + 1, k)
    nb = Neighborhoods(index, ptr, num_sources=s, radius=0.1)
    f = torch.randn(s, 32, generator=g)
    w = torch.full((s,), 1.0 / s)
    layer = GNO(32, 32, coord_dim=3, mlp_hidden=(64, 64), kernel="linear", reduction="weighted").to(DEVICE)
    sources, queries, f, w = _to(sources, queries, f, w)
    nb = nb.to(DEVICE)
    peak = _Peak()

    def step():
        layer.zero_grad(set_to_none=True)
        out = layer(sources, queries, nb, f, w)
        out.square().mean().backward()

    return {"edges": int(index.numel()), **_timed(step, 1, max(1, args.steps // 2), peak, layer),
            "peak_mb": peak.mb(), "peak_incl_first_step_mb": peak.first}


def worker_query_1m(args) -> dict:
    import torch

    from geoop import Geometry

    pts, nrm, prs, _ = _car(0)
    pts, nrm = _to(pts, nrm)
    model = _geoop_model().eval().to(DEVICE)
    geom = Geometry(pts, fields={"x": nrm}, validate=False)
    q = torch.rand(1_000_000, 3, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    peak = _Peak()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.query(geom, q, x=nrm) if _query_takes_x(model) else model.query(geom, q)
    _sync()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"time_s": dt, "cpu_s": dc, "peak_mb": peak.mb(), "out_shape": list(out.shape)}


def _query_takes_x(model) -> bool:
    import inspect

    return "x" in inspect.signature(model.query).parameters


WORKERS = {
    "neuralop_step": worker_neuralop_step,
    "geoop_step": worker_geoop_step,
    "geoop_step_search": worker_geoop_step_search,
    "geoop_step_plain_encoder": worker_geoop_step_plain_encoder,
    "geoop_step_graphed": worker_geoop_step_graphed,
    "geoop_step_compiled": worker_geoop_step_compiled,
    "geoop_step_ragged": worker_geoop_step_ragged,
    "geoop_batch8": worker_geoop_batch8,
    "geoop_batch8_ckpt": worker_geoop_batch8_ckpt,
    "geoop_single8": worker_geoop_single8,
    "neuralop_batch8": worker_neuralop_batch8,
    "gno_10m": worker_gno_10m,
    "query_1m": worker_query_1m,
}
GROUPS = {
    "step": ["neuralop_step", "geoop_step", "geoop_step_search", "geoop_step_plain_encoder", "geoop_step_graphed",
             "geoop_step_ragged", "geoop_step_compiled"],
    "batch8": ["geoop_batch8", "geoop_single8", "geoop_batch8_ckpt", "neuralop_batch8"],
    "gno": ["gno_10m"],
    "query": ["query_1m"],
}


# ----------------------------------------------------------------------------- driver
def _run_worker(name: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--device", args.device]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker {name} failed (exit {proc.returncode}): " + " | ".join(tail)}
    return json.loads(lines[-1])


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _get(res, name, key):
    r = res.get(name) or {}
    return r.get(key)


def _mem(res, name):
    """Live tensor peak (CPU) or max_memory_allocated (CUDA) of a measurement."""
    live = _get(res, name, "live_peak_mb")
    return live if live is not None else _get(res, name, "peak_mb")


def summarize(res: dict) -> dict:
    nt, gt, gst = (_get(res, n, "time_s") for n in ("neuralop_step", "geoop_step", "geoop_step_search"))
    nm, gm = (_get(res, n, "peak_mb") for n in ("neuralop_step", "geoop_step"))
    on_cpu = _get(res, "geoop_step", "live_peak_mb") is not None
    s = {
        "params_neuralop": _get(res, "neuralop_step", "params"),
        "params_geoop": _get(res, "geoop_step", "params"),
        "step_time_ratio": _ratio(gt, nt),
        "step_time_ratio_with_search": _ratio(gst, nt),
        "step_time_ratio_graphed": _ratio(_get(res, "geoop_step_graphed", "time_s"), nt),
        "step_memory_ratio_graphed": _ratio(_get(res, "geoop_step_graphed", "peak_mb"), nm),
        "step_time_ratio_ragged": _ratio(_get(res, "geoop_step_ragged", "time_s"), nt),
        "step_memory_ratio_ragged": _ratio(_get(res, "geoop_step_ragged", "peak_mb"), nm),
        "step_time_ratio_compiled": _ratio(_get(res, "geoop_step_compiled", "time_s"), nt),
        "step_memory_ratio_compiled": _ratio(_mem(res, "geoop_step_compiled"), _mem(res, "neuralop_step")),
        "compiled_over_eager": _ratio(_get(res, "geoop_step_compiled", "time_s"), gt),
        "step_cpu_ratio": _ratio(_get(res, "geoop_step", "cpu_s"), _get(res, "neuralop_step", "cpu_s")),
        "step_cpu_ratio_with_search": _ratio(_get(res, "geoop_step_search", "cpu_s"), _get(res, "neuralop_step", "cpu_s")),
        # the target's memory: live tensor bytes on both devices (torch.profiler's allocation
        # events on the CPU, max_memory_allocated on CUDA); the CPU's RSS, which also counts
        # what glibc keeps after free, is reported beside it
        "step_memory_ratio": _ratio(_mem(res, "geoop_step"), _mem(res, "neuralop_step")),
        "step_rss_ratio": _ratio(gm, nm) if on_cpu else None,
        "step_memory_ratio_with_search": _ratio(_mem(res, "geoop_step_search"), _mem(res, "neuralop_step")),
        "step_time_ratio_plain_encoder": _ratio(_get(res, "geoop_step_plain_encoder", "time_s"), nt),
        "step_memory_ratio_plain_encoder": _ratio(_mem(res, "geoop_step_plain_encoder"), _mem(res, "neuralop_step")),
        "batch8_ratio": _ratio(_get(res, "geoop_batch8", "time_s"), _get(res, "geoop_single8", "time_s")),
        "batch8_vs_neuralop_8_calls": _ratio(_get(res, "geoop_batch8", "time_s"), _get(res, "neuralop_batch8", "time_s")),
        "batch8_cpu_ratio": _ratio(_get(res, "geoop_batch8", "cpu_s"), _get(res, "geoop_single8", "cpu_s")),
        "batch8_memory_vs_single_peak": _ratio(_mem(res, "geoop_batch8"), _mem(res, "geoop_single8")),
        # checkpoint_edges=0 (decoder recomputed too) against the default, same batch
        "batch8_ckpt_time_ratio": _ratio(_get(res, "geoop_batch8_ckpt", "time_s"), _get(res, "geoop_batch8", "time_s")),
        "batch8_ckpt_memory_ratio": _ratio(_mem(res, "geoop_batch8_ckpt"), _mem(res, "geoop_batch8")),
        "neuralop_batch8_error": _get(res, "neuralop_batch8", "batched_call_error"),
        "gno_10m_peak_mb": _get(res, "gno_10m", "peak_mb"),
        "query_1m_peak_mb": _get(res, "query_1m", "peak_mb"),
    }
    checks = {}
    for key, target in TARGETS.items():
        v = s.get(key)
        checks[key] = None if v is None else bool(v <= target)
    s["meets_target"] = checks
    return s


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}"
    return f"{v}{unit}"


def print_table(res: dict, s: dict) -> None:
    rows = [("measurement", "wall [s]", "cpu [s]", "peak [MiB]", "live peak [MiB]")]
    for name in WORKERS:
        if name in res:
            r = res[name]
            if "error" in r:
                rows.append((name, "error", "", r["error"][:100], ""))
                continue
            rows.append((name, _fmt(r.get("time_s")), _fmt(r.get("cpu_s")), _fmt(r.get("peak_mb")),
                         _fmt(r.get("live_peak_mb"))))
    w = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    print()
    for key, target in TARGETS.items():
        print(f"{key:30s} {_fmt(s.get(key)):>10s}   target <= {target}   ok={s['meets_target'][key]}")
    for key in ("step_time_ratio_graphed", "step_memory_ratio_graphed", "step_time_ratio_ragged",
                "step_memory_ratio_ragged", "step_time_ratio_compiled", "step_memory_ratio_compiled", "compiled_over_eager", "step_rss_ratio", "step_cpu_ratio", "step_time_ratio_with_search", "step_cpu_ratio_with_search",
                "step_memory_ratio_with_search", "step_time_ratio_plain_encoder", "step_memory_ratio_plain_encoder",
                "batch8_cpu_ratio", "batch8_vs_neuralop_8_calls",
                "batch8_memory_vs_single_peak", "batch8_ckpt_time_ratio", "batch8_ckpt_memory_ratio",
                "params_geoop", "params_neuralop"):
        print(f"{key:30s} {_fmt(s.get(key)):>10s}")
    if s.get("neuralop_batch8_error"):
        print(f"neuralop, 8 geometries in one call: {s['neuralop_batch8_error']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--only", default="step,batch8,gno,query",
                   help="comma-separated groups (%s) or worker names" % ",".join(GROUPS))
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (peak memory: live tensors and RSS on "
                   "the CPU, torch.cuda.max_memory_allocated on CUDA)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        torch.manual_seed(0)
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    names = []
    for item in args.only.split(","):
        item = item.strip()
        names += GROUPS.get(item, [item] if item in WORKERS else [])
    if not args.device.startswith("cuda"):  # CUDA graphs: GPU only
        names = [n for n in names if not n.endswith(("_graphed", "_ragged"))]
    res = {}
    for name in names:
        res[name] = _run_worker(name, args)
        print(f"# {name}: {json.dumps(res[name])}", file=sys.stderr, flush=True)
        if args.out:  # partial report after every worker: a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps({"results": res, "summary": summarize(res), "partial": True}, indent=1))
    s = summarize(res)
    env = {"torch": torch.__version__, "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
           "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    try:
        import neuralop

        env["neuralop"] = neuralop.__version__
        import torch_scatter

        env["torch_scatter"] = torch_scatter.__version__
    except ImportError as exc:
        env["missing"] = str(exc)
    report = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in CONFIG.items()},
              "env": env, "results": res, "summary": s}
    print(json.dumps(report, indent=1))
    print()
    print_table(res, s)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
