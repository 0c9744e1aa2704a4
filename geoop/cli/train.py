"""``geoop train CONFIG``: train a GINO on a folder of cases (TOML or YAML config).

Also under torchrun: ``torchrun --nproc_per_node N -m geoop train CONFIG`` trains with DDP
(gloo on CPU, nccl on CUDA); only rank 0 writes ``last.pt``/``best.pt``, ``metrics.jsonl``,
``loss.png`` and ``config.json`` into ``output.dir``. See :mod:`geoop.train.config` for the
file layout.

The output folder is owned by one run (:mod:`geoop.train.runfolder`): a second ``geoop train``
on it while the first runs is refused; a folder that already holds a run is refused unless
``--resume`` continues it or ``--overwrite`` starts afresh (the old files are moved to
``OUTPUT_DIR/backup-<time>/``, never deleted). SIGTERM ends training like Ctrl-C: the message
names the last complete checkpoint and ``--resume`` continues from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model from a config file (TOML/YAML); torchrun-aware",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", help="run configuration (.toml, .yaml, .yml or .json)")
    p.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                   help="continue from a checkpoint (default: OUTPUT_DIR/last.pt)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output folder that holds a run: its files move to OUTPUT_DIR/backup-<time>/")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    p.add_argument("--output", default=None, help="override output.dir")
    p.add_argument("--device", default=None, help="override device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="force the progress bar on/off")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads per process (default: torch's, one per core); on a machine busy with other "
                        "work one thread is often several times faster than spinning OpenMP threads")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard event files to DIR (needs the tensorboard package; view with tensorboard --logdir DIR)")
    return p


def run(args) -> int:
    from ..data.folder import MeshFolderDataset
    from ..errors import ConfigError
    from ..models.gino import GINO
    from ..train.config import load_config_file, resolve_config
    from ..train.distributed import cleanup_distributed, init_distributed
    from ..train.run import build_run
    from ..train.runfolder import RunLock, claim_run_folder
    from ..train.trainer import TrainingInterrupted, resolve_device
    from .main import interrupt_signal

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"geoop train: --threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(int(threads))
    raw = load_config_file(args.config)
    for key, section, value in (("epochs", "optim", args.epochs), ("dir", "output", args.output),
                                ("tensorboard", "output", getattr(args, "tensorboard", None))):
        if value is not None:
            raw.setdefault(section, {})[key] = value
    if args.device is not None:
        raw["device"] = args.device
    cfg = resolve_config(raw, source=str(args.config), dataset_cls=MeshFolderDataset, model_cls=GINO)
    out_dir = Path(cfg["output"]["dir"])
    overwrite = getattr(args, "overwrite", False)
    # continuing the folder's own run (its last.pt, or another checkpoint in it) vs. starting a
    # run in the folder from a checkpoint elsewhere (which must not overwrite a run there)
    in_place = args.resume == "last" or (args.resume is not None and Path(args.resume).resolve().parent == out_dir.resolve())
    if in_place and overwrite:
        raise ConfigError("geoop train: --resume continues the run in the output folder and --overwrite starts afresh; "
                          "give one of them")
    device = resolve_device(cfg["device"])
    info = init_distributed(device)
    lock = RunLock(out_dir) if info.is_main else None
    try:
        if lock is not None:  # one writer per folder; an earlier run is continued, moved aside, or refused
            lock.acquire()
            claim_run_folder(out_dir, resume=in_place, overwrite=overwrite)
        resume = None
        if args.resume is not None:
            resume = out_dir / "last.pt" if args.resume == "last" else Path(args.resume)
            if not resume.is_file():
                raise ConfigError(f"geoop train --resume: checkpoint {resume} does not exist"
                                  + ("; no epoch of this run completed: start it without --resume (with --overwrite "
                                     "when the folder holds files of it)" if args.resume == "last" else ""))
        r = build_run(cfg, dist_info=info, progress=args.progress)
        try:
            hist = r.trainer.fit(resume=resume)
        except TrainingInterrupted as e:
            sig = interrupt_signal()
            if info.is_main:
                print(f"geoop train: {'terminated (SIGTERM): ' if sig == signal.SIGTERM else ''}{e}", file=sys.stderr)
            return 128 + int(sig)
        if info.is_main:
            last = hist[-1] if hist else {}
            summary = {k: round(v, 6) if isinstance(v, float) else v for k, v in last.items()}
            print(json.dumps({"checkpoint": str(Path(cfg["output"]["dir"]) / "last.pt"), **summary}))
        return 0
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed(info)
