"""``geoop render FILE --field p [--truth FILE] --out PNG [--html PAGE]``: pictures of a field.

With ``--truth`` (or ``<field>_true`` in FILE for the HTML page): prediction, truth and
absolute error side by side, one colour range for prediction and truth, the relative L2
error in the title. 2-D meshes are viewed from +z, 3-D ones from an isometric camera. A 2-D
domain much larger than its body is framed around the body (``--far-field`` shows it all;
``--body FILE`` names the body explicitly); the colour range and the title's error come from
what is in view. For a 2-D body the field along the body versus x / chord is drawn too
(``OUT_surface.png``). ``--html PAGE`` writes one self-contained interactive page (offline)
with a field picker; ``--camera body`` aims its 3-D camera at the body (e.g. the surface Cp
of a half car and its error).
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("render", help="render a field of a mesh/point-cloud file to PNG and/or an interactive HTML page",
                              description=__doc__.splitlines()[0])
    p.add_argument("file", help="mesh or point cloud with the field (e.g. the output of geoop predict)")
    p.add_argument("--field", default=None, help="point field to draw (vector fields: magnitude); required for --out")
    p.add_argument("--truth", help="file with the true field on the same points")
    p.add_argument("--truth-field", help="name of the field in --truth (default: --field)")
    p.add_argument("--component", type=int, help="draw one component of a vector field")
    p.add_argument("--out", default=None, help="PNG to write")
    p.add_argument("--html", default=None, metavar="PAGE", help="also (or only) write an interactive self-contained HTML page")
    p.add_argument("--fields", nargs="+", default=None, help="fields offered in the HTML page's picker (default: all)")
    p.add_argument("--cmap", default="viridis", help="colour map (viridis, coolwarm, turbo, ...)")
    p.add_argument("--clim", default="robust", help="colour limits: robust (1-99th percentile), full, or LO,HI")
    p.add_argument("--focus", type=float, nargs="+", metavar="X", help="crop box: xmin xmax ymin ymax [zmin zmax]")
    p.add_argument("--far-field", action="store_true", help="show the whole domain (default: frame the body when the "
                                                            "domain is much larger)")
    p.add_argument("--body", default=None, help="file with the body surface to frame (default: the holes of a 2-D mesh)")
    p.add_argument("--no-surface-plot", action="store_true", help="no field-versus-chord plot for 2-D bodies")
    p.add_argument("--zoom", type=float, default=1.0, help="camera zoom")
    p.add_argument("--camera", default="iso", choices=("iso", "body"),
                   help="HTML page camera for 3-D: iso, or body (three-quarter view of the body from upstream, above and "
                        "the side away from its symmetry plane)")
    p.add_argument("--title", help="title text")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="picture size in pixels")
    return p


def run(args) -> int:
    from ..errors import ConfigError, ShapeError
    from ..geometry.io import read

    clim = args.clim
    if "," in clim:
        try:
            clim = [float(x) for x in clim.split(",")]
        except ValueError:
            raise ShapeError(f"--clim {args.clim!r}: expected robust, full or LO,HI") from None
    if args.out is None and args.html is None:
        raise ConfigError("geoop render: give --out PNG and/or --html PAGE")
    if args.out is not None and args.field is None:
        raise ConfigError("geoop render: --out needs --field")
    geometry = read(args.file)
    truth = read(args.truth) if args.truth else None
    body = read(args.body) if args.body else None
    if args.out is not None:
        from ..viz.render import render, surface_plot

        out = render(geometry, args.field, args.out, truth=truth, truth_field=args.truth_field, component=args.component,
                     cmap=args.cmap, clim=clim, focus=args.focus, zoom=args.zoom, title=args.title, window_size=args.size,
                     far_field=args.far_field, body=body)
        print(out)
        if not args.no_surface_plot and args.component is None:
            sp = Path(args.out)
            sp = surface_plot(geometry, args.field, sp.with_name(sp.stem + "_surface.png"), truth=truth,
                              truth_field=args.truth_field, title=args.title)
            if sp is not None:
                print(sp)
    if args.html is not None:
        from ..viz.html import render_html

        page = render_html(geometry, args.html, fields=args.fields, truth=truth, title=args.title, clim=clim,
                           focus=args.focus, far_field=args.far_field, body=body, initial=args.field,
                           camera=args.camera)
        print(page)
    return 0
