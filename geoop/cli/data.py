"""``geoop data``: generate built-in datasets, or check a folder of CFD files.

    geoop data airfoil --n 20 --out data/airfoil [--seed 0] [--param alpha_deg=0,8 ...]
    geoop data airfoil --solver rans --n 4 --out data/rans [--jobs 2] [--param iterations=1500 ...]  (OpenFOAM)
    geoop data body3d  --n 10 --out data/body3d  [--seed 0] [--param KEY=VALUE ...]
    geoop data body --solver rans --n 100 --out data/body_rans [--jobs 1] [--param iterations=500 ...]  (OpenFOAM)
    geoop data sphere  --n 10 --out data/sphere  [--seed 0] [--param KEY=VALUE ...]
    geoop data check DIR --targets p U [--inputs p] [--input-file PATTERN] [--query-file PATTERN]
    geoop data check CONFIG        (a run config: split, normalisation, field ranges, queries outside the window)
    geoop data pack DIR --out STORE (--config CFG | --targets p U [--inputs p] [--input-file P] [--query-file P])
                    [--cells] [--chunk-rows 8192] [--overwrite] [--skip-bad]

The generators (``geoop.data.<kind>.generate(out_dir, n, seed, **params)``) write
``case_XXXX_*.vtp/.vtu`` files and ``manifest.json`` (the parameters of each case); the same
seed and parameters give byte-identical files. ``--param`` values are parsed as YAML
(``alpha_deg=5``, ``m=[0, 0.04]``); ``a,b`` is shorthand for the range ``[a, b]``.
``check`` builds a :class:`~geoop.data.MeshFolderDataset` over every case and reports the
cases that would be skipped, with the file and the reason. ``pack`` converts a folder once
into a packed store (:mod:`geoop.data.store`) that ``geoop train``/``evaluate``/``predict``
take in place of the folder; with ``--config`` the fields, patterns and crop are the run's.
"""
from __future__ import annotations

import argparse
import importlib
import os
import warnings

from .._atomic import atomic_write_json
from ..errors import ConfigError

__all__ = ["GENERATORS", "add_parser", "run", "resolve_generator", "parse_params"]

#: generator name -> module providing ``generate(out_dir, n, seed=0, **params)``
GENERATORS = {
    "airfoil": "geoop.data.airfoil",
    "body3d": "geoop.data.body3d",
    "body": "geoop.data.body3d",
    "sphere": "geoop.data.sphere",
}


#: ``geoop data airfoil --solver NAME`` -> module providing ``generate``
SOLVERS = {"panel": "geoop.data.airfoil", "rans": "geoop.data.rans"}
#: generators with a ``--solver`` choice: kind -> {solver: module}; ``body`` is ``body3d``
#: (panel method) with the 3-D RANS solver as an alternative
KIND_SOLVERS = {"airfoil": SOLVERS, "body": {"panel": "geoop.data.body3d", "rans": "geoop.data.rans3d"}}


def resolve_generator(kind: str):
    """The ``generate`` function of a built-in generator; an unknown or missing one is a
    :class:`ConfigError` listing the valid choices."""
    if kind not in GENERATORS:
        raise ConfigError(f"geoop data: unknown generator {kind!r}; valid: {sorted(GENERATORS)}")
    try:
        mod = importlib.import_module(GENERATORS[kind])
    except ModuleNotFoundError as e:
        if e.name != GENERATORS[kind]:
            raise
        raise ConfigError(f"geoop data: generator {kind!r} ({GENERATORS[kind]}) is not available in this version") from None
    return mod.generate


def parse_params(items) -> dict:
    """``["k=v", ...]`` -> ``{k: value}`` with YAML values; ``a,b`` -> ``[a, b]``."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"geoop data: --param expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"geoop data: --param {item!r} has an empty key")
        text = f"[{v}]" if "," in v and not v.strip().startswith("[") else v
        try:
            out[k] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"geoop data: --param {k}: cannot parse value {v!r}: {e}") from None
        if isinstance(out[k], list):
            out[k] = tuple(_number(x) for x in out[k])
        else:
            out[k] = _number(out[k])
    return out


def _number(v):
    """A number in exponent notation as a float: YAML 1.1 (PyYAML) reads ``4e-3`` (no
    decimal point) as a string. Other strings (``'0012'``) stay strings."""
    import re

    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+\s*", v):
        return float(v)
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="generate a built-in dataset or check a folder of CFD files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_kind", metavar="KIND")
    for kind in GENERATORS:
        g = sub.add_parser(kind, help=f"generate {kind} cases (geoop.data.{kind})")
        g.add_argument("--n", type=int, required=True, help="number of cases")
        g.add_argument("--out", required=True, help="output folder")
        g.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same files)")
        g.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                       help=f"generator option, repeatable (e.g. alpha_deg=0,8); the keys are those of "
                            f"{GENERATORS[kind]}.generate, an unknown key lists the valid ones")
        if kind in KIND_SOLVERS:
            g.add_argument("--solver", choices=sorted(KIND_SOLVERS[kind]), default="panel",
                           help=f"panel: inviscid panel method ({KIND_SOLVERS[kind]['panel']}, default); rans: steady "
                                f"RANS with OpenFOAM simpleFoam ({KIND_SOLVERS[kind]['rans']}; needs the Debian "
                                f"package openfoam)")
            g.add_argument("--jobs", "-j", type=int, default=1,
                           help="--solver rans: cases solved at once (default 1); airfoil: one serial simpleFoam "
                                "each (up to the number of cores); body: n_procs MPI ranks each (default 2; "
                                "-p n_procs=1 for serial cases)")
    c = sub.add_parser("check", help="check a folder of CFD files as a dataset, or the data of a run config")
    c.add_argument("root", help="dataset folder, or a run config (.toml/.yaml/.yml/.json): then the split, the "
                                "coordinate normalisation, per-field ranges and the queries outside the latent "
                                "window are printed")
    c.add_argument("--inputs", nargs="*", default=[], help="input field names")
    c.add_argument("--targets", nargs="+", default=None, help="target field names (a folder: required)")
    c.add_argument("--input-file", default=None, help="pattern of input files, e.g. '{case}_surface.vtp'")
    c.add_argument("--query-file", default=None, help="pattern of query files, e.g. '{case}_volume.vtu'")
    k = sub.add_parser("pack", help="pack a folder of CFD files into a chunked store read lazily by training")
    k.add_argument("root", help="dataset folder")
    k.add_argument("--out", required=True, help="store folder (created; an unfinished one is resumed)")
    k.add_argument("--config", default=None, help="run config: its data.inputs (and the model's named inputs), "
                                                  "targets, input_file, query_file and crop")
    k.add_argument("--inputs", nargs="*", default=None, help="input field names (without --config)")
    k.add_argument("--targets", nargs="+", default=None, help="target field names (without --config)")
    k.add_argument("--input-file", default=None, help="pattern of input files, e.g. '{case}_surface.vtp'")
    k.add_argument("--query-file", default=None, help="pattern of query files, e.g. '{case}_volume.vtu'")
    k.add_argument("--cells", action="store_true", help="also store the cell connectivity (whole-case reads carry the mesh)")
    k.add_argument("--chunk-rows", type=int, default=8192, help="rows per chunk (default 8192)")
    k.add_argument("--overwrite", action="store_true", help="repack cases already in the store / a store of other settings")
    k.add_argument("--skip-bad", action="store_true", help="leave unreadable cases out (listed) instead of stopping")
    p.set_defaults(_data_parser=p)
    return p


def _pack(args) -> int:
    from ..data.store import pack_folder

    opts = {"input_file": args.input_file, "query_file": args.query_file, "crop": None, "symmetry": None}
    inputs, targets = list(args.inputs or []), list(args.targets or [])
    if args.config:
        from ..data.folder import MeshFolderDataset
        from ..models.gino import GINO
        from ..train.config import load_config
        from ..train.run import data_kwargs, input_fields

        if args.inputs is not None or args.targets is not None:
            raise ConfigError("geoop data pack: give the fields with --config or with --inputs/--targets, not both")
        cfg = load_config(args.config, dataset_cls=MeshFolderDataset, model_cls=GINO)
        d, kw = cfg["data"], data_kwargs(cfg)
        if kw.get("queries"):
            raise ConfigError(f"geoop data pack: {args.config} has query sets ([data] queries); a packed store holds one "
                              "query geometry per case: train on the folder")
        files = kw.get("files") or {}
        for key in ("input_file", "query_file"):
            asked = getattr(args, key)
            given = kw.get(key, (files.get(key) if isinstance(files, dict) else getattr(files, key, None)))
            if asked is not None and given is not None and asked != given:
                raise ConfigError(f"geoop data pack: --{key.replace('_', '-')} {asked!r} differs from the config's {given!r}")
            opts[key] = asked if asked is not None else given
        norm = kw.get("normalization") or {}
        opts["crop"] = kw.get("crop", norm.get("crop") if isinstance(norm, dict) else getattr(norm, "crop", None))
        opts["symmetry"] = kw.get("symmetry")
        inputs, targets = input_fields(cfg["model"], d["inputs"]), list(d["targets"])
    elif not targets and not inputs:
        raise ConfigError("geoop data pack: give --config CFG or the fields (--targets ..., --inputs ...)")
    report = pack_folder(args.root, args.out, inputs, targets, cells=args.cells, chunk_rows=args.chunk_rows,
                         overwrite=args.overwrite, on_error="skip" if args.skip_bad else "raise", log=print, **opts)
    print(f"geoop data pack: {args.out}: {len(report.packed)} case(s) packed, {len(report.kept)} already there, "
          f"{len(report.skipped)} skipped")
    for case, f, reason in report.skipped:
        print(f"  skipped {case}: {f}: {reason}")
    return 1 if report.skipped else 0


def _write_json_atomic(path: str, obj) -> None:
    atomic_write_json(path, obj, sort_keys=True, default=str)


def _generate(args) -> int:
    if args.n < 1:
        raise ConfigError(f"geoop data {args.data_kind}: --n must be >= 1, got {args.n}")
    gen = resolve_generator(args.data_kind)
    if getattr(args, "solver", "panel") != "panel":
        gen = importlib.import_module(KIND_SOLVERS[args.data_kind][args.solver]).generate
    params = parse_params(args.param)
    jobs = getattr(args, "jobs", 1)
    if jobs != 1:
        if getattr(args, "solver", "panel") != "rans":
            raise ConfigError(f"geoop data {args.data_kind}: --jobs applies to --solver rans only, got --jobs {jobs}")
        if jobs < 1:
            raise ConfigError(f"geoop data {args.data_kind}: --jobs must be >= 1, got {jobs}")
        params["jobs"] = jobs
    try:
        entries = gen(args.out, args.n, seed=args.seed, **params)
    except TypeError as e:  # an option the generator's signature does not take
        raise ConfigError(f"geoop data {args.data_kind}: invalid options {sorted(params)}: {e}") from None
    manifest = os.path.join(args.out, "manifest.json")
    if not os.path.exists(manifest):  # the generators write it; never leave a folder without one
        _write_json_atomic(manifest, {"generator": gen.__module__, "seed": args.seed,
                                      "params": params, "cases": list(entries or [])})
    print(f"geoop data {args.data_kind}: wrote {len(entries or [])} cases to {args.out} (manifest: {manifest})")
    return 0


def _check_config(path: str) -> int:
    """``geoop data check CONFIG``: what training on the config's data would see."""
    import torch

    from ..data.folder import MeshFolderDataset
    from ..models.gino import GINO
    from ..train.config import load_config
    from ..train.run import data_kwargs, input_fields, model_config, model_inputs, open_cases

    cfg = load_config(path, dataset_cls=MeshFolderDataset, model_cls=GINO)
    d = cfg["data"]
    kw = data_kwargs(cfg)
    kw.setdefault("seed", int(cfg["seed"]))
    inputs = input_fields(cfg["model"], d["inputs"])
    targets = [] if kw.get("queries") is not None else d["targets"]  # query sets name their own targets
    reader = open_cases(cfg, model_inputs(cfg), kw)  # the cases discovered and split once, each read once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = GINO.from_config(model_config(cfg, reader))
    kw["reader"] = reader if reader.settings["inputs"] == inputs else None
    train = MeshFolderDataset(d["folder"], inputs=inputs, targets=targets, split=d["train_split"], **kw)
    parts = {c: p for c, p in train.split_of.items()}
    counts = {k: sum(1 for v in parts.values() if v == k) for k in sorted(set(parts.values()))}
    print(f"{path}: data {d['folder']}: split {counts} (train on {d['train_split']!r}, validate on "
          f"{d['val_split'] or 'nothing'!r}); {len(train.skipped)} case(s) skipped; points are {train.dim}-D")
    if d["val_split"] and d["val_split"] == "test":
        print("  warning: validation (and best.pt) uses the test split; give a 'val' split to keep the test cases unseen")
    T = train.normalizers.transform
    rule = train.geometry_normalization
    if isinstance(rule, dict):
        from ..data.preprocess import fixed_transform

        T = fixed_transform(rule, 3)
        print(f"  coordinates: x' = (x - shift) / scale, a fixed rule: shift {rule['shift']}, scale {rule['scale']}")
    elif rule in ("dataset", "body") and T is not None:
        print(f"  coordinates: x' = (x - shift) / scale fitted on the training cases (rule {rule!r}): "
              f"shift {[round(float(v), 6) for v in T.shift]}, scale {[round(float(v), 6) for v in T.scale]}")
    elif rule == "case":
        print("  coordinates: one transform per case, fitted on its input and query bounds (rule 'case')")
    elif rule == "body_case":
        print("  coordinates: one transform per case, fitted on its body box (rule 'body_case')")
    else:
        print("  coordinates: file units, not normalised (rule 'none')")
    for role, names, attr in (("input", inputs, "geometry"), ("target", d["targets"], "queries")):
        for n in names:
            lo = hi = None
            for c in train.train_cases:
                if hasattr(train, "store"):  # a packed store: the stored per-case ranges
                    st = train.store.info(c).roles["input" if role == "input" else "query"]["stats"][n]
                    vlo, vhi = torch.tensor(st["min"], dtype=torch.float64), torch.tensor(st["max"], dtype=torch.float64)
                    lo = vlo if lo is None else torch.minimum(lo, vlo)
                    hi = vhi if hi is None else torch.maximum(hi, vhi)
                    continue
                gin, gq = train._raw(c)
                v = (gin if role == "input" else gq).fields[n].double()
                if role == "target" and train.query_sets:  # the rows of the target's own set
                    from ..data.preprocess import QUERY_SET_FIELD

                    sid = gq.fields[QUERY_SET_FIELD][:, 0].round().long()
                    v = v[sid == train.preprocessor.set_names.index(n.partition("/")[0])]
                lo = v.min(0).values if lo is None else torch.minimum(lo, v.min(0).values)
                hi = v.max(0).values if hi is None else torch.maximum(hi, v.max(0).values)
            nz = train.normalizers.fields.get(n)
            stats = f"; normalised with mean {[round(float(m), 4) for m in nz.mean]}, std {[round(float(m), 4) for m in nz.std]}" \
                if nz is not None and nz.fitted else ""
            print(f"  {role} field {n!r}: range {[round(float(a), 4) for a in lo]} .. {[round(float(a), 4) for a in hi]} "
                  f"over the training cases{stats}")
    if model.latent != "box":
        print(f"  latent: {model.latent} grid {list(model.latent_shape)} (no window)")
        return 0
    dom = torch.tensor(model.domain, dtype=torch.float64)
    if (rule in ("dataset", "body") or isinstance(rule, dict)) and T is not None:
        k = dom.shape[1]
        files = torch.stack([dom[0] * T.scale[:k] + T.shift[:k], dom[1] * T.scale[:k] + T.shift[:k]])
        print(f"  latent window: {dom.tolist()} (normalised) = {files.tolist()} in file units")
    else:
        print(f"  latent window: {dom.tolist()}{' (file units)' if rule == 'none' else ' (per-case normalised units)'}")
    splits = [d["train_split"]] + ([d["val_split"]] if d["val_split"] else [])
    for split in splits:
        ds = train if split == d["train_split"] else MeshFolderDataset(
            d["folder"], inputs=inputs, targets=targets, split=split, **{**kw, "normalize": train.normalizers})
        ds.subsample = {"points": None, "queries": None, "near_input": None}  # count every query
        out, total = ds.queries_outside(dom)  # a packed store: from bounds, chunk by chunk
        pct = 100.0 * out / max(total, 1)
        print(f"  {split}: {out} of {total} query points ({pct:.1f} %) are outside the latent window"
              f"{' (their predictions extrapolate)' if out else ''}")
    return 0


def _check(args) -> int:
    from ..data.folder import MeshFolderDataset

    if os.path.isfile(args.root) and os.path.splitext(args.root)[1].lower() in (".toml", ".yaml", ".yml", ".json"):
        return _check_config(args.root)
    if not args.targets:
        raise ConfigError("geoop data check DIR: --targets is required for a folder (or give a run config)")

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = MeshFolderDataset(args.root, inputs=args.inputs, targets=args.targets, split="all",
                               input_file=args.input_file, query_file=args.query_file, on_error="skip",
                               normalize=False, geometry_normalization="none")
    print(f"{args.root}: {len(ds)} usable case(s), {len(ds.skipped)} skipped; points are {ds.dim}-D"
          f"{' (2-D cases, z = 0)' if ds.is_2d and ds.dim == 3 else ''}")
    for case, f, reason in ds.skipped:
        print(f"  skipped {case}: {f}: {reason}")
    return 1 if ds.skipped else 0


def run(args) -> int:
    kind = getattr(args, "data_kind", None)
    if kind is None:
        args._data_parser.print_help()
        return 2
    if kind == "check":
        return _check(args)
    if kind == "pack":
        return _pack(args)
    return _generate(args)
