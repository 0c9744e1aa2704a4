"""``geoop calibrate --checkpoint C [--split val] [--out C2]``: fit an ensemble's std temperature.

The temperature :math:`T_c` that makes the ensemble's Gaussian intervals calibrated on the
validation cases (:mod:`geoop.train.calibration`) is fitted on the checkpoint's ``--split``
cases (default ``val``; never the test cases) and stored in the checkpoint (``--out``, default
in place; written atomically), so ``geoop predict`` / ``geoop evaluate`` report calibrated
standard deviations without retraining.
"""
from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("calibrate", help="fit an ensemble's std temperature on the validation cases",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="ensemble checkpoint written by geoop train ([model] ensemble = K)")
    p.add_argument("--split", default="val", choices=("val", "train"), help="cases to fit on (default val)")
    p.add_argument("--out", default=None, help="calibrated checkpoint (default: overwrite --checkpoint)")
    return p


def run(args) -> int:
    from ..train.calibration import calibrate_checkpoint

    info = calibrate_checkpoint(args.checkpoint, args.split, args.out, log=lambda s: None)
    print(json.dumps({"checkpoint": args.out or args.checkpoint, **info}))
    return 0
