"""Checks of the sizes that file headers declare, done before a file reaches a reader.

Several readers misbehave on malformed files: meshio hangs on a
PLY truncated inside its header and accepts PLY files declaring more vertices than they
hold, VTK crashes the process on binary PLY/VTU files declaring absurd counts, open3d pads
PCD/PTS files that declare more points than they contain. These functions read only the
*header* of a file (never its data: the readers do that) and compare the declared counts
with what the file size can possibly hold. Each raises :class:`GeometryReadError` naming the
file, the declared value and the actual one.

All checks are lower bounds: a file that passes may still be corrupt (the reader and the
validation of what it returns catch that), but a file that fails cannot be valid.
"""
from __future__ import annotations

import mmap
import os
import re
from typing import Callable, Optional

from ..errors import GeometryReadError

__all__ = ["check_header", "HEADER_CHECKS"]

#: the most bytes of a header we look at (headers of real files are far smaller)
_MAX_HEADER = 1 << 16

_PLY_TYPES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1,
    "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}


def _fail(path: str, msg: str) -> GeometryReadError:
    return GeometryReadError(f"{path}: {msg}")


def _head(path: str, n: int = _MAX_HEADER) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _count_lines(path: str, start: int) -> int:
    """An upper bound of the number of data lines from byte offset ``start`` to the end
    (newlines, plus one for an unterminated last line; blank lines are counted too, which
    only makes the checks more lenient). Streams the file in 1 MiB blocks."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


# ----------------------------------------------------------------------------- PLY
def check_ply(path: str) -> Optional[int]:
    """PLY: the header must end (``end_header``) within 64 KiB, and the element counts must
    fit in the rest of the file (binary: fixed-size rows; ascii: one line per row)."""
    head = _head(path)
    if not head.startswith(b"ply"):
        raise _fail(path, f"not a PLY file: expected magic 'ply', got {head[:8]!r}")
    m = re.search(rb"end_header\r?\n", head)
    if m is None:
        raise _fail(path, "PLY header is truncated or too long: no 'end_header' line in the first "
                          f"{min(len(head), _MAX_HEADER)} bytes")
    body = os.path.getsize(path) - m.end()
    fmt = None
    elements: list[list] = []  # [name, count, min_row_bytes]
    for raw in head[: m.start()].decode("latin-1").splitlines():
        tok = raw.split()
        if not tok:
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise _fail(path, f"bad PLY element line {raw.strip()!r}: expected 'element NAME COUNT'")
            elements.append([tok[1], int(tok[2]), 0])
        elif tok[0] == "property" and elements:
            if len(tok) >= 5 and tok[1] == "list":
                csize, isize = _PLY_TYPES.get(tok[2]), _PLY_TYPES.get(tok[3])
                if csize is None or isize is None:
                    raise _fail(path, f"unknown PLY property type in {raw.strip()!r}; valid: {sorted(_PLY_TYPES)}")
                # a face list holds at least 3 indices; other lists may be empty
                min_items = 3 if tok[4] in ("vertex_indices", "vertex_index") else 0
                elements[-1][2] += csize + min_items * isize
            elif len(tok) >= 3:
                size = _PLY_TYPES.get(tok[1])
                if size is None:
                    raise _fail(path, f"unknown PLY property type in {raw.strip()!r}; valid: {sorted(_PLY_TYPES)}")
                elements[-1][2] += size
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _fail(path, f"PLY format must be ascii, binary_little_endian or binary_big_endian, got {fmt!r}")
    if not elements or elements[0][1] == 0:
        raise _fail(path, "PLY file declares no vertices")
    if fmt == "ascii":
        need = sum(e[1] for e in elements)
        have = _count_lines(path, m.end())
        if have < need:
            decl = ", ".join(f"{e[1]} {e[0]}" for e in elements)
            raise _fail(path, f"PLY header declares {decl} ({need} data lines) but the file holds {have} lines")
    else:
        need = sum(e[1] * e[2] for e in elements)
        if need > body:
            decl = ", ".join(f"{e[1]} {e[0]}" for e in elements)
            raise _fail(path, f"PLY header declares {decl}, at least {need} bytes of data, but only "
                              f"{body} bytes follow the header (truncated file or absurd counts)")
    return elements[0][1] if elements[0][0] == "vertex" else None


# ----------------------------------------------------------------------------- VTK XML
_PIECE_COUNTS = ("NumberOfPoints", "NumberOfCells", "NumberOfVerts", "NumberOfLines", "NumberOfStrips", "NumberOfPolys")


def check_vtk_xml(path: str) -> Optional[int]:
    """VTU/VTP: the counts declared in each ``<Piece>`` must fit in the file. Each point has
    3 coordinates of at least 2 bytes (ascii ``"0 "``) or 4 bytes (binary float32); zlib
    compresses at best ~1000:1, so compressed files get that allowance."""
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = mm[:_MAX_HEADER]
        if b"<VTKFile" not in head:
            raise _fail(path, f"not a VTK XML file: no '<VTKFile' element in its first bytes ({head[:40]!r})")
        factor = 1100 if re.search(rb'compressor="[^"]+"', head) else 1
        pieces = [m.group(0) for m in re.finditer(rb"<Piece\b[^>]*>", mm)]
    if not pieces:
        raise _fail(path, "VTK XML file has no <Piece> element (truncated or not a mesh file)")
    npts = ncells = 0
    for p in pieces:
        for key in _PIECE_COUNTS:
            mt = re.search(key.encode() + rb'="\s*(-?\d+)\s*"', p)
            if mt is None:
                continue
            val = int(mt.group(1))
            if val < 0:
                raise _fail(path, f"{key}={val} in a <Piece>: counts must be >= 0")
            if key == "NumberOfPoints":
                npts += val
            else:
                ncells += val
    if npts == 0:
        raise _fail(path, "VTK XML file declares NumberOfPoints=0 (empty mesh)")
    need = 6 * npts + 2 * ncells
    if need > size * factor:
        raise _fail(path, f"declares {npts} points and {ncells} cells (at least {need // factor} bytes) "
                          f"but the file has {size} bytes (truncated file or absurd counts)")
    return npts


# ----------------------------------------------------------------------------- legacy VTK
#: largest implicit (structured) grid read from a legacy VTK file, in points
_MAX_IMPLICIT_POINTS = 200_000_000
_VTK_SIZES = {"bit": 1, "unsigned_char": 1, "char": 1, "unsigned_short": 2, "short": 2, "unsigned_int": 4,
              "int": 4, "unsigned_long": 8, "long": 8, "vtktypeint64": 8, "float": 4, "double": 8}


def check_vtk_legacy(path: str) -> Optional[int]:
    """Legacy VTK: ``POINTS n type`` and ``CELLS n size`` must fit in the file
    (binary: n*3*sizeof(type); ascii: at least 2 bytes per number)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = mm[:1024]
        if not head.startswith(b"# vtk DataFile"):
            raise _fail(path, f"not a legacy VTK file: expected '# vtk DataFile' header, got {head[:20]!r}")
        lines = head.split(b"\n")
        if len(lines) < 4:
            raise _fail(path, "legacy VTK header is truncated (fewer than 4 lines)")
        binary = lines[2].strip().upper() == b"BINARY"
        points = [(int(m.group(1)), m.group(2).decode().lower()) for m in re.finditer(rb"\n\s*POINTS\s+(\d+)\s+(\w+)", mm)]
        cells = [(m.group(1).decode(), int(m.group(2)), int(m.group(3))) for m in
                 re.finditer(rb"\n\s*(CELLS|POLYGONS|LINES|VERTICES|TRIANGLE_STRIPS)\s+(\d+)\s+(\d+)", mm)]
        dims = [tuple(int(x) for x in m.groups()) for m in re.finditer(rb"\n\s*DIMENSIONS\s+(\d+)\s+(\d+)\s+(\d+)", mm)]
        pdata = [int(m.group(1)) for m in re.finditer(rb"\n\s*(?:POINT_DATA|CELL_DATA)\s+(\d+)", mm)]
    for n, typ in points:
        per = _VTK_SIZES.get(typ, 4) if binary else 2
        if 3 * n * per > size:
            raise _fail(path, f"declares POINTS {n} {typ} (at least {3 * n * per} bytes) but the file has {size} bytes")
    for kind, n, total in cells:
        per = 4 if binary else 2
        if min(n, total) * per > size:
            raise _fail(path, f"declares {kind} {n} {total} but the file has only {size} bytes")
    for d in dims:  # implicit grids: points are not stored, but will be materialised
        if d[0] * d[1] * d[2] > _MAX_IMPLICIT_POINTS:
            raise _fail(path, f"declares DIMENSIONS {d[0]} {d[1]} {d[2]} ({d[0] * d[1] * d[2]} points); "
                              f"geoop reads grids of at most {_MAX_IMPLICIT_POINTS} points")
    for n in pdata:
        if n > _MAX_IMPLICIT_POINTS and n > size:
            raise _fail(path, f"declares POINT_DATA/CELL_DATA {n} but the file has {size} bytes")


# ----------------------------------------------------------------------------- STL
def check_stl(path: str) -> Optional[int]:
    """Binary STL: exactly ``84 + 50 * n_triangles`` bytes; ascii STL: starts with ``solid``
    and contains a ``facet``."""
    size = os.path.getsize(path)
    head = _head(path, 84)
    if size >= 84:
        n = int.from_bytes(head[80:84], "little")
        if 84 + 50 * n == size:
            if n == 0:
                raise _fail(path, "binary STL declares 0 triangles")
            return
    if head.lstrip().lower().startswith(b"solid"):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm.find(b"facet") < 0 and mm.find(b"FACET") < 0:
                raise _fail(path, "ascii STL contains no 'facet' (empty or truncated)")
        return
    if size < 84:
        raise _fail(path, f"binary STL must be at least 84 bytes, got {size}")
    n = int.from_bytes(head[80:84], "little")
    raise _fail(path, f"binary STL declares {n} triangles ({84 + 50 * n} bytes) but the file has {size} bytes")


# ----------------------------------------------------------------------------- PCD
_PCD_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


def check_pcd(path: str) -> Optional[int]:
    """PCD: ``POINTS == WIDTH * HEIGHT`` and the data must hold POINTS rows (binary: row
    size from SIZE*COUNT; ascii: one line per point; binary_compressed: the declared
    compressed size must fit and the uncompressed size must match)."""
    head = _head(path)
    hdr: dict[str, list[str]] = {}
    offset = 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        s = line.decode("latin-1").strip()
        if not s or s.startswith("#"):
            continue
        tok = s.split()
        if tok[0] not in _PCD_KEYS:
            raise _fail(path, f"unexpected PCD header line {s[:60]!r}; expected one of {list(_PCD_KEYS)}")
        hdr[tok[0]] = tok[1:]
        if tok[0] == "DATA":
            break
    else:
        raise _fail(path, "PCD header has no DATA line (truncated header)")
    try:
        points = int(hdr["POINTS"][0])
        width = int(hdr.get("WIDTH", [points])[0])
        height = int(hdr.get("HEIGHT", ["1"])[0])
        sizes = [int(s) for s in hdr["SIZE"]]
        counts = [int(c) for c in hdr.get("COUNT", ["1"] * len(sizes))]
        data = hdr["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as e:
        raise _fail(path, f"PCD header misses or garbles a required key ({e}); needs POINTS, SIZE, DATA") from None
    if points <= 0 or width * height != points:
        raise _fail(path, f"PCD header: POINTS={points} must be positive and equal WIDTH*HEIGHT={width}*{height}")
    body = os.path.getsize(path) - offset
    row = sum(s * c for s, c in zip(sizes, counts))
    if data == "ascii":
        have = _count_lines(path, offset)
        if have < points:
            raise _fail(path, f"PCD header declares POINTS={points} but the file holds {have} data lines")
    elif data == "binary":
        if points * row > body:
            raise _fail(path, f"PCD header declares POINTS={points} ({points * row} bytes) but only {body} "
                              "bytes of data follow the header")
    elif data == "binary_compressed":
        tail = _head(path, offset + 8)[offset:]
        if len(tail) < 8:
            raise _fail(path, "binary_compressed PCD is truncated before its size words")
        csize, usize = int.from_bytes(tail[:4], "little"), int.from_bytes(tail[4:8], "little")
        if csize + 8 > body or usize != points * row:
            raise _fail(path, f"binary_compressed PCD declares {csize} compressed / {usize} uncompressed bytes; "
                              f"expected <= {body - 8} and {points * row}")
    else:
        raise _fail(path, f"PCD DATA must be ascii, binary or binary_compressed, got {data!r}")
    return points


# ----------------------------------------------------------------------------- PTS / OFF
def check_pts(path: str) -> Optional[int]:
    """PTS: an optional first line holding only the point count must not exceed the lines."""
    first = _head(path, 256).split(b"\n", 1)[0].split()
    if len(first) == 1 and first[0].isdigit():
        n = int(first[0])
        have = _count_lines(path, 0) - 1
        if n != have:
            raise _fail(path, f"PTS header declares {n} points but the file holds {have} point lines")
        return n
    return None


def check_off(path: str) -> Optional[int]:
    """OFF: the counts line ``nv nf ne`` must not exceed the number of lines."""
    lines = [ln for ln in _head(path).splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")]
    if not lines or not lines[0].strip().upper().endswith(b"OFF"):
        raise _fail(path, "not an OFF file: first line must be 'OFF'")
    tok = lines[0].split()[1:] or (lines[1].split() if len(lines) > 1 else [])
    try:
        nv, nf = int(tok[0]), int(tok[1])
    except (IndexError, ValueError):
        raise _fail(path, "OFF counts line missing or garbled: expected 'NV NF NE'") from None
    have = _count_lines(path, 0)
    if nv <= 0 or nv + nf + 1 > have:
        raise _fail(path, f"OFF header declares {nv} vertices and {nf} faces but the file holds {have} lines")
    return nv


# ----------------------------------------------------------------------------- gmsh
def check_msh(path: str) -> Optional[int]:
    """gmsh: starts with ``$MeshFormat`` and ends with a closing ``$End...`` section tag
    (meshio silently returns a partial mesh for a file cut inside a section)."""
    head = _head(path, 64)
    if not head.lstrip().startswith(b"$MeshFormat"):
        raise _fail(path, f"not a gmsh file: expected '$MeshFormat' first, got {head[:16]!r}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 256))
        tail = f.read()
    last = tail.rstrip().rsplit(b"\n", 1)[-1].strip()
    if not last.startswith(b"$End"):
        raise _fail(path, f"gmsh file is truncated: it ends with {last[-24:]!r} instead of a '$End...' section tag")


#: extension -> header check
HEADER_CHECKS: dict[str, Callable[[str], None]] = {
    ".ply": check_ply,
    ".vtu": check_vtk_xml,
    ".vtp": check_vtk_xml,
    ".vtk": check_vtk_legacy,
    ".stl": check_stl,
    ".pcd": check_pcd,
    ".pts": check_pts,
    ".off": check_off,
    ".msh": check_msh,
}


def check_header(path: str, ext: Optional[str] = None) -> Optional[int]:
    """Run the header check for the file's extension. Returns the number of points the
    header declares when the format states it (PLY, VTU/VTP, PCD, PTS, OFF), else None."""
    ext = (ext or os.path.splitext(path)[1]).lower()
    fn = HEADER_CHECKS.get(ext)
    return fn(path) if fn is not None else None
