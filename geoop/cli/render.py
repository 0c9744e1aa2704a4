"""``geoop render FILE --field p [--truth FILE] --out PNG``: an off-screen PyVista picture.

With ``--truth``: prediction, truth and absolute error side by side, one colour range for
prediction and truth, the relative L2 error in the title. 2-D meshes are viewed from +z,
3-D ones from an isometric camera.
"""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("render", help="render a field of a mesh/point-cloud file to PNG",
                              description=__doc__.splitlines()[0])
    p.add_argument("file", help="mesh or point cloud with the field (e.g. the output of geoop predict)")
    p.add_argument("--field", required=True, help="point field to draw (vector fields: magnitude)")
    p.add_argument("--truth", help="file with the true field on the same points")
    p.add_argument("--truth-field", help="name of the field in --truth (default: --field)")
    p.add_argument("--component", type=int, help="draw one component of a vector field")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--cmap", default="viridis", help="colour map (viridis, coolwarm, turbo, ...)")
    p.add_argument("--clim", default="robust", help="colour limits: robust (1-99th percentile), full, or LO,HI")
    p.add_argument("--focus", type=float, nargs="+", metavar="X", help="crop box: xmin xmax ymin ymax [zmin zmax]")
    p.add_argument("--zoom", type=float, default=1.0, help="camera zoom")
    p.add_argument("--title", help="title text")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="picture size in pixels")
    return p


def run(args) -> int:
    from ..errors import ShapeError
    from ..viz.render import render

    clim = args.clim
    if "," in clim:
        try:
            clim = [float(x) for x in clim.split(",")]
        except ValueError:
            raise ShapeError(f"--clim {args.clim!r}: expected robust, full or LO,HI") from None
    out = render(args.file, args.field, args.out, truth=args.truth, truth_field=args.truth_field, component=args.component,
                 cmap=args.cmap, clim=clim, focus=args.focus, zoom=args.zoom, title=args.title, window_size=args.size)
    print(out)
    return 0
