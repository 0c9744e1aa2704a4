"""geoop render: the interactive HTML page loaded in headless Chromium and looked at
(pixel statistics where the geometry is), body framing, colour range from the view, the
surface plot of 2-D bodies, no X-server warning."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import geoop
from geoop.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def airfoil_case(tmp_path_factory):
    """A raw airfoil case (domain out to 5 chords: 10x the body) with a 'prediction' that
    differs from the truth near the leading edge."""
    from geoop.data.airfoil import make_case

    tmp = tmp_path_factory.mktemp("viewer")
    surface, volume = make_case({"naca": "2412", "alpha_deg": 6.0, "n_panels": 80, "n_volume": 1500})
    pts = volume.points.double()
    # an error at the leading edge (in view) and a larger one in the far field (out of view)
    bump = 0.3 * torch.exp(-((pts[:, 0] - 0.05) ** 2 + pts[:, 1] ** 2) / 0.01) + 0.5 * ((pts[:, 0] - 0.5).abs() > 2.0)
    pred = volume.with_fields(p=volume.fields["p"] + bump[:, None].float(), p_true=volume.fields["p"],
                              u=volume.fields["u"] * 1.02, u_true=volume.fields["u"])
    geoop.write(pred, tmp / "pred.vtu")
    geoop.write(volume, tmp / "truth.vtu")
    sp = surface.with_fields(Cp_true=surface.fields["Cp"], Cp=surface.fields["Cp"] * 1.05)
    geoop.write(sp, tmp / "surface_pred.vtp")
    return tmp, surface, volume


def test_body_framing_and_view_box(airfoil_case):
    from geoop.viz.framing import body_nodes, view_box

    tmp, surface, volume = airfoil_case
    idx = body_nodes(volume)
    # the body loop is exactly the airfoil's nodes (the first nodes of the volume mesh)
    assert sorted(idx.tolist()) == list(range(surface.n_points))
    box = view_box(volume)
    assert box[0] == pytest.approx(-0.3, abs=0.01) and box[1] == pytest.approx(1.3, abs=0.01)
    assert view_box(volume, ratio=20.0) is None  # a domain not much larger than the body: everything


def test_render_png_frames_the_body_and_draws_the_surface_plot(airfoil_case, capsys):
    import matplotlib.image as mpimg

    from geoop.viz.render import render

    tmp, surface, volume = airfoil_case
    png = tmp / "p.png"
    assert main(["render", str(tmp / "pred.vtu"), "--field", "p", "--truth", str(tmp / "truth.vtu"), "--out", str(png),
                 "--size", "900", "320"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(png), str(tmp / "p_surface.png")]
    img = mpimg.imread(str(png))[..., :3]
    assert img.shape[:2] == (320, 900) and img.std() > 0.05
    # the framed view shows the airfoil: a white hole (no cells) in the middle of each view
    sp = mpimg.imread(str(tmp / "p_surface.png"))[..., :3]
    assert sp.std() > 0.05
    # the far field (a flag away) is another picture
    pred, truth = geoop.read(tmp / "pred.vtu"), geoop.read(tmp / "truth.vtu")
    render(pred, "p", tmp / "far.png", truth=truth, far_field=True, window_size=(900, 320))
    far = mpimg.imread(str(tmp / "far.png"))[..., :3]
    assert np.abs(far - img).mean() > 0.02


def test_title_error_and_colour_range_from_the_view(airfoil_case, tmp_path):
    """The error in the title is that of the points in view (the far-field error is out of
    view), the colour range that of the values in view."""
    from geoop.viz.framing import in_box, view_box
    from geoop.viz.html import render_html
    from geoop.viz.render import colour_limits, relative_l2_error

    tmp, _, _ = airfoil_case
    pred = geoop.read(tmp / "pred.vtu")
    m = in_box(pred.points.double().numpy(), view_box(pred))
    a, b = pred.fields["p"][:, 0].double().numpy(), pred.fields["p_true"][:, 0].double().numpy()
    e_view, e_all = relative_l2_error(a[m], b[m]), relative_l2_error(a, b)
    assert e_all > 1.5 * e_view
    text = render_html(pred, tmp_path / "v.html", fields=["p"]).read_text()
    assert f"relative L2 error {100 * e_view:.2f}% (in view)" in text
    lo, hi = colour_limits(np.concatenate([a[m], b[m]]))
    assert f'"cmin":{lo}' in text.replace(" ", "") and f'"cmax":{hi}' in text.replace(" ", "")
    text = render_html(pred, tmp_path / "far.html", fields=["p"], far_field=True).read_text()
    assert f"relative L2 error {100 * e_all:.2f}%" in text and "(in view)" not in text


def test_render_prints_no_x_server_warning(airfoil_case, tmp_path):
    """In a fresh process without DISPLAY, rendering writes nothing to stderr."""
    tmp, _, _ = airfoil_case
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    r = subprocess.run([sys.executable, "-m", "geoop", "render", str(tmp / "pred.vtu"), "--field", "u", "--out",
                        str(tmp_path / "u.png"), "--size", "400", "300", "--no-surface-plot"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert (tmp_path / "u.png").exists()


def _screenshot(html, png, tmp_path, size=(1500, 650)):
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=20000",
            "--enable-logging=stderr", "--v=0", f"--screenshot={png}", f"file://{html}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert png.exists(), f"chromium wrote no screenshot (rc {r.returncode}): {r.stderr[-2000:]}"
    # the page's JavaScript (plotly.js, the camera link) ran without an error
    errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)]
    assert not errors, errors


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (scripts/setup_env.sh installs the "
                                              "Debian 'chromium' package); the HTML page cannot be looked at")
def test_html_page_renders_in_headless_chromium(airfoil_case, tmp_path):
    from PIL import Image

    tmp, _, _ = airfoil_case
    html = tmp_path / "view.html"
    assert main(["render", str(tmp / "pred.vtu"), "--field", "p", "--html", str(html)]) == 0
    text = html.read_text()
    # self-contained: plotly.js inline, nothing fetched from the network
    assert "<script src=\"http" not in text and "cdn.plot.ly" not in text.split("/*")[0]
    assert len(text) > 1_000_000 and '"p prediction"' in text and '"u prediction"' in text  # field picker: p and u
    png = tmp_path / "shot.png"
    _screenshot(html, png, tmp_path)
    img = np.asarray(Image.open(png).convert("RGB")).astype(np.float64) / 255.0
    h, w, _ = img.shape
    assert img.std() > 0.05, "blank screenshot"
    sat = img.max(2) - img.min(2)  # colourfulness: 0 for white/grey/black
    # each of the three views (thirds of the page width, below the title) shows the coloured
    # mesh around the body in its middle, and white paper in its corners
    for k in range(3):
        x0, x1 = int(w * k / 3), int(w * (k + 1) / 3)
        region = img[int(0.4 * h):int(0.7 * h), x0 + int(0.1 * (x1 - x0)):x0 + int(0.55 * (x1 - x0))]
        drawn = region.min(2) < 0.85  # not white paper (the error view's colour map starts at black)
        assert drawn.mean() > 0.5, f"view {k}: the geometry region is mostly empty ({drawn.mean():.2f} drawn)"
        if k < 2:  # prediction and truth: viridis colours
            assert (sat[int(0.4 * h):int(0.7 * h), x0 + int(0.1 * (x1 - x0)):x0 + int(0.55 * (x1 - x0))] > 0.15).mean() > 0.5
    corner = img[int(0.9 * h):, : int(0.05 * w)]
    assert corner.min() > 0.9  # white paper outside the plots
    shutil.copy(png, tmp / "html_screenshot.png")  # kept for a look


def test_html_page_for_surfaces_polylines_and_point_clouds(airfoil_case, tmp_path):
    """3-D triangle surfaces become Mesh3d, 2-D polylines one coloured line per view, point
    clouds markers; the field picker's buttons show exactly one field's traces."""
    import json as _json
    import re

    from geoop.data.body3d import make_case
    from geoop.viz.html import render_html

    tmp, _, _ = airfoil_case
    surf, vol = make_case({"shape": "sphere", "n_panels": 80, "n_volume": 200})
    pred = surf.with_fields(Cp_pred=surf.fields["Cp"] * 1.1)
    text = render_html(pred, tmp_path / "s.html", fields=["Cp_pred"], truth=pred.with_fields(Cp_pred=surf.fields["Cp"])).read_text()
    assert text.count('"intensitymode":"vertex"') == 3  # three Mesh3d traces
    text = render_html(tmp / "surface_pred.vtp", tmp_path / "l.html").read_text()  # Cp with Cp_true
    assert text.count('"mode":"lines+markers"') == 3
    text = render_html(vol, tmp_path / "v.html").read_text()  # velocity and p, no truth: one view each
    assert text.count('"mode":"markers"') == 2
    masks = [_json.loads(m) for m in re.findall(r'"visible":(\[[^\]]*\])', text)]
    assert [True, False] in masks and [False, True] in masks


def test_body_is_framed_and_drawn_for_3d_volumes(tmp_path):
    """A 3-D volume point cloud around a body given with --body: cropped to the body's
    surroundings (a 6-number box), the body drawn in grey in every view and kept visible
    by the field picker."""
    import json as _json
    import re

    from geoop.data.body3d import make_case
    from geoop.viz.framing import view_box
    from geoop.viz.html import render_html

    surf, vol = make_case({"shape": "car", "n_panels": 200, "n_volume": 1500})
    vol = vol.with_fields(p_true=vol.fields["p"], p=vol.fields["p"] * 1.1)
    box = view_box(vol, surf)
    assert len(box) == 6 and box[1] - box[0] < 0.5 * float(vol.points[:, 0].max() - vol.points[:, 0].min())
    text = render_html(vol, tmp_path / "b.html", body=surf).read_text()
    assert text.count('"name":"body"') == 3
    masks = [_json.loads(m) for m in re.findall(r'"visible":(\[[^\]]*\])', text)]
    assert masks and all(m[-3:] == [True, True, True] for m in masks)
    assert main(["render", str(_write(vol, tmp_path / "v.vtu")), "--field", "p", "--body", str(_write(surf, tmp_path / "s.vtp")),
                 "--out", str(tmp_path / "v.png"), "--size", "600", "240"]) == 0


def _write(g, path):
    geoop.write(g, path)
    return path
