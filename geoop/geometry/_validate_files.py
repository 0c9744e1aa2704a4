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
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import GeometryReadError

__all__ = ["check_header", "HEADER_CHECKS", "Declared"]

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


def _check_final_newline(path: str, what: str) -> None:
    """Text formats whose writers end every line: a last line without its newline is a file
    cut inside its last number, which would otherwise read as a different value."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 1))
        if f.read(1) not in (b"\n", b"\r"):
            raise _fail(path, f"{what} file does not end with a newline: cut short inside its last line")


def _count_lines(path: str, start: int, nonblank: bool = False, comment: Optional[bytes] = None) -> int:
    """An upper bound of the number of data lines from byte offset ``start`` to the end
    (newlines, plus one for an unterminated last line; blank lines are counted too, which
    only makes the checks more lenient). Streams the file in 1 MiB blocks."""
    if nonblank:  # exact count of lines holding something
        with open(path, "rb") as f:
            f.seek(start)
            return sum(1 for line in f if line.strip() and not (comment and line.lstrip().startswith(comment)))
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
            elements[-1].append(tok[-1])
            _dup_check(path, elements[-1][3:], f"PLY element {elements[-1][0]!r}")
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
    decl = ", ".join(f"{e[1]} {e[0]}" for e in elements)
    if fmt == "ascii":
        need = sum(e[1] for e in elements)
        have = _count_lines(path, m.end(), nonblank=True)
        if have != need:  # meshio ignores rows beyond the declared counts
            raise _fail(path, f"PLY header declares {decl} ({need} data lines) but the file holds {have} lines")
        _check_final_newline(path, "ascii PLY")
    else:
        need = sum(e[1] * e[2] for e in elements)
        has_lists = bool(re.search(rb"property\s+list", head[: m.start()]))
        if not has_lists and need != body:  # fixed-size rows: the size is exact
            raise _fail(path, f"PLY header declares {decl}, {need} bytes of data, but {body} bytes follow the "
                              "header (truncated file, or rows beyond the declared counts)")
        if need > body:
            decl = ", ".join(f"{e[1]} {e[0]}" for e in elements)
            raise _fail(path, f"PLY header declares {decl}, at least {need} bytes of data, but only "
                              f"{body} bytes follow the header (truncated file or absurd counts)")
    return elements[0][1] if elements[0][0] == "vertex" else None


# ----------------------------------------------------------------------------- declared content
@dataclass
class Declared:
    """What a file's header says it holds, for comparison with what a reader returned.

    ``point_arrays`` / ``cell_arrays``: name -> number of values per point / cell (VTK
    files only; empty when unknown)."""

    n_points: Optional[int] = None
    n_cells: Optional[int] = None
    point_arrays: dict = field(default_factory=dict)
    cell_arrays: dict = field(default_factory=dict)


def _dup_check(path: str, names: list, where: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise _fail(path, f"two arrays named {n!r} in {where}: expected unique names, found {names.count(n)} "
                              "(a reader would keep one and silently drop the other)")
        seen.add(n)


# ----------------------------------------------------------------------------- VTK XML
_PIECE_COUNTS = ("NumberOfPoints", "NumberOfCells", "NumberOfVerts", "NumberOfLines", "NumberOfStrips", "NumberOfPolys")
_XML_TAG = re.compile(rb"<(/?)([A-Za-z_][\w.:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>")
_XML_ATTR_QUOTED = re.compile(rb"""([\w.:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


class _XmlAttr:
    """Attributes of an XML tag, in double or single quotes (foamToVTK writes single ones)."""

    @staticmethod
    def findall(text: bytes) -> list:
        return [(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
                for m in _XML_ATTR_QUOTED.finditer(text)]


_XML_ATTR = _XmlAttr()
_XML_SIZES = {"Int8": 1, "UInt8": 1, "Int16": 2, "UInt16": 2, "Int32": 4, "UInt32": 4, "Int64": 8, "UInt64": 8,
              "Float32": 4, "Float64": 8}
_XML_SECTIONS = ("PointData", "CellData", "Points", "Cells", "Verts", "Lines", "Strips", "Polys", "FieldData")


def _b64_prefix(text: bytes, nbytes: int) -> bytes:
    """The first ``nbytes`` decoded bytes of base64 ``text`` (whitespace ignored)."""
    import base64
    import binascii

    chars = -(-nbytes // 3) * 4
    t = re.sub(rb"\s+", b"", text[: chars + 64])[:chars]
    try:
        return base64.b64decode(t + b"=" * (-len(t) % 4))[:nbytes]
    except (binascii.Error, ValueError):
        return b""


class _XmlFile:
    """Header words of binary VTK XML arrays (inline base64 or appended raw/base64): the
    reader trusts them, so they are what must agree with the piece's counts."""

    def __init__(self, path: str, mm, attrs: dict, appended: Optional[tuple]):
        self.path, self.mm = path, mm
        self.hs = 8 if attrs.get("header_type", "UInt32") == "UInt64" else 4
        self.order = "big" if attrs.get("byte_order", "LittleEndian") == "BigEndian" else "little"
        self.compressed = bool(attrs.get("compressor"))
        self.appended = appended  # (encoding, data start) or None
        self.offsets: dict = {}  # appended offset -> array name

    def _words(self, raw: bytes, n: int) -> Optional[list]:
        if len(raw) < n * self.hs:
            return None
        return [int.from_bytes(raw[i * self.hs:(i + 1) * self.hs], self.order) for i in range(n)]

    def nbytes(self, name: str, fmt: str, content: bytes, offset: Optional[int]) -> int:
        """Uncompressed payload size of one binary array, from its header."""
        nw = 3 if self.compressed else 1
        if fmt == "binary":
            raw = _b64_prefix(content, nw * self.hs)
        else:
            if self.appended is None or offset is None:
                raise _fail(self.path, f"array {name!r} is format='appended' but the file has no <AppendedData> "
                                       "section or the array no offset")
            enc, start = self.appended
            pos = start + offset
            if enc == "base64":
                raw = _b64_prefix(self.mm[pos:pos + 4 * nw * self.hs + 64], nw * self.hs)
            else:
                raw = self.mm[pos:pos + nw * self.hs]
        w = self._words(raw, nw)
        if w is None:
            raise _fail(self.path, f"array {name!r}: its binary header ends before {nw * self.hs} bytes "
                                   "(truncated file)")
        if not self.compressed:
            n = w[0]
        else:
            nblocks, block, last = w
            n = 0 if nblocks == 0 else (nblocks - 1) * block + (last or block)
            if fmt == "appended" and self.appended[0] == "raw":  # whole compressed payload must be there
                pos = self.appended[1] + offset
                if (3 + nblocks) * self.hs > len(self.mm) - pos:
                    raise _fail(self.path, f"array {name!r} declares {nblocks} compressed blocks but the file "
                                           f"ends first (truncated file)")
                sizes = self._words(self.mm[pos + 3 * self.hs:pos + (3 + nblocks) * self.hs], nblocks) or []
                need = (3 + nblocks) * self.hs + sum(sizes)
                if need > len(self.mm) - pos:
                    raise _fail(self.path, f"array {name!r} needs {need} bytes of appended data but the file has "
                                           f"{len(self.mm) - pos} after its offset (truncated file)")
        if fmt == "appended" and self.appended[0] == "raw" and not self.compressed:
            pos = self.appended[1] + offset
            if self.hs + n > len(self.mm) - pos:
                raise _fail(self.path, f"array {name!r} declares {n} bytes of appended data but the file has "
                                       f"{len(self.mm) - pos - self.hs} after its offset (truncated file)")
        return n


def check_vtk_xml(path: str) -> Declared:
    """VTU/VTP: the counts declared in each ``<Piece>`` must fit in the file, and every
    ``DataArray`` must hold exactly what the piece declares: VTK silently trims a point or
    cell data array that is longer than the point / cell count and keeps only the first of
    two arrays of one name. Each array's length comes from its text (ascii) or its binary
    header words (inline base64 or appended), without decoding the data. Each point has
    3 coordinates of at least 2 bytes (ascii ``"0 "``) or 4 bytes (binary float32); zlib
    compresses at best ~1000:1, so compressed files get that allowance."""
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = mm[:_MAX_HEADER]
        if b"<VTKFile" not in head:
            raise _fail(path, f"not a VTK XML file: no '<VTKFile' element in its first bytes ({head[:40]!r})")
        factor = 1100 if re.search(rb'compressor="[^"]+"', head) else 1
        app = re.search(rb"<AppendedData\b([^>]*)>", mm)
        end = app.start() if app else size
        appended = None
        if app:
            under = mm.find(b"_", app.end())
            enc = dict(_XML_ATTR.findall(app.group(1))).get(b"encoding", b"raw").decode()
            appended = (enc, under + 1) if under >= 0 else None
        return _scan_vtk_xml(path, mm, end, appended, size, factor)


def _scan_vtk_xml(path: str, mm, end: int, appended, size: int, factor: int) -> Declared:
    dec = Declared(n_points=0, n_cells=0)
    fileinfo = None
    piece = None
    section = None
    names: dict = {}
    pieces = 0
    for m in _XML_TAG.finditer(mm, 0, end):
        closing, tag, rest, selfclose = m.group(1), m.group(2).decode("latin-1"), m.group(3), m.group(4)
        if tag == "VTKFile" and not closing:
            fileinfo = _XmlFile(path, mm, {k.decode(): v.decode("latin-1") for k, v in _XML_ATTR.findall(rest)},
                                appended)
        elif tag == "Piece" and not closing:
            pieces += 1
            attrs = {k.decode(): v.decode("latin-1").strip() for k, v in _XML_ATTR.findall(rest)}
            piece = {}
            for key in _PIECE_COUNTS:
                if key in attrs:
                    try:
                        piece[key] = int(attrs[key])
                    except ValueError:
                        raise _fail(path, f"{key}={attrs[key]!r} in a <Piece>: expected an integer") from None
                    if piece[key] < 0:
                        raise _fail(path, f"{key}={piece[key]} in a <Piece>: counts must be >= 0")
            piece["cells"] = sum(v for k, v in piece.items() if k not in ("NumberOfPoints",))
            dec.n_points += piece.get("NumberOfPoints", 0)
            dec.n_cells += piece["cells"]
            names = {}
        elif tag in _XML_SECTIONS:
            section = None if (closing or selfclose) else tag
        elif tag == "DataArray" and not closing and piece is not None and section not in (None, "FieldData"):
            attrs = {k.decode(): v.decode("latin-1") for k, v in _XML_ATTR.findall(rest)}
            _check_xml_array(path, mm, m.end(), bool(selfclose), attrs, section, piece, fileinfo, names, dec)
    if pieces == 0:
        raise _fail(path, "VTK XML file has no <Piece> element (truncated or not a mesh file)")
    if dec.n_points == 0:
        raise _fail(path, "VTK XML file declares NumberOfPoints=0 (empty mesh)")
    need = 6 * dec.n_points + 2 * dec.n_cells
    if need > size * factor:
        raise _fail(path, f"declares {dec.n_points} points and {dec.n_cells} cells (at least {need // factor} "
                          f"bytes) but the file has {size} bytes (truncated file or absurd counts)")
    return dec


def _check_xml_array(path, mm, start, selfclose, attrs, section, piece, fileinfo, names, dec) -> None:
    name = attrs.get("Name", "")
    typ = attrs.get("type", "")
    fmt = attrs.get("format", "ascii")
    try:
        ncomp = int(attrs.get("NumberOfComponents", "1"))
    except ValueError:
        raise _fail(path, f"array {name!r}: NumberOfComponents={attrs['NumberOfComponents']!r} is not an integer") from None
    where = f"<{section}>"
    if section in ("PointData", "CellData"):
        names.setdefault(section, []).append(name)
        _dup_check(path, names[section], f"{where} of one piece")
    if ncomp < 1:
        raise _fail(path, f"array {name!r} in {where}: NumberOfComponents={ncomp}, expected >= 1")
    if typ not in _XML_SIZES:  # String arrays and the like: not geometry data
        return
    npts, ncells = piece.get("NumberOfPoints", 0), piece["cells"]
    if section == "Points":
        tuples, what = npts, "points"
    elif section == "PointData":
        tuples, what = npts, "points"
    elif section == "CellData":
        tuples, what = ncells, "cells"
    elif name in ("offsets", "types"):
        key = {"Cells": "NumberOfCells", "Verts": "NumberOfVerts", "Lines": "NumberOfLines",
               "Strips": "NumberOfStrips", "Polys": "NumberOfPolys"}[section]
        tuples, what = piece.get(key, 0), key
    else:  # connectivity: its length follows from the offsets (checked by the reader)
        return
    if "NumberOfTuples" in attrs and attrs["NumberOfTuples"].strip() != str(tuples):
        raise _fail(path, f"array {name!r} in {where}: NumberOfTuples={attrs['NumberOfTuples']} but the piece "
                          f"declares {tuples} {what}")
    if fmt == "ascii":
        if selfclose:
            nvals = 0
        else:
            stop = mm.find(b"<", start)
            nvals = len(mm[start:stop if stop >= 0 else len(mm)].split())
    elif fmt in ("binary", "appended"):
        if fileinfo is None:
            raise _fail(path, "no <VTKFile> element before the data")
        content = b"" if selfclose else mm[start:start + 256]
        off = attrs.get("offset")
        try:
            off = None if off is None else int(off)
        except ValueError:
            raise _fail(path, f"array {name!r}: offset={off!r} is not an integer") from None
        if fmt == "appended" and off is not None:
            if off in fileinfo.offsets:  # an edited offset reads another array's bytes
                raise _fail(path, f"array {name!r} in {where}: offset={off} is also the offset of array "
                                  f"{fileinfo.offsets[off]!r}; expected each array its own data")
            fileinfo.offsets[off] = name
        nb = fileinfo.nbytes(name, fmt, content, off)
        size = _XML_SIZES[typ]
        if nb % size:
            raise _fail(path, f"array {name!r} in {where}: {nb} bytes of data is not a whole number of {typ} values")
        nvals = nb // size
    else:
        raise _fail(path, f"array {name!r} in {where}: format must be ascii, binary or appended, got {fmt!r}")
    expect = tuples * ncomp
    if nvals != expect:
        raise _fail(path, f"array {name!r} in {where}: expected {expect} values ({tuples} {what} x {ncomp} "
                          f"components), found {nvals}")
    if section == "PointData":
        dec.point_arrays[name] = ncomp
    elif section == "CellData":
        dec.cell_arrays[name] = ncomp


# ----------------------------------------------------------------------------- legacy VTK
#: largest implicit (structured) grid read from a legacy VTK file, in points
_MAX_IMPLICIT_POINTS = 200_000_000
_VTK_SIZES = {"bit": 1, "unsigned_char": 1, "char": 1, "unsigned_short": 2, "short": 2, "unsigned_int": 4,
              "int": 4, "unsigned_long": 8, "long": 8, "vtktypeint64": 8, "vtktypeuint64": 8, "vtkidtype": 8,
              "float": 4, "double": 8}
_NUMBER_START = frozenset(b"+-.0123456789nNiI")
_TOKEN = re.compile(rb"\S+")


class _LegacyWalk:
    """Walk a legacy VTK file section by section, consuming exactly the number of values
    each keyword line declares (binary: bytes; ascii: number tokens). VTK's own reader
    returns a partial dataset with only a warning for a file cut short inside its data, so
    the file has to be checked against its own declarations first."""

    def __init__(self, path: str, mm, binary: bool, version: float, pos: int):
        self.path, self.mm, self.binary, self.version, self.pos = path, mm, binary, version, pos

    def line(self) -> Optional[list]:
        """Tokens of the next non-blank line (None at the end of the file)."""
        mm, n = self.mm, len(self.mm)
        while self.pos < n and mm[self.pos:self.pos + 1] in (b" ", b"\t", b"\r", b"\n"):
            self.pos += 1
        if self.pos >= n:
            return None
        e = mm.find(b"\n", self.pos)
        e = n if e < 0 else e
        toks = mm[self.pos:e].decode("latin-1").split()
        self.pos = e + 1
        return toks

    def take(self, count: int, typ: str, what: str) -> None:
        """Consume ``count`` values of VTK type ``typ`` for section ``what``."""
        if count < 0:
            raise _fail(self.path, f"{what}: negative count {count}")
        if self.binary:
            t = typ.lower()
            if t not in _VTK_SIZES:
                raise _Unknown(typ)
            nb = -(-count // 8) if t == "bit" else count * _VTK_SIZES[t]
            if self.pos + nb > len(self.mm):
                raise _fail(self.path, f"{what}: expected {count} {typ} values ({nb} bytes) but the file ends after "
                                       f"{max(0, len(self.mm) - self.pos)} bytes (truncated file)")
            self.pos += nb
            return
        got = 0
        if count:
            for m in _TOKEN.finditer(self.mm, self.pos):
                if m.group(0)[0] not in _NUMBER_START:
                    raise _fail(self.path, f"{what}: expected {count} values, found {got} before "
                                           f"{m.group(0)[:20].decode('latin-1')!r} (truncated section or wrong count)")
                got += 1
                if got == count:
                    self.pos = m.end()
                    break
        if got < count:
            raise _fail(self.path, f"{what}: expected {count} values, found {got} before the end of the file "
                                   "(truncated file)")


class _Unknown(Exception):
    """A section this walker cannot size (string arrays, exotic types): stop checking."""


def check_vtk_legacy(path: str) -> Optional[Declared]:
    """Legacy VTK (ascii and binary, versions 2-5): every section must hold exactly the
    values its keyword line declares (``POINTS n type``, ``CELLS n size``, ``CELL_TYPES n``,
    ``POINT_DATA``/``CELL_DATA`` arrays, ``FIELD`` arrays), no data array name may repeat
    within ``POINT_DATA`` or ``CELL_DATA``, and implicit grids must be of sane size.
    Returns the declared point / cell counts and array names."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = mm[:1024]
        if not head.startswith(b"# vtk DataFile"):
            raise _fail(path, f"not a legacy VTK file: expected '# vtk DataFile' header, got {head[:20]!r}")
        lines = head.split(b"\n")
        if len(lines) < 4:
            raise _fail(path, "legacy VTK header is truncated (fewer than 4 lines)")
        mver = re.fullmatch(rb"# vtk DataFile Version (\d+)\.(\d+)\s*", lines[0])
        if mver is None:  # VTK guesses a layout from a garbled version (and may crash on it)
            raise _fail(path, f"legacy VTK: first line must be '# vtk DataFile Version X.Y', got {lines[0][:40]!r}")
        version = float(f"{int(mver.group(1))}.{int(mver.group(2))}")
        kind = lines[2].strip().upper()
        if kind not in (b"ASCII", b"BINARY"):
            raise _fail(path, f"legacy VTK: third line must be ASCII or BINARY, got {lines[2][:20]!r}")
        pos = len(lines[0]) + len(lines[1]) + len(lines[2]) + 3
        walk = _LegacyWalk(path, mm, kind == b"BINARY", version, pos)
        dec = Declared()
        try:
            _walk_legacy(walk, dec)
        except _Unknown:
            pass
        if mm[-1:] not in (b"\n", b"\r"):  # VTK ends every file with a newline
            raise _fail(path, f"legacy VTK file does not end with a newline: cut short (last bytes {mm[-20:]!r})")
    return dec


def _walk_legacy(w: _LegacyWalk, dec: Declared) -> None:
    path = w.path
    attr, cur, section_names = None, 0, {}
    ncells = None

    def ints(toks, k, what):
        try:
            vals = [int(t) for t in toks[1:1 + k]]
        except ValueError:
            vals = []
        if len(vals) != k or any(v < 0 for v in vals):
            raise _fail(path, f"bad legacy VTK line {' '.join(toks)[:60]!r}: expected {what}")
        return vals

    while True:
        toks = w.line()
        if toks is None:
            break
        key = toks[0].upper()
        if key == "DATASET" or key in ("ORIGIN", "SPACING", "ASPECT_RATIO"):
            continue
        if key == "DIMENSIONS":
            d = ints(toks, 3, "DIMENSIONS nx ny nz")
            n = d[0] * d[1] * d[2]
            if n > _MAX_IMPLICIT_POINTS:
                raise _fail(path, f"declares DIMENSIONS {d[0]} {d[1]} {d[2]} ({n} points); "
                                  f"geoop reads grids of at most {_MAX_IMPLICIT_POINTS} points")
            dec.n_points = dec.n_points or n
        elif key == "POINTS":
            (n,) = ints(toks, 1, "POINTS n type")
            if len(toks) < 3:
                raise _fail(path, "POINTS line has no data type")
            w.take(3 * n, toks[2], f"POINTS {n} {toks[2]}")
            dec.n_points = n
        elif key in ("X_COORDINATES", "Y_COORDINATES", "Z_COORDINATES"):
            (n,) = ints(toks, 1, f"{key} n type")
            w.take(n, toks[2] if len(toks) > 2 else "float", key)
        elif key in ("CELLS", "POLYGONS", "LINES", "VERTICES", "TRIANGLE_STRIPS"):
            n, total = ints(toks, 2, f"{key} n size")
            if w.version >= 5:
                for sub, cnt in (("OFFSETS", n), ("CONNECTIVITY", total)):
                    t2 = w.line()
                    if t2 is None or t2[0].upper() != sub or len(t2) < 2:
                        raise _fail(path, f"{key} {n} {total}: expected an {sub} line, found "
                                          f"{' '.join(t2 or ['end of file'])[:40]!r} (truncated file)")
                    w.take(cnt, t2[1], f"{key} {sub}")
                cells = max(n - 1, 0)
            else:
                w.take(total, "int", f"{key} {n} {total}")
                cells = n
            ncells = (ncells or 0) + cells
        elif key == "CELL_TYPES":
            (n,) = ints(toks, 1, "CELL_TYPES n")
            w.take(n, "int", f"CELL_TYPES {n}")
            if ncells is not None and n != ncells:
                raise _fail(path, f"CELL_TYPES {n} but CELLS declares {ncells} cells")
        elif key in ("POINT_DATA", "CELL_DATA"):
            (cur,) = ints(toks, 1, f"{key} n")
            attr = key
            expect = dec.n_points if key == "POINT_DATA" else ncells
            if expect is not None and cur != expect:
                what = "points" if key == "POINT_DATA" else "cells"
                raise _fail(path, f"{key} {cur}: expected one value per {what[:-1]}, the file declares {expect} {what}")
        elif key in ("SCALARS", "VECTORS", "NORMALS", "TENSORS", "TENSORS6", "TEXTURE_COORDINATES",
                     "COLOR_SCALARS", "GLOBAL_IDS", "PEDIGREE_IDS", "FIELD", "LOOKUP_TABLE"):
            if key == "LOOKUP_TABLE":  # a colour table: LOOKUP_TABLE name size, size RGBA rows
                (n,) = ints(toks[1:], 1, "LOOKUP_TABLE name size")
                w.take(4 * n, "unsigned_char" if w.binary else "float", "LOOKUP_TABLE")
                continue
            if attr is None and key != "FIELD":
                raise _fail(path, f"{key} before any POINT_DATA / CELL_DATA line")
            if len(toks) < 2:
                raise _fail(path, f"{key} line has no array name")
            name = toks[1]
            if key == "FIELD":
                (narr,) = ints(toks[1:], 1, "FIELD name n_arrays")
                for _ in range(narr):
                    a = w.line()
                    while a is not None and a[0].upper() == "METADATA":
                        _skip_metadata(w)
                        a = w.line()
                    if a is None or len(a) < 4:
                        raise _fail(path, f"FIELD {name}: expected {narr} arrays 'name ncomp ntuples type', "
                                          f"found {' '.join(a or ['end of file'])[:40]!r} (truncated file)")
                    ncomp, ntup = ints(a, 2, "array line 'name ncomp ntuples type'")
                    if a[3].lower() in ("string", "utf8_string", "variant"):
                        raise _Unknown(a[3])
                    if attr is not None:  # field data of the whole dataset: any length
                        _record(path, dec, attr, section_names, a[0], ncomp, ntup, cur)
                    w.take(ncomp * ntup, a[3], f"FIELD array {a[0]!r}")
                continue
            typ = toks[2] if len(toks) > 2 else "float"
            if key == "SCALARS":
                ncomp = int(toks[3]) if len(toks) > 3 and toks[3].isdigit() else 1
                save = w.pos
                t2 = w.line()
                if t2 is None or t2[0].upper() != "LOOKUP_TABLE":
                    w.pos = save
            elif key == "COLOR_SCALARS":
                ncomp = int(toks[2]) if len(toks) > 2 and toks[2].isdigit() else 4
                typ = "unsigned_char" if w.binary else "float"
            elif key == "TEXTURE_COORDINATES":
                ncomp = int(toks[2]) if len(toks) > 2 and toks[2].isdigit() else 2
                typ = toks[3] if len(toks) > 3 else "float"
            elif key in ("GLOBAL_IDS", "PEDIGREE_IDS"):
                ncomp = 1
            else:
                ncomp = {"VECTORS": 3, "NORMALS": 3, "TENSORS": 9, "TENSORS6": 6}[key]
            if typ.lower() in ("string", "utf8_string", "variant"):
                raise _Unknown(typ)
            _record(path, dec, attr, section_names, name, ncomp, cur, cur)
            w.take(cur * ncomp, typ, f"{attr} {key} {name!r}")
        elif key == "METADATA":
            _skip_metadata(w)
        else:
            raise _fail(path, f"unknown legacy VTK keyword {toks[0][:30]!r} (corrupt or truncated file)")
    dec.n_cells = ncells


def _record(path, dec, attr, section_names, name, ncomp, ntuples, cur) -> None:
    from urllib.parse import unquote

    name = unquote(name)  # legacy VTK writes a space in a name as %20
    names = section_names.setdefault(attr, [])
    names.append(name)
    _dup_check(path, names, attr)
    if ntuples != cur:
        raise _fail(path, f"array {name!r} in {attr} {cur}: expected {cur} tuples, the file declares {ntuples}")
    (dec.point_arrays if attr == "POINT_DATA" else dec.cell_arrays)[name] = ncomp


def _skip_metadata(w: _LegacyWalk) -> None:
    """METADATA blocks end at an empty line."""
    mm, n = w.mm, len(w.mm)
    while w.pos < n:
        e = mm.find(b"\n", w.pos)
        e = n if e < 0 else e
        line = mm[w.pos:e].strip()
        w.pos = e + 1
        if not line:
            return
    raise _fail(w.path, "METADATA block not closed by an empty line before the end of the file (truncated file)")


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
            tail = mm[max(0, len(mm) - 4096):].lower()
            if tail.rfind(b"endsolid") < tail.rfind(b"endfacet"):  # cut at a facet boundary
                raise _fail(path, "ascii STL ends without 'endsolid' after its last facet (truncated file)")
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
    names = hdr.get("FIELDS", [])
    _dup_check(path, names, "the PCD FIELDS line")
    if not {"x", "y", "z"} <= set(names):
        raise _fail(path, f"PCD FIELDS {names}: expected x, y and z")
    normals = [n for n in ("normal_x", "normal_y", "normal_z") if n in names]
    if normals and len(normals) != 3:  # open3d crashes (SIGSEGV) reading a partial normal
        raise _fail(path, f"PCD FIELDS {names}: normal_x, normal_y, normal_z must come together, found {normals}")
    others = [n for n in names if n not in ("x", "y", "z", "normal_x", "normal_y", "normal_z", "rgb", "rgba")]
    if others:
        import warnings

        warnings.warn(f"{path}: PCD fields {others} are not read (geoop reads x y z, normal_x/y/z, rgb/rgba)",
                      stacklevel=4)
    if len(sizes) != len(hdr.get("FIELDS", sizes)) or len(counts) != len(sizes):
        raise _fail(path, f"PCD header: FIELDS has {len(hdr.get('FIELDS', []))} names but SIZE {len(sizes)} "
                          f"and COUNT {len(counts)} entries; expected one each per field")
    if points <= 0 or width * height != points:
        raise _fail(path, f"PCD header: POINTS={points} must be positive and equal WIDTH*HEIGHT={width}*{height}")
    body = os.path.getsize(path) - offset
    row = sum(s * c for s, c in zip(sizes, counts))
    if data == "ascii":
        have = _count_lines(path, offset, nonblank=True)
        if have != points:  # open3d pads missing rows and ignores extra ones
            raise _fail(path, f"PCD header declares POINTS={points} but the file holds {have} data lines")
    elif data == "binary":
        if points * row > body:
            raise _fail(path, f"PCD header declares POINTS={points} ({points * row} bytes) but only {body} "
                              "bytes of data follow the header")
        extra = _head(path, offset + points * row + 65)[offset + points * row:]
        if extra.strip():  # open3d ignores bytes beyond the declared points
            raise _fail(path, f"PCD header declares POINTS={points} ({points * row} bytes) but {body} bytes of "
                              "data follow the header")
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
    """OFF: the counts line ``nv nf ne`` must match the number of vertex and face lines
    (trimesh reads a vertex line beyond the count as a face, and ignores lines beyond the
    faces)."""
    lines = [ln for ln in _head(path).splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")]
    if not lines or not lines[0].strip().upper().endswith(b"OFF"):
        raise _fail(path, "not an OFF file: first line must be 'OFF'")
    tok = lines[0].split()[1:] or (lines[1].split() if len(lines) > 1 else [])
    try:
        nv, nf = int(tok[0]), int(tok[1])
    except (IndexError, ValueError):
        raise _fail(path, "OFF counts line missing or garbled: expected 'NV NF NE'") from None
    header = 1 if lines[0].split()[1:] else 2
    have = _count_lines(path, 0, nonblank=True, comment=b"#") - header
    if nv <= 0 or nf < 0 or nv + nf != have:
        raise _fail(path, f"OFF header declares {nv} vertices and {nf} faces ({nv + nf} lines) but the file holds "
                          f"{have} data lines")
    _check_final_newline(path, "OFF")
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
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        _check_msh_counts(path, mm, size)
        for sec in (b"NodeData", b"ElementData", b"ElementNodeData"):
            # $NodeData / 1 string tag / "name": meshio keeps the last of two of one name
            names = [m.group(1).decode("latin-1") for m in
                     re.finditer(rb"\n\$" + sec + rb"\s*\n\s*\d+\s*\n\s*\"([^\"\n]*)\"", mm)]
            _dup_check(path, names, f"${sec.decode()} sections")


def _check_msh_counts(path: str, mm, size: int) -> None:
    """gmsh 2.x: the counts of ``$Nodes`` / ``$Elements`` and the tag counts and entry
    count of data sections must fit in the file (meshio loops on a count of 10^9 tags)."""
    for m in re.finditer(rb"(?:^|\n)\$(Nodes|Elements)[ \t\r]*\n[ \t]*(\d+)[ \t\r]*\n", mm):
        if int(m.group(2)) > size:
            raise _fail(path, f"${m.group(1).decode()} declares {int(m.group(2))} entries but the file has {size} bytes")
    for m in re.finditer(rb"\n\$(NodeData|ElementData|ElementNodeData)[ \t\r]*\n", mm):
        sec, pos = m.group(1).decode(), m.end()

        def line():
            nonlocal pos
            e = mm.find(b"\n", pos)
            e = len(mm) if e < 0 else e
            out, pos = mm[pos:e].strip(), e + 1
            return out

        ints = []
        for kind in ("string", "real", "integer"):
            raw = line()
            if not raw.isdigit() or int(raw) > 64:
                raise _fail(path, f"${sec}: the number of {kind} tags must be a small integer, found {raw[:20]!r}")
            vals = [line() for _ in range(int(raw))]
            if kind == "integer":
                ints = vals
        if len(ints) >= 3 and ints[2].lstrip(b"-").isdigit() and int(ints[2]) > size:
            raise _fail(path, f"${sec} declares {int(ints[2])} entries but the file has {size} bytes")


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


def check_header(path: str, ext: Optional[str] = None) -> Optional[Declared]:
    """Run the header check for the file's extension. Returns what the header declares
    (:class:`Declared`: the point count when the format states it, PLY, VTU/VTP, legacy
    VTK, PCD, PTS, OFF; cell count and data array names for VTK) or None."""
    ext = (ext or os.path.splitext(path)[1]).lower()
    fn = HEADER_CHECKS.get(ext)
    out = fn(path) if fn is not None else None
    return out if out is None or isinstance(out, Declared) else Declared(n_points=out)
