"""Walk the data path of ``geoop train``: how often ``geoop/data/folder.py`` is entered and how
often each case file is read by ``geoop.read`` while a config becomes a run (up to the first
epoch), on a small generated airfoil set, from the folder and from a packed store.

    python benchmarks/data_path.py --out /tmp/data_path      # prints one JSON line per source

"Entered" counts calls into a function of ``geoop/data/folder.py`` from geoop code outside it
(a call from one of its functions to another is not an entry; ``from_train_cli``: from
``geoop/train`` and ``geoop/cli``, the layers that turn a config into a run). Discovery passes
count ``discover_cases`` calls. Reads are calls of ``geoop.geometry.io.read``, by file.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path


def _config(folder: str, out: str) -> dict:
    return {
        "seed": 0, "device": "cpu",
        "data": {"folder": folder, "inputs": ["Cp"], "targets": ["u", "v", "p"], "input_file": "{case}_surface.vtp",
                 "query_file": "{case}_volume.vtu", "drop_flat_z": True, "val_split": "val", "val_fraction": 0.2,
                 "subsample": {"queries": 500}},
        "model": {"latent": {"kind": "box", "shape": [8, 8], "features": ["sdf"]},
                  "encoder": {"radius_cells": 1.6, "mlp": [8], "inputs": ["normals", "Cp"]},
                  "decoder": {"radius_cells": 1.6, "mlp": [8]},
                  "blocks": {"kind": "fno", "width": 8, "modes": 3, "layers": 1}},
        "optim": {"epochs": 1, "batch_size": 2},
        "output": {"dir": out},
    }


def trace(config_path: Path) -> dict:
    """Run ``geoop train CONFIG`` in this process with a profiler counting entries into
    folder.py and reads per file until the first epoch starts."""
    import geoop.data.folder as folder
    import geoop.geometry.io as io
    from geoop.cli.main import main
    from geoop.train.trainer import Trainer

    folder_file = os.path.realpath(folder.__file__)
    data_dir = os.path.dirname(folder_file)
    geoop_dir = os.path.dirname(data_dir)
    run_layers = (os.path.join(geoop_dir, "train"), os.path.join(geoop_dir, "cli"))
    read_code = io.read.__code__
    entries: collections.Counter = collections.Counter()  # from any geoop module
    from_run: collections.Counter = collections.Counter()  # from geoop/train and geoop/cli
    passes: collections.Counter = collections.Counter()  # discovery and manifest passes
    reads: collections.Counter = collections.Counter()
    state = {"on": True}

    def prof(frame, event, arg):
        if event != "call" or not state["on"]:
            return
        code = frame.f_code
        if code is read_code:
            reads[os.path.basename(str(frame.f_locals.get("path")))] += 1
            return
        name = code.co_name
        if name in ("discover_cases", "_load_manifest", "load_manifest") and os.path.dirname(
                os.path.realpath(code.co_filename)) == data_dir:
            passes[name.lstrip("_")] += 1
        if os.path.realpath(code.co_filename) == folder_file:
            back = frame.f_back
            caller = "" if back is None else os.path.realpath(back.f_code.co_filename)
            if caller != folder_file and caller.startswith(geoop_dir):
                entries[name] += 1
                if caller.startswith(run_layers):
                    from_run[name] += 1

    fit = Trainer.fit

    def fit_stop(self, *a, **k):  # stop counting when training starts
        state["on"] = False
        return fit(self, *a, **k)

    Trainer.fit = fit_stop
    sys.setprofile(prof)
    try:
        rc = main(["train", str(config_path), "--overwrite"])
    finally:
        sys.setprofile(None)
        Trainer.fit = fit
    return {"rc": rc, "folder_py_entries_from_train_cli": sum(from_run.values()), "entries_from_train_cli": dict(from_run),
            "folder_py_entries_from_geoop": sum(entries.values()), "discovery_passes": passes.get("discover_cases", 0),
            "manifest_loads": passes.get("load_manifest", 0),
            "files_read": len(reads), "reads": sum(reads.values()), "max_reads_per_file": max(reads.values(), default=0),
            "reads_by_file": dict(sorted(reads.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/geoop_data_path")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--source", choices=["folder", "store", "both"], default="both")
    args = ap.parse_args()
    out = Path(args.out)
    cases = out / "cases"
    if not (cases / "manifest.json").exists():
        from geoop.data import airfoil

        airfoil.generate(str(cases), args.n, seed=0, n_volume=1500, n_panels=60)
    import inspect

    from geoop.data.folder import MeshFolderDataset

    n_settings = len([p for p in inspect.signature(MeshFolderDataset.__init__).parameters if p != "self"])
    lines = sum(1 for _ in open(Path(__file__).resolve().parents[1] / "geoop" / "data" / "folder.py"))
    sources = ["folder", "store"] if args.source == "both" else [args.source]
    for src in sources:
        root = cases
        if src == "store":
            root = out / "store"
            if not root.exists():
                from geoop.data.store import pack_folder

                pack_folder(cases, root, ["Cp"], ["u", "v", "p"], input_file="{case}_surface.vtp",
                            query_file="{case}_volume.vtu")
        import tomli_w

        cfg = out / f"{src}.toml"
        cfg.write_text(tomli_w.dumps(_config(str(root), str(out / f"run_{src}"))))
        res = trace(cfg)
        print(json.dumps({"source": src, "dataset_settings": n_settings, "folder_py_lines": lines, **res}))


if __name__ == "__main__":
    main()
