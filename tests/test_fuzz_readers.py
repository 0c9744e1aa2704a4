"""Fuzzing geoop.read: property-based mutations of valid files in every supported format.

Each hypothesis example mutates a valid file (truncation at a random offset, random byte
flips, an edited count in the header, a duplicated array / section / byte range, or an
edit that touches only bytes outside the data, such as a comment or a title) and reads it
in a separate worker process that runs under a memory limit (``RLIMIT_AS``) and a
per-file timeout, so a crash, a hang or a runaway allocation in a reader fails the test
instead of the suite. The property:

* the read raises a :class:`~geoop.errors.GeoopError` whose message names the file, or
* it returns a Geometry that passes a sanity check (finite coordinates, normals and
  fields; one field row per point / cell; cell indices in range) and, when the mutation
  only touched bytes outside the data, equals the geometry read from the original file.

One worker serves many examples (torch and the readers are imported once, ~2 s); it is
restarted after a crash or a timeout. ``derandomize=True`` makes CI runs reproducible;
``GEOOP_FUZZ_EXAMPLES`` raises the number of examples per seed file and
``GEOOP_FUZZ_RANDOM=1`` draws new ones, for longer local runs.
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import geoop  # noqa: E402
from geoop import Geometry  # noqa: E402
from geoop._optional import available  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("GEOOP_FUZZ_EXAMPLES", "100"))
MEMORY_LIMIT = 6 << 30  # bytes of address space for the reading process
READ_TIMEOUT = 30.0  # seconds for one file

# ---------------------------------------------------------------------------- the worker
WORKER = textwrap.dedent(r"""
    import hashlib, json, os, resource, sys, warnings
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
    import torch
    import geoop
    from geoop.errors import GeoopError
    out = os.fdopen(int(sys.argv[1]), "w", buffering=1)

    def digest(g):
        h = hashlib.sha256()
        for name, t in [("points", g.points), ("normals", g.normals)] + \
                sorted(("c/" + k, v) for k, v in g.cells.items()) + \
                sorted(("f/" + k, v) for k, v in g.fields.items()) + \
                sorted(("cf/" + k, v) for k, v in g.cell_fields.items()) + \
                ([] if g.polyhedra is None else [("ph/" + k, getattr(g.polyhedra, k)) for k in
                                                 ("face_points", "face_offsets", "cell_offsets")]):
            h.update(name.encode())
            if t is not None:
                h.update(t.detach().double().contiguous().numpy().tobytes() if t.is_floating_point()
                         else t.contiguous().numpy().tobytes())
        return h.hexdigest()

    def sanity(g):
        bad = []
        n = g.n_points
        if n == 0:
            bad.append("no points")
        if not torch.isfinite(g.points).all():
            bad.append("non-finite coordinates")
        if g.normals is not None and (g.normals.shape != g.points.shape or not torch.isfinite(g.normals).all()):
            bad.append("bad normals")
        for k, c in g.cells.items():
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= n):
                bad.append(f"cells[{k}] out of range")
        m = g.n_cells
        if g.polyhedra is not None:
            try:
                g.polyhedra.check(n)
                if not torch.isfinite(g.weights).all():
                    bad.append("non-finite weights")
            except GeoopError as e:
                bad.append(f"bad polyhedra accepted: {e}")
        for k, v in g.fields.items():
            if v.shape[0] != n or not torch.isfinite(v).all():
                bad.append(f"field {k}: {tuple(v.shape)} for {n} points or non-finite")
        for k, v in g.cell_fields.items():
            if v.shape[0] != m or not torch.isfinite(v).all():
                bad.append(f"cell field {k}: {tuple(v.shape)} for {m} cells or non-finite")
        return bad

    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = geoop.read(path)
            res = {"status": "ok", "sanity": sanity(g), "digest": digest(g), "n": g.n_points}
        except GeoopError as e:
            res = {"status": "geoop_error", "type": type(e).__name__, "msg": str(e)[:400]}
        except BaseException as e:
            res = {"status": "other_error", "type": type(e).__name__, "msg": str(e)[:400]}
        out.write(json.dumps(res) + "\n")
""")


class ReaderWorker:
    """A subprocess reading files on request, under RLIMIT_AS and a per-file timeout."""

    def __init__(self):
        self.proc = None
        self.restarts = 0
        self.reads = 0
        self.statuses: dict = {}

    def _start(self):
        r, w = os.pipe()
        env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(w), str(MEMORY_LIMIT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(w,), env=env,
                                     text=True)
        os.close(w)
        self.out = os.fdopen(r, "r")

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.out.close()
            self.proc = None

    def read(self, path: Path) -> dict:
        if self.proc is None:
            self._start()
        self.reads += 1
        try:
            self.proc.stdin.write(f"{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.out], [], [], READ_TIMEOUT)
        line = self.out.readline() if ready else ""
        if not line:
            rc = self.proc.poll()
            self.close()
            self.restarts += 1
            res = {"status": "crash" if ready else "timeout", "rc": rc}
        else:
            res = json.loads(line)
        self.statuses[res["status"]] = self.statuses.get(res["status"], 0) + 1
        return res


@pytest.fixture(scope="module")
def worker():
    w = ReaderWorker()
    t0 = time.perf_counter()
    yield w
    w.close()
    counts = {k: v for k, v in sorted(w.statuses.items())}
    print(f"\nfuzz: {w.reads} files read in {time.perf_counter() - t0:.0f} s, {counts}, {w.restarts} worker restarts")


# ---------------------------------------------------------------------------- seed files
def _mesh() -> Geometry:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=1)
    v = torch.tensor(s.vertices, dtype=torch.float64)
    return Geometry(v, torch.tensor(s.faces), normals=v.clone(),
                    fields={"p": v[:, 2] ** 2, "u": v * 2},
                    cell_fields={"c": torch.arange(len(s.faces), dtype=torch.float64)})


def _write_seeds(folder: Path) -> dict[str, Path]:
    import pyvista as pv
    import vtk

    g = _mesh()
    surf = g.replace(cell_fields={})
    seeds = {}

    def put(name, geom):
        p = folder / name
        geoop.write(geom, p)
        seeds[name] = p

    for ext in (".vtu", ".vtp", ".vtk", ".msh", ".npz"):
        put(f"geoop{ext}", g)
    put("geoop.ply", surf)
    for ext in (".stl", ".obj", ".off"):
        put(f"geoop{ext}", surf.replace(fields={}))
    cloud = g.replace(cells={}, cell_fields={}, fields={})
    for ext in (".xyz", ".pts"):
        put(f"geoop{ext}", cloud)
    if available("open3d"):
        put("geoop.pcd", cloud)
    m = g.to_pyvista()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ext, mesh in ((".vtp", m), (".vtu", m.cast_to_unstructured_grid()), (".vtk", m)):
            p = folder / f"ascii{ext}"
            mesh.save(p, binary=False)
            seeds[p.name] = p
        u = m.cast_to_unstructured_grid()
        p = folder / "appended.vtu"
        w = vtk.vtkXMLUnstructuredGridWriter()
        w.SetFileName(str(p))
        w.SetInputData(u)
        w.SetDataModeToAppended()
        w.EncodeAppendedDataOff()
        w.SetCompressorTypeToNone()
        w.Write()
        seeds[p.name] = p
    import trimesh

    p = folder / "ascii.stl"
    p.write_text(trimesh.Trimesh(surf.points.numpy(), surf.faces.numpy(), process=False).export(file_type="stl_ascii"))
    seeds[p.name] = p
    p = folder / "ascii.ply"
    pts = surf.points.numpy()
    lines = ["ply", "format ascii 1.0", f"element vertex {len(pts)}", "property double x", "property double y",
             "property double z", "property double p", f"element face {surf.faces.shape[0]}",
             "property list uchar int vertex_indices", "end_header"]
    lines += [f"{a!r} {b!r} {c!r} {q!r}" for (a, b, c), q in zip(pts.tolist(), surf.fields["p"].flatten().tolist())]
    lines += ["3 " + " ".join(map(str, f)) for f in surf.faces.tolist()]
    p.write_text("\n".join(lines) + "\n")
    seeds[p.name] = p
    poly = _polyhedral_grid(pv)
    for name, binary in (("poly.vtu", True), ("poly_ascii.vtu", False), ("poly.vtk", False)):
        p = folder / name
        poly.save(p, binary=binary)
        seeds[name] = p
    assert all(p.stat().st_size > 0 for p in seeds.values())
    del pv
    return seeds


def _polyhedral_grid(pv):
    """Two unit cubes side by side, one a hexahedron, one a polyhedron whose shared side is
    split in two (a hanging edge), with a cell and a point field."""
    import numpy as np

    pts = np.array([[x, y, z] for x in (0, 1, 2) for y in (0, 0.5, 1) for z in (0, 1)], float)

    def i(x, y, z):
        return (x * 3 + {0: 0, 0.5: 1, 1: 2}[y]) * 2 + z

    hexa = [i(0, 0, 0), i(1, 0, 0), i(1, 1, 0), i(0, 1, 0), i(0, 0, 1), i(1, 0, 1), i(1, 1, 1), i(0, 1, 1)]
    faces = [[i(1, 0, 0), i(1, 0.5, 0), i(1, 0.5, 1), i(1, 0, 1)], [i(1, 0.5, 0), i(1, 1, 0), i(1, 1, 1), i(1, 0.5, 1)],
             [i(2, 0, 0), i(2, 0, 1), i(2, 0.5, 1), i(2, 1, 1), i(2, 1, 0), i(2, 0.5, 0)],
             [i(1, 0, 0), i(1, 0, 1), i(2, 0, 1), i(2, 0, 0)], [i(1, 1, 0), i(2, 1, 0), i(2, 1, 1), i(1, 1, 1)],
             [i(1, 0, 0), i(2, 0, 0), i(2, 0.5, 0), i(2, 1, 0), i(1, 1, 0), i(1, 0.5, 0)],
             [i(1, 0, 1), i(1, 0.5, 1), i(1, 1, 1), i(2, 1, 1), i(2, 0.5, 1), i(2, 0, 1)]]
    stream = [len(faces)] + [x for f in faces for x in (len(f), *f)]
    grid = pv.UnstructuredGrid(np.array([8, *hexa, len(stream), *stream]),
                               np.array([pv.CellType.HEXAHEDRON, pv.CellType.POLYHEDRON], np.uint8), pts)
    grid.cell_data["p"] = np.array([1.0, 2.0])
    grid.point_data["T"] = np.arange(len(pts), dtype=float)
    return grid


SEED_NAMES = ["geoop.vtu", "geoop.vtp", "geoop.vtk", "geoop.msh", "geoop.npz", "geoop.ply", "geoop.stl", "geoop.obj",
              "geoop.off", "geoop.xyz", "geoop.pts", "geoop.pcd", "ascii.vtp", "ascii.vtu", "ascii.vtk",
              "appended.vtu", "ascii.stl", "ascii.ply", "poly.vtu", "poly_ascii.vtu", "poly.vtk"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, worker):
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    files = _write_seeds(folder)
    reference = {}
    for name, p in files.items():
        r = worker.read(p)
        assert r["status"] == "ok" and not r["sanity"], (name, r)
        reference[name] = r["digest"]
    return files, reference


# ---------------------------------------------------------------------------- mutations
_NUMBER = re.compile(rb"(?<![\w.])\d+(?![\w.])")


def _header_numbers(data: bytes, ext: str) -> list[re.Match]:
    """Integer tokens in the parts of a file that declare counts (headers / keyword lines)."""
    if ext in (".vtu", ".vtp"):
        end = data.find(b"<AppendedData")
        return [m for m in _NUMBER.finditer(data, 0, end if end > 0 else len(data))
                if data.rfind(b"<", 0, m.start()) > data.rfind(b">", 0, m.start())]  # inside tags
    if ext == ".npz":
        return list(re.finditer(rb"(?<=\()\d+|(?<=, )\d+", data[:4096]))  # .npy header shapes
    if ext == ".stl" and not data.startswith(b"solid"):
        return [re.match(rb"[\s\S]{80}([\s\S]{4})", data)]  # binary triangle count (handled below)
    if ext == ".msh":
        return [m for m in _NUMBER.finditer(data) if data[m.start() - 1:m.start()] == b"\n"
                and data[m.end():m.end() + 1] == b"\n"][:40]
    head = data[:4096]
    if ext == ".vtk":
        return [m for m in re.finditer(rb"\n[A-Z_]+ (?:\S+ )?(\d+)", data)]
    return list(_NUMBER.finditer(head))[:60]


def _edit_count(data: bytes, ext: str, idx: int, how: int) -> bytes:
    ms = _header_numbers(data, ext)
    if not ms:
        return data
    m = ms[idx % len(ms)]
    grp = 1 if m.re.groups else 0
    s, e = m.span(grp)
    if ext == ".stl" and not data.startswith(b"solid"):
        n = int.from_bytes(data[80:84], "little")
        new = [0, n - 1, n + 1, 2 * n, 2 ** 31, 2 ** 32 - 1][how % 6] % 2 ** 32
        return data[:80] + new.to_bytes(4, "little") + data[84:]
    n = int(data[s:e])
    new = [0, n - 1, n + 1, 2 * n, 10 ** 9, 2 ** 31, -1, n // 2][how % 8]
    return data[:s] + str(new).encode() + data[e:]


def _duplicate(data: bytes, ext: str, start: int, length: int) -> bytes:
    """Duplicate a named array (VTK XML DataArray, legacy VTK data section, PLY property,
    gmsh data section) when the format has one, else a byte range."""
    if ext in (".vtu", ".vtp"):
        blocks = [(m.start(), data.index(b"</DataArray>", m.start()) + 12) for m in re.finditer(rb"<DataArray", data)
                  if data.find(b"/>", m.start(), data.find(b">", m.start()) + 1) < 0 and b"</DataArray>" in data[m.start():]]
        if blocks:
            s, e = blocks[start % len(blocks)]
            return data[:e] + data[s:e] + data[e:]
    if ext == ".vtk":
        secs = [m.start() for m in re.finditer(rb"\n(?:SCALARS|VECTORS|NORMALS) ", data)]
        if secs:
            s = secs[start % len(secs)] + 1
            nxt = [m.start() for m in re.finditer(rb"\n[A-Z_]{5,} ", data) if m.start() > s]
            e = nxt[0] + 1 if nxt else len(data)
            return data[:e] + data[s:e] + data[e:]
    if ext == ".ply":
        props = [m for m in re.finditer(rb"property [^\n]*\n", data[:data.find(b"end_header")])]
        if props:
            m = props[start % len(props)]
            return data[:m.end()] + m.group(0) + data[m.end():]
    if ext == ".msh":
        i = data.find(b"$NodeData")
        if i >= 0:
            return data + data[i:]
    if ext == ".npz":
        import io
        import zipfile

        buf = io.BytesIO(data)
        with zipfile.ZipFile(buf) as z:
            names = z.namelist()
            entry = z.read(names[start % len(names)])
        with warnings.catch_warnings(), zipfile.ZipFile(buf, "a") as z:
            warnings.simplefilter("ignore")
            z.writestr(names[start % len(names)], entry)
        return buf.getvalue()
    s = start % len(data)
    e = min(len(data), s + 1 + length)
    return data[:e] + data[s:e] + data[e:]


def _outside_data(data: bytes, ext: str, text: str, name: str) -> bytes | None:
    """An edit a reader must ignore: a comment, a title, a binary STL header. None when the
    format has no such place."""
    t = text.encode()
    if ext in (".vtu", ".vtp"):
        i = data.index(b"?>") + 2 if data.startswith(b"<?xml") else 0
        return data[:i] + b"\n<!-- " + t.replace(b"-", b"_") + b" -->" + data[i:]
    if ext == ".vtk":
        lines = data.split(b"\n", 2)
        return lines[0] + b"\n" + t[:200] + b"\n" + lines[2]
    if ext == ".ply":
        i = data.index(b"\n", data.index(b"format")) + 1
        return data[:i] + b"comment " + t + b"\n" + data[i:]
    if ext in (".obj", ".xyz"):
        return b"# " + t + b"\n" + data
    if ext == ".off":
        return data[:4] + b"# " + t + b"\n" + data[4:]
    if ext == ".pcd":
        return b"# " + t + b"\n" + data
    if ext == ".stl":
        if data.startswith(b"solid"):
            i = data.index(b"\n")
            return b"solid " + re.sub(rb"\s", b"_", t)[:60] + data[i:]
        hdr = (b"fuzz " + t)[:80].ljust(80, b" ")
        return hdr + data[80:]
    if ext == ".msh":
        i = data.index(b"$EndMeshFormat\n") + len(b"$EndMeshFormat\n")
        return data[:i] + b"$Comments\n" + t.replace(b"$", b"_") + b"\n$EndComments\n" + data[i:]
    return None


@st.composite
def mutations(draw, size: int):
    kind = draw(st.sampled_from(["truncate", "flip", "count", "duplicate", "outside"]))
    if kind == "truncate":
        return kind, (draw(st.integers(1, size - 1)),)
    if kind == "flip":
        return kind, tuple(draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1,
                                         max_size=4)))
    if kind == "count":
        return kind, (draw(st.integers(0, 200)), draw(st.integers(0, 7)))
    if kind == "duplicate":
        return kind, (draw(st.integers(0, size)), draw(st.integers(0, 200)))
    return kind, (draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=40)),)


def _apply(data: bytes, ext: str, kind: str, args, name: str) -> bytes | None:
    if kind == "truncate":
        return data[: args[0]]
    if kind == "flip":
        b = bytearray(data)
        for i, x in args:
            b[i] ^= x
        return bytes(b)
    if kind == "count":
        return _edit_count(data, ext, *args)
    if kind == "duplicate":
        return _duplicate(data, ext, *args)
    return _outside_data(data, ext, args[0], name)


FINDINGS: list = []


def _check(worker, seeds_files, reference, name, kind, args, tmp):
    src = seeds_files[name]
    ext = src.suffix
    data = src.read_bytes()
    new = _apply(data, ext, kind, args, name)
    if new is None or len(new) == 0:
        return
    path = tmp / f"mut_{name}"
    path.write_bytes(new)
    r = worker.read(path)
    where = f"{name} {kind} {str(args)[:120]}"
    assert r["status"] in ("ok", "geoop_error"), f"{where}: {r}"
    if r["status"] == "geoop_error":
        assert str(path) in r["msg"], f"{where}: error does not name the file: {r['msg']}"
        return
    assert not r["sanity"], f"{where}: accepted a geometry failing the sanity check: {r['sanity']}"
    if kind == "outside" or new == data:
        assert r["digest"] == reference[name], f"{where}: an edit outside the data changed what was read"


@pytest.mark.parametrize("name", SEED_NAMES)
def test_fuzz_reader(name, seeds, worker, tmp_path):
    files, reference = seeds
    if name not in files:
        pytest.skip(f"{name}: backend not installed")
    size = files[name].stat().st_size

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("GEOOP_FUZZ_RANDOM"), database=None,
              suppress_health_check=list(HealthCheck))
    @given(m=mutations(size))
    def run(m):
        _check(worker, files, reference, name, m[0], m[1], tmp_path)

    run()


def test_worker_enforces_limits(tmp_path, worker):
    """The harness itself: a reader that runs away in memory is stopped by the limit and a
    hang by the timeout (both reported as failures, not as passes)."""
    w = ReaderWorker()
    try:
        w._start()
        w.proc.stdin.write("/dev/null/does-not-exist.xyz\n")
        w.proc.stdin.flush()
        r = json.loads(w.out.readline())
        assert r["status"] == "geoop_error" and "does-not-exist" in r["msg"]
    finally:
        w.close()
    probe = subprocess.run([sys.executable, "-c", "import resource,sys; resource.setrlimit(resource.RLIMIT_AS, "
                            f"({MEMORY_LIMIT}, {MEMORY_LIMIT})); b = bytearray({2 * MEMORY_LIMIT})"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "MemoryError" in probe.stderr
