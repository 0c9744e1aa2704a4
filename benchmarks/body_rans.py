"""The 3-D half-body RANS comparison table: geoop (with and without the force loss) against
neuraloperator's GINO and PhysicsNeMo's Transolver, at equal training wall-clock.

    # the real set (geoop data body --solver rans), 30 min per arm on 2 threads
    python benchmarks/body_rans.py --data data/body_rans --minutes 30 --threads 2 --out runs/body_rans_bench
    # proof that it runs: 3 tiny synthetic cases (tests/_body_cases.py), seconds per arm
    python benchmarks/body_rans.py --synthetic 3 --minutes 0.05 --tiny --out /tmp/body_rans

Protocol (every arm): the cases and split of the data folder's manifest, the inputs of
``configs/body_rans.toml`` (the body surface's points and normals, the signed distance on the
latent grid for the GINOs), the two query sets of a case (surface ``p``, ``wallShearStress``;
volume point cloud ``p``, ``U``), the same coordinate and field normalisation (the dataset's
:class:`~geoop.data.preprocess.Preprocessor`), the per-set relative L2 loss, and the same
training wall-clock (``--minutes``, ``--threads`` torch threads). Scores on the test split,
all from one function (:func:`score_cases`) on the decoded predictions: relative L2 per set
and field (each point the same), ``cd``/``cl`` from the predicted surface pressure AND wall
shear with :func:`geoop.physics.forces` (``data.metrics_reference``), their MAE, the drag
MAE over the mean true ``cd``, and R^2.

Arms (``--arms``):

``geoop``        ``configs/body_rans.toml`` (field losses only)
``geoop_force``  ``configs/body_rans.toml`` with the force loss :data:`FORCE` (``coefficients = {cd, cl}``)
``geoop_local``  ``geoop`` with ``[model.local] nearest = true``: the decoder also sees each
                 query's offset to its nearest surface point and that point's normal (for a
                 surface query: its own normal), which a wall-shear field mostly depends on
``geoop_small``  ``geoop`` with :data:`SMALL` (FNO modes (8, 6, 6), kernel MLPs (32, 32), GNO
                 radii 1.3 cells): the recipe's sizes since they won at a third of the step
                 time of its first ones (16, 8, 8), (64, 64), 1.8 cells
``gino_peer``    ``neuralop.models.GINO`` (the ``make bench`` environment, ``.venv-bench``,
                 ``scripts/setup_bench_env.sh``), the same latent grid, radii, FNO width /
                 modes / layers and inputs, run in that environment's Python
                 (``--worker gino_peer``)
``transolver``   ``physicsnemo.models.transolver.Transolver`` (``nvidia-physicsnemo``, CPU,
                 ``use_te=False``; its car settings scaled to the budget: 4 layers, 128 hidden,
                 8 heads, mlp_ratio 2, 32 slices: :data:`TRANSOLVER_SETTINGS`) on the union
                 of a case's surface and volume points (tokens: coordinates + normals and a
                 surface flag), in the Python of ``$PNEMO_PYTHON`` or ``.venv-pnemo``
                 (``scripts/setup_peer_env.sh``: torch 2.14.1 + torchvision 0.29.1, which
                 physicsnemo 2.x needs through timm)

``mlp``          a per-point MLP of the query's coordinates, normal and set (no geometry
                 encoding), in this environment: the floor any geometry-aware model must
                 beat, and a check of the peers' training and scoring harness

An arm whose environment is missing is reported as "not run" with the reason, never
silently left out. The table (``table.md``) and all numbers (``results.json``) go to
``--out``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without an installed geoop
    sys.path.insert(0, str(ROOT))

ARMS = ("geoop", "geoop_force", "geoop_local", "geoop_small", "gino_peer", "transolver", "mlp")
# geoop_small: FNO modes (8, 6, 6), kernel MLPs (32, 32), GNO radii 1.3 cells (a third of the
# CPU step time of the recipe's first sizes; the recipe's sizes since it won that comparison)
SMALL = {"blocks": {"modes": [8, 6, 6]}, "encoder": {"mlp": [32, 32], "radius": "1.3 cells"},
         "decoder": {"mlp": [32, 32], "radius": "1.3 cells"}}
# the force loss of the geoop_force arm (configs/body_rans.toml has it off)
FORCE = {"cd": 0.5, "cl": 0.25}
PEER_PYTHON = {
    "gino_peer": [os.environ.get("BENCH_PYTHON", ""), str(ROOT / ".venv-bench" / "bin" / "python"),
                  "/work/main/.venv-bench/bin/python"],
    "transolver": [os.environ.get("PNEMO_PYTHON", ""), str(ROOT / ".venv-pnemo" / "bin" / "python"),
                   "/work/main/.venv-pnemo/bin/python"],
}
COLUMNS = [("surface/p", "surface Cp rel L2"), ("surface/wallShearStress", "surface tau rel L2"),
           ("points/p", "volume p rel L2"), ("points/U", "volume U rel L2"), ("cd/mae", "Cd MAE"),
           ("cd/mae_pct", "Cd MAE / mean Cd %"), ("cd/r2", "Cd R2"), ("cl/mae", "Cl MAE"), ("cl/r2", "Cl R2")]


# ------------------------------------------------------------------ configuration
def recipe_config(data: Path, out: Path, minutes: float, tiny: bool, force: bool, seed: int = 0,
                  local: bool = False, small: bool = False) -> dict:
    """``configs/body_rans.toml`` pointed at ``data``; ``force`` sets the coefficient loss
    :data:`FORCE` (else none); ``local`` adds the nearest-surface-point features to the
    decoder (``[model.local]``); ``small`` sets the model sizes :data:`SMALL`."""
    from geoop.data.preprocess import GEOMETRY_NORMALIZATIONS

    cfg = tomllib.loads((ROOT / "configs" / "body_rans.toml").read_text())
    d = cfg["data"]
    d["folder"] = str(data)
    if "body" not in GEOMETRY_NORMALIZATIONS:  # the body-fit rule is not in this checkout
        d["geometry_normalization"] = "dataset"
        d.pop("body_margins", None)
    cfg["loss"]["coefficients"] = dict(FORCE) if force else {}
    if local:
        cfg["model"].setdefault("local", {})["nearest"] = True
    if small:
        for k, v in SMALL.items():
            cfg["model"][k].update(v)
    if tiny:
        cfg["model"]["latent"]["shape"] = [8, 6, 6]
        cfg["model"]["blocks"].update(width=8, modes=[3, 3, 3], layers=1)
        for s in ("encoder", "decoder"):
            cfg["model"][s].update(mlp=[16], n_freqs=4)
        d["val_fraction"] = 0.5
    cfg["optim"].update(minutes=float(minutes), epochs=100000)
    cfg["output"]["dir"] = str(out)
    cfg["device"], cfg["seed"] = "cpu", seed
    return cfg


def _resolved(cfg: dict) -> dict:
    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config

    return resolve_config(cfg, source="body_rans", dataset_cls=MeshFolderDataset, model_cls=GINO)


# ------------------------------------------------------------------ scoring (every arm)
def score_cases(cfg: dict, predictions: dict) -> dict:
    """Scores of decoded predictions ``{case: (set geometries {name: Geometry with the true
    fields}, {"<set>/<field>": (Q_s, C) predicted})}``: mean relative L2 per target, and
    coefficient MAE / R^2 from the predicted surface p and wall shear."""
    import numpy as np
    import torch

    from geoop.train.metrics import CoefficientMetrics

    d = cfg["data"]
    ref = d["metrics_reference"]
    m = CoefficientMetrics(d["metrics"], ref, d["folder"], d["targets"])
    sname = m.field.partition("/")[0]
    errs: dict = {t: [] for t in d["targets"]}
    per_case = []
    for case, (sets, pred) in predictions.items():
        for t in d["targets"]:
            s, f = t.split("/", 1)
            true = sets[s].fields[f].double().reshape(pred[t].shape[0], -1)
            errs[t].append(float((pred[t].double() - true).norm() / true.norm()))
        surf = sets[sname]
        cols, c0, pp, tt = {}, 0, [], []
        for t in (m.field, m.shear):
            if t is None:
                continue
            v = pred[t].double().reshape(surf.n_points, -1)
            cols[t] = slice(c0, c0 + v.shape[1])
            c0 += v.shape[1]
            pp.append(v)
            tt.append(surf.fields[t.split("/", 1)[1]].double().reshape(surf.n_points, -1))
        cp, ct = m.case_coefficients(case, surf, surf.points.double(), torch.cat(pp, 1), torch.cat(tt, 1), cols)
        m.add(case, cp, ct)
        per_case.append({"case": case, **{f"{k}_pred": v for k, v in cp.items()}, **{f"{k}_true": v for k, v in ct.items()}})
    out = {t: float(np.mean(v)) for t, v in errs.items()}
    out.update(m.summary())
    if "cd/mae" in out:
        out["cd/mae_pct"] = 100 * out["cd/mae"] / abs(float(np.mean([r["cd_true"] for r in per_case])))
    out["per_case"] = per_case
    return out


def _test_cases(cfg: dict):
    """The test cases of the data folder as ``{case: (raw input geometry, combined queries,
    set geometries {name: Geometry})}`` (file coordinates)."""
    from geoop.data.folder import MeshFolderDataset

    d = cfg["data"]
    test = MeshFolderDataset(d["folder"], inputs=[], queries=d["queries"], split="test", input_file=d.get("input_file"),
                             normalize=False, geometry_normalization="none", manifest=d.get("manifest"))
    out = {}
    for case in test.cases:
        cf = test._files[case]
        import geoop

        g = geoop.read(cf.input)
        parts = [g if f == cf.input else geoop.read(f) for f in cf.sets]
        _, q, sets = test.preprocessor.read_sets(g, parts, case)
        out[case] = (g, q, dict(zip(test.preprocessor.set_names, sets)))
    return out


# ------------------------------------------------------------------ geoop arms (this environment)
def run_geoop(cfg: dict, threads: int) -> dict:
    import torch

    from geoop.cli.predict import predict_geometry
    from geoop.data.preprocess import split_query_sets
    from geoop.train.run import build_run, load_trained

    torch.set_num_threads(threads)
    rc = _resolved(cfg)
    t0 = time.perf_counter()
    run = build_run(rc, progress=False)
    hist = run.trainer.fit()
    wall = time.perf_counter() - t0
    ck = Path(rc["output"]["dir"]) / ("best.pt" if (Path(rc["output"]["dir"]) / "best.pt").exists() else "last.pt")
    trained = load_trained(ck)
    preds = {}
    for case, (g, q, sets) in _test_cases(rc).items():
        res, _ = predict_geometry(trained, g, q)
        split = split_query_sets(res, list(sets))
        preds[case] = (sets, {t: split[t.split("/", 1)[0]].fields[t.split("/", 1)[1]] for t in rc["data"]["targets"]})
    s = score_cases(rc, preds)
    later = hist[1:] or hist  # the first epoch also computes neighbourhoods and latent features
    per_step = sorted(run.trainer.batch_size / max(h["samples_per_s"], 1e-9) for h in later)  # training steps only
    s.update(params=sum(p.numel() for p in run.model.parameters()), epochs=len(hist), train_s=wall,
             step_ms=1000 * per_step[len(per_step) // 2])
    return s


# ------------------------------------------------------------------ peers (their own environments)
def _peer_data(cfg: dict):
    """Training items and the fitted preprocessing of the recipe, shared by the peers: the
    dataset keywords of :func:`geoop.train.run.build_run` (split, validation share, body
    box, symmetry plane, query sets with the ``[loss] surface_weighting`` weights), so the
    peers see the geoop arms' training cases, coordinates and loss weights."""
    from geoop.data.folder import MeshFolderDataset
    from geoop.train.run import data_kwargs

    d = cfg["data"]
    kw = data_kwargs(cfg)
    kw.setdefault("seed", int(cfg.get("seed", 0)))
    area = (cfg.get("loss") or {}).get("surface_weighting") == "area"
    kw["queries"] = [{**q, "weighting": q.get("weighting") or ("surface" if area else "points")} for q in kw["queries"]]
    return MeshFolderDataset(d["folder"], inputs=[], targets=[], split=d.get("train_split", "train"), **kw)


def _set_weights(queries, targets, set_names):
    """(Q, F) loss weights as geoop's :meth:`Trainer.loss_weights`: each target's own set's
    query weights (area quadrature on the surface set with ``surface_weighting = "area"``),
    zero on the other sets' queries."""
    import torch

    from geoop.data.preprocess import QUERY_SET_FIELD

    sid = queries.fields[QUERY_SET_FIELD][:, 0].round().long()
    idx = torch.tensor([set_names.index(t.split("/", 1)[0]) for t in targets])
    w = queries.weights if queries.weights is not None else torch.ones(sid.shape[0])
    return (sid[:, None] == idx[None, :]).float() * w.float()[:, None]


def _test_samples(cfg: dict, train):
    """``(case, combined queries, set geometries, sample)`` per test case: the case read as
    :func:`_test_cases` does, preprocessed by the training set's fitted preprocessor, with
    its name in ``sample.meta["case"]``."""
    for case, (g, q, sets) in _test_cases(cfg).items():
        sample, _ = train.preprocessor.apply(*train.preprocessor.read_sets(g, list(sets.values()), case)[:2],
                                             meta={"case": case})
        yield case, q, sets, sample


def _peer_loop(cfg, model, forward, minutes: float, threads: int, lr: float = 1e-3) -> dict:
    """Train ``model`` with ``forward(sample) -> (Q, C)`` on the recipe's training items for
    ``minutes`` (per-set relative L2, AdamW, cosine over the budget), then predict the test
    cases and score them with :func:`score_cases`."""
    import torch

    from geoop.train.losses import relative_l2

    torch.set_num_threads(threads)
    train = _peer_data(cfg)
    targets, names = train.targets, train.preprocessor.set_names
    widths = train.preprocessor.target_widths()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget, t0, steps, times, epoch = 60.0 * minutes, time.perf_counter(), 0, [], 0
    while time.perf_counter() - t0 < budget or steps == 0:
        train.set_epoch(epoch)  # a fresh random query subsample ([data] subsample) each epoch, as geoop's trainer
        epoch += 1
        for i in torch.randperm(len(train)).tolist():
            s = train[i]
            ts = time.perf_counter()
            frac = min(1.0, (time.perf_counter() - t0) / max(budget, 1e-9))
            for gr in opt.param_groups:
                gr["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            y = torch.cat([s.queries.fields[t] for t in targets], 1).float()
            w = _set_weights(s.queries, targets, names)
            err = relative_l2(forward(s), y, torch.zeros(y.shape[0], dtype=torch.long), 1, widths, w)
            opt.zero_grad(set_to_none=True)
            err.mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            steps += 1
            times.append(time.perf_counter() - ts)
            if time.perf_counter() - t0 >= budget:
                break
    preds = {}
    model.eval()
    with torch.no_grad():
        for case, q, sets, sample in _test_samples(cfg, train):
            out = forward(sample)
            dec, c0 = {}, 0
            for t, c in zip(targets, widths):
                dec[t] = train.normalizers.decode(t, out[:, c0:c0 + c])
                c0 += c
            # each set's rows of its own targets
            sid = q.fields["__query_set__"][:, 0].round().long()
            preds[case] = (sets, {t: dec[t][sid == names.index(t.split("/", 1)[0])] for t in targets})
    s = score_cases(cfg, preds)
    s.update(params=sum(p.numel() for p in model.parameters()), steps=steps,
             step_ms=1000 * sorted(times)[len(times) // 2] if times else math.nan)
    return s


def _latent_grid(cfg: dict):
    """geoop's box latent nodes: ``(shape, (n1, n2, n3, 3) grid, cell spacing)``; the unit
    cube unless ``[model.latent] domain`` is given (geoop.models.config.cell_size)."""
    import torch

    lat = cfg["model"]["latent"]
    shape = list(lat["shape"])
    lo, hi = lat.get("domain") or ([0.0] * 3, [1.0] * 3)
    spacing = max((b - a) / (n - 1) for a, b, n in zip(lo, hi, shape))
    axes = [torch.linspace(a, b, n) for a, b, n in zip(lo, hi, shape)]
    return shape, torch.stack(torch.meshgrid(*axes, indexing="ij"), -1), spacing


def _peer_sdf(cfg: dict, path: Path) -> None:
    """Write ``{case: (1, n1, n2, n3, 1) SDF on the latent grid}`` for the training and test
    cases, computed here with geoop's SDF (its open3d backend; a half body closed by its
    mirror image) on the same normalised geometry the peer sees. The peer's environment has
    no open3d, and the exact trimesh fallback on ~28 k nodes x ~40 k triangles takes minutes
    per case, which would come out of the peer's training budget."""
    import torch

    _, grid, _ = _latent_grid(cfg)
    train = _peer_data(cfg)
    samples = itertools.chain((train[i] for i in range(len(train))), (s for *_, s in _test_samples(cfg, train)))
    torch.save({s.meta["case"]: _grid_sdf(s.geometry, grid) for s in samples}, path)


def _grid_sdf(geometry, grid):
    """(1, n1, n2, n3, 1) float32 SDF of ``geometry`` on the latent ``grid`` (n1, n2, n3, 3)."""
    return geometry.sdf(grid.reshape(-1, 3)).reshape(1, *grid.shape[:-1], 1).float()


def worker_gino_peer(cfg, minutes, threads) -> dict:
    """neuraloperator's GINO with geoop's latent grid, radii, widths and inputs."""
    import torch
    from neuralop.models import GINO as NOGINO

    torch.manual_seed(int(cfg.get("seed", 0)))
    m = cfg["model"]
    shape, grid, spacing = _latent_grid(cfg)

    def radius(v):
        return float(str(v).split()[0]) * spacing if isinstance(v, str) else float(v)

    model = NOGINO(in_channels=3, out_channels=8, gno_coord_dim=3, in_gno_radius=radius(m["encoder"]["radius"]),
                   out_gno_radius=radius(m["decoder"]["radius"]), in_gno_transform_type="linear",
                   out_gno_transform_type="linear", in_gno_pos_embed_type="nerf", out_gno_pos_embed_type="nerf",
                   gno_embed_channels=int(m["encoder"].get("n_freqs", 8)), fno_in_channels=3,
                   fno_n_modes=tuple(2 * k for k in m["blocks"]["modes"]), fno_hidden_channels=m["blocks"]["width"],
                   fno_n_layers=m["blocks"]["layers"], latent_feature_channels=1,
                   in_gno_channel_mlp_hidden_layers=list(m["encoder"]["mlp"]),
                   out_gno_channel_mlp_hidden_layers=list(m["decoder"]["mlp"]), gno_use_open3d=False,
                   gno_use_torch_scatter=True)
    # the latent SDF of every case, computed by _peer_sdf in geoop's environment (open3d)
    sdf_cache = torch.load(cfg["_sdf_file"]) if cfg.get("_sdf_file") else {}

    def forward(s):
        key = s.meta.get("case")  # training items and the test samples of _peer_loop name their case
        sdf = sdf_cache.get(key) if key is not None else None
        if sdf is None:
            sdf = _grid_sdf(s.geometry, grid)
            if key is not None:
                sdf_cache[key] = sdf
        out = model(input_geom=s.geometry.points[None].float(), latent_queries=grid[None],
                    output_queries=s.queries.points[None].float(), x=s.geometry.normals[None].float(),
                    latent_features=sdf)
        return out[0]

    return _peer_loop(cfg, model, forward, minutes, threads)


def _token_features(cfg: dict):
    """``features(sample) -> (Q, 4)`` for the point-wise peers: the surface normal on the
    surface set's rows (zero elsewhere) and a surface flag. The combined query geometry
    carries no normals when one set has none (the volume cloud), so a surface row takes the
    normal of its nearest point of the input surface (the same file: its own vertex, at
    distance 0); the input surface's search tree is cached per case."""
    import torch
    from scipy.spatial import cKDTree

    from geoop.data.preprocess import QUERY_SET_FIELD

    d = cfg["data"]
    sid_surface = [q["name"] for q in d["queries"]].index(d["metrics_reference"]["field"].partition("/")[0])
    cache: dict = {}

    def features(s):
        q = s.queries
        surf = q.fields[QUERY_SET_FIELD][:, 0].round().long() == sid_surface
        nrm = torch.zeros_like(q.points, dtype=torch.float32)
        if q.normals is not None:
            nrm[surf] = q.normals[surf].float()
        elif s.geometry.normals is not None and bool(surf.any()):
            key = s.meta.get("case")  # training items name their case (the queries vary: [data] subsample)
            tree = cache.get(key) if key is not None else None
            if tree is None:
                tree = cKDTree(s.geometry.points.double().numpy())
                if key is not None:
                    cache[key] = tree
            _, j = tree.query(q.points[surf].double().numpy())
            nrm[surf] = s.geometry.normals[torch.as_tensor(j)].float()
        return torch.cat([nrm, surf.float()[:, None]], 1)

    return features


#: PhysicsNeMo's published DrivAerML settings (examples/cfd/external_aerodynamics/transolver,
#: conf/train_surface.yaml and src/conf/transolver_surface.yaml: 8 layers, 256 hidden, 8 heads,
#: mlp_ratio 4 / 2, slice_num 128 / 256, AdamW lr 5e-4 (volume 1e-3), weight decay 1e-4,
#: 250 epochs of ~400 cars at 2-4e5 points on GPUs) scaled to 30 min on 2 CPU threads with
#: ~1e4 points per case: depth and width halved (8 x 256 -> 4 x 128, ~1/8 the parameters and
#: FLOPs per token), 8 heads kept (16 channels each), the newer mlp_ratio 2, and 32 slices (the
#: Transolver paper's ShapeNet-Car setting for ~3e4 points; DrivAerML's 128-256 are for 10x more).
TRANSOLVER_SETTINGS = dict(n_layers=4, n_hidden=128, n_head=8, mlp_ratio=2, slice_num=32, dropout=0.0, act="gelu")
TRANSOLVER_LR = 1e-3  # the volume example's AdamW rate (surface: 5e-4), with the harness's cosine decay


def worker_transolver(cfg, minutes, threads) -> dict:
    """PhysicsNeMo's Transolver on the union of a case's surface and volume points: tokens
    with the normalised coordinates as the embedding (3) and as functions the surface normal
    (zero on volume points) and a surface flag (4), all eight outputs on every token; trained
    and evaluated on the same kind of point set (every surface and volume query of a case)."""
    import torch
    from physicsnemo.models.transolver import Transolver

    torch.manual_seed(int(cfg.get("seed", 0)))
    model = Transolver(functional_dim=4, out_dim=8, embedding_dim=3, use_te=False, **TRANSOLVER_SETTINGS)

    features = _token_features(cfg)
    sub = cfg["data"].get("subsample")
    sub = sub.get("queries") if isinstance(sub, dict) else sub

    def forward(s):
        f, x = features(s), s.queries.points.float()
        n = x.shape[0]
        chunk = 0 if sub is None else (int(sub) if float(sub) > 1 else math.ceil(float(sub) * n))
        if model.training or not chunk or n <= chunk:
            return model(f[None], x[None])[0]
        # evaluated on point sets like those it trained on (as PhysicsNeMo's inference on
        # large meshes): random chunks of the training token count covering every query
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        out = torch.empty(n, 8)
        for idx in perm.tensor_split(math.ceil(n / chunk)):
            out[idx] = model(f[idx][None], x[idx][None])[0]
        return out

    return _peer_loop(cfg, model, forward, minutes, threads, lr=TRANSOLVER_LR)


def worker_mlp(cfg, minutes, threads) -> dict:
    """A per-point MLP baseline (coordinates, normal, set flag -> all outputs)."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(7, 128), torch.nn.GELU(), torch.nn.Linear(128, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 8))

    features = _token_features(cfg)

    def forward(s):
        return model(torch.cat([s.queries.points.float(), features(s)], 1))

    return _peer_loop(cfg, model, forward, minutes, threads)


def _run_worker(arm: str, cfg: dict, minutes: float, threads: int, tmp: Path) -> dict:
    python = next((p for p in PEER_PYTHON[arm] if p and Path(p).exists()), None)
    if python is None:
        how = ("bash scripts/setup_bench_env.sh (make bench)" if arm == "gino_peer"
               else "bash scripts/setup_peer_env.sh (.venv-pnemo) or $PNEMO_PYTHON")
        return {"not_run": f"no Python environment for {arm}: {how}"}
    if arm == "gino_peer":
        cfg = {**cfg, "_sdf_file": str(tmp / "gino_peer_sdf.pt")}
        _peer_sdf(cfg, Path(cfg["_sdf_file"]))
    cfg_path = tmp / f"{arm}_config.json"
    cfg_path.write_text(json.dumps(cfg))
    res = tmp / f"{arm}_result.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", arm, "--config", str(cfg_path), "--minutes", str(minutes),
           "--threads", str(threads), "--result", str(res)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    (tmp / f"{arm}_worker.log").write_text(p.stdout + p.stderr)  # the worker's whole output, for a failed run
    if p.returncode != 0:
        return {"not_run": f"{arm} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"}
    return json.loads(res.read_text())


# ------------------------------------------------------------------ table
PEERS = ("gino_peer", "transolver")
RATIO_KEYS = (("surface/p", "surface Cp"), ("points/U", "volume U"), ("cd/mae", "Cd MAE"), ("cl/mae", "Cl MAE"))


def ratios(results: dict) -> dict:
    """``{arm: {metric: arm's value / the better peer's}}`` for the geoop arms: the issue's
    floors are ratios to the better of the two peers, metric by metric."""
    out = {}
    for arm, r in results.items():
        if arm in PEERS or "not_run" in r:
            continue
        row = {}
        for k, _ in RATIO_KEYS:
            peers = [results[p][k] for p in PEERS if p in results and k in results[p]]
            if peers and k in r:
                row[k] = r[k] / min(peers)
        out[arm] = row
    return out


def table(results: dict, minutes: float, threads: int) -> str:
    def f(v):
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    head = ["arm", "params", "step ms"] + [c for _, c in COLUMNS]
    lines = [f"Test split, {minutes} min training per arm on {threads} threads (CPU).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, r in results.items():
        if "not_run" in r:
            lines.append(f"| {arm} | not run: {r['not_run']} |" + " |" * (len(head) - 2))
            continue
        lines.append("| " + " | ".join([arm, f(r.get("params")), f(r.get("step_ms"))] + [f(r.get(k)) for k, _ in COLUMNS])
                     + " |")
    rat = {a: r for a, r in ratios(results).items() if r}
    if rat:
        lines += ["", "Ratio to the better peer (gino_peer, transolver) per metric (floor: <= 0.5):", "",
                  "| arm | " + " | ".join(c for _, c in RATIO_KEYS) + " |", "|---|" + "---|" * len(RATIO_KEYS)]
        lines += [f"| {a} | " + " | ".join(f(r.get(k)) for k, _ in RATIO_KEYS) + " |" for a, r in rat.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a generated set (geoop data body --solver rans)")
    ap.add_argument("--synthetic", type=int, default=0, help="make this many tiny synthetic cases instead (tests/_body_cases.py)")
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-clock per arm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--tiny", action="store_true", help="tiny models (for the synthetic proof run)")
    ap.add_argument("--out", default="runs/body_rans_bench")
    ap.add_argument("--merge", nargs="+", metavar="DIR",
                    help="combine the results.json of runs made separately (e.g. two arms at once on 1 thread each) into one table in --out")
    ap.add_argument("--worker", choices=("gino_peer", "transolver"), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:  # a peer in its own environment
        cfg = json.loads(Path(a.config).read_text())
        fn = {"gino_peer": worker_gino_peer, "transolver": worker_transolver}[a.worker]
        Path(a.result).write_text(json.dumps(fn(cfg, a.minutes, a.threads)))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.merge:
        results = {}
        for d in a.merge:
            for arm, r in json.loads((Path(d) / "results.json").read_text()).items():
                if arm in results:
                    ap.error(f"arm {arm!r} is in more than one of --merge {a.merge}")
                results[arm] = r
        (out / "results.json").write_text(json.dumps(results, indent=1))
        text = table(results, a.minutes, a.threads)
        (out / "table.md").write_text(text)
        print(text)
        return 0
    data = Path(a.data) if a.data else None
    if a.synthetic:
        sys.path.insert(0, str(ROOT / "tests"))
        from _body_cases import make_cases

        data = out / "synthetic_cases"
        make_cases(data, a.synthetic, seed=0, test=tuple(range(max(1, a.synthetic // 3))))
    if data is None:
        ap.error("give --data DIR or --synthetic N")
    results = {}
    for arm in [x for x in a.arms.split(",") if x]:
        if arm not in ARMS:
            ap.error(f"unknown arm {arm!r}; valid: {list(ARMS)}")
        cfg = recipe_config(data, out / arm, a.minutes, a.tiny, force=arm == "geoop_force", local=arm == "geoop_local",
                            small=arm == "geoop_small")
        if arm in ("geoop", "geoop_force", "geoop_local", "geoop_small"):
            results[arm] = run_geoop(cfg, a.threads)
        elif arm == "mlp":
            results[arm] = worker_mlp(_resolved(cfg), a.minutes, a.threads)
        else:
            results[arm] = _run_worker(arm, _resolved(cfg), a.minutes, a.threads, out)
        print(arm, {k: v for k, v in results[arm].items() if k != "per_case"}, flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results, a.minutes, a.threads)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
