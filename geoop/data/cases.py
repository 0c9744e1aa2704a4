"""Case discovery and splits: which cases a folder holds, which files each case reads, and
which split each case belongs to. Nothing here opens a mesh file.

* :func:`discover_cases` / :func:`discover_set_cases` group the files under a folder into
  cases (:class:`CaseFiles`) by ``{case}`` patterns (or a callable, or one file per case);
* :func:`resolve_split` assigns each case to ``"train"`` / ``"val"`` / ``"test"``, from a
  manifest (``split.json``, a ``split`` in ``manifest.json``; a case listed in two splits is
  an error) or from a seeded shuffle;
* :class:`CaseIndex` is both, done once: the cases of a folder (or of a packed store) with
  their split and the problems found (a case lacking a file, a manifest name without files),
  shared by every dataset of a run.

Shapes: none (names and paths only).
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .. import _strict_json as strict_json
from ..errors import DatasetError
from ..geometry.openfoam import REGION_SEP, is_openfoam_case, split_region

__all__ = ["CaseFiles", "CaseIndex", "discover_cases", "discover_set_cases", "resolve_split", "load_manifest",
           "natural_key", "MESH_EXTENSIONS"]

log = logging.getLogger(__name__)

#: extensions considered by the default one-file-per-case discovery
MESH_EXTENSIONS = (".vtu", ".vtp", ".vtk", ".ply", ".stl", ".obj", ".off", ".msh", ".xdmf", ".xmf", ".npz")

Pattern = Union[str, Callable[[str], Optional[str]], None]


def natural_key(s: str) -> list:
    """Sort key: ``"case_10"`` after ``"case_9"`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``query`` equals ``input`` when targets live on the input file."""

    name: str
    input: Path
    query: Path
    #: the files of the query sets, in set order (empty: one query file)
    sets: tuple = ()

    @property
    def same_file(self) -> bool:
        return self.input == self.query and all(p == self.input for p in self.sets)


def _pattern_regex(pattern: str) -> re.Pattern:
    """Glob pattern with one ``{case}`` placeholder -> regex over the relative posix path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("{case}", i):
            out.append(r"(?P<case>[^/]+)")
            i += 6
        elif pattern.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def _match(root: Path, pattern: Pattern, role: str) -> dict[str, list[Path]]:
    """Files of one role grouped by case name."""
    found: dict[str, list[Path]] = {}
    if callable(pattern):
        for p in sorted(root.rglob("*")):
            if p.is_file():
                case = pattern(p.relative_to(root).as_posix())
                if case:
                    found.setdefault(str(case), []).append(p)
        return found
    pat, region = split_region(str(pattern))  # "{case}::wall*": patches of OpenFOAM cases
    if "{case}" not in pat:
        if "*" not in pat:
            raise DatasetError(
                f"MeshFolderDataset: {role}_file pattern {pat!r} has neither a '{{case}}' placeholder nor a '*' "
                "to take the case name from (e.g. '{case}_surface.vtp' or '*_surface.vtp')"
            )
        pat = pat.replace("*", "{case}", 1)  # the first '*' names the case
    if pat.count("{case}") != 1:
        raise DatasetError(f"MeshFolderDataset: {role}_file pattern {pattern!r} must contain '{{case}}' once")
    rx = _pattern_regex(pat)
    for p in sorted(root.glob(pat.replace("{case}", "*"))):
        if not (p.is_file() or is_openfoam_case(p)):  # a folder matches when it is an OpenFOAM case
            continue
        m = rx.match(p.relative_to(root).as_posix())
        if m:
            found.setdefault(m.group("case"), []).append(p if region is None else Path(f"{p}{REGION_SEP}{region}"))
    return found


def discover_cases(root: Union[str, Path], input_file: Pattern = None, query_file: Pattern = None) -> tuple[dict[str, CaseFiles], list[tuple[str, str, str]]]:
    """Group the files under ``root`` into cases.

    input_file / query_file : how to find a case's input / query file:

        * a glob pattern relative to ``root`` with a ``{case}`` placeholder, e.g.
          ``"{case}_surface.vtp"``, ``"{case}/VTK/*/boundary/wall.vtp"`` (OpenFOAM
          ``foamToVTK``), ``"exports/{case}.cgns"``; without ``{case}`` the first ``*``
          names the case (``"*_surface.vtp"``). A pattern may match OpenFOAM case folders
          (``"{case}"``, ``"runs/{case}"``: the internal mesh at the latest time) and
          name patches after ``::`` (``"{case}::wall*"``: those patches as one surface;
          :mod:`geoop.geometry.openfoam`);
        * a callable ``f(relative_posix_path) -> case name or None``, applied to every file;
        * None: the same file as the other role; both None: every file with a mesh
          extension directly in ``root`` is one case named by its stem.

    When a pattern matches several files of one case (e.g. several time steps
    ``case/VTK/case_100``, ``case_200``), the last one in natural sort order (the latest
    time) is used.

    Returns ``(cases, problems)``: cases by name (natural order) and a list of
    ``(case, file, reason)`` for cases lacking the file of one role.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"MeshFolderDataset: dataset folder {str(root)!r} does not exist or is not a folder")
    if input_file is None and query_file is None:
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS)
        ins = {p.name.split(".")[0]: [p] for p in files}
        qs = ins
        searched = f"files with extensions {list(MESH_EXTENSIONS)} directly in {root}"
    else:
        ins = _match(root, input_file, "input") if input_file is not None else None
        qs = _match(root, query_file, "query") if query_file is not None else None
        ins = qs if ins is None else ins
        qs = ins if qs is None else qs
        searched = " and ".join(
            f"{role}_file={pat if isinstance(pat, str) else getattr(pat, '__name__', 'callable')!r}"
            for role, pat in (("input", input_file), ("query", query_file)) if pat is not None
        ) + f" under {root}"
    if not ins and not qs:
        raise DatasetError(f"MeshFolderDataset: no case found; searched {searched}")

    def pick(paths: list[Path], case: str, role: str) -> Path:
        paths = sorted(paths, key=lambda p: natural_key(p.relative_to(root).as_posix()))
        if len(paths) > 1:
            log.info("case %r: %d %s files match, using the last (%s)", case, len(paths), role, paths[-1])
        return paths[-1]

    cases, problems = {}, []
    for name in sorted(set(ins) | set(qs), key=natural_key):
        if name not in ins:
            problems.append((name, str(pick(qs[name], name, "query")), f"no input file matching {input_file!r}"))
            continue
        if name not in qs:
            problems.append((name, str(pick(ins[name], name, "input")), f"no query file matching {query_file!r}"))
            continue
        cases[name] = CaseFiles(name, pick(ins[name], name, "input"), pick(qs[name], name, "query"))
    return cases, problems


def discover_set_cases(root: Union[str, Path], input_file: Pattern, set_files: Sequence[Pattern]) -> tuple[dict[str, CaseFiles], list[tuple[str, str, str]]]:
    """:func:`discover_cases` for several query sets: the cases that have the input file
    and one file of every set pattern (``CaseFiles.sets`` in set order, ``query`` the first
    set's file); a case lacking one is a problem ``(case, file, reason)``."""
    per = [discover_cases(root, input_file, f) for f in set_files]
    problems = [pr for _, probs in per for pr in probs]
    names = [n for n in per[0][0] if all(n in c for c, _ in per)]
    for c, _ in per:
        for n in c:
            if n not in names and not any(p[0] == n for p in problems):
                missing = [f for f, (cc, _) in zip(set_files, per) if n not in cc]
                problems.append((n, str(c[n].input), f"no query file matching {missing[0]!r}"))
    cases = {n: CaseFiles(n, per[0][0][n].input, per[0][0][n].query, tuple(c[n].query for c, _ in per)) for n in names}
    return cases, problems


# ---------------------------------------------------------------------------- split
def load_manifest(root: Path, manifest) -> Optional[dict]:
    """The split a manifest gives, ``{case: split}``, or None. ``manifest``: None (``root/split.json``,
    else a ``split`` in ``root/manifest.json``), a path, a dict, or False (ignore manifest files)."""
    if manifest is False:
        return None
    if isinstance(manifest, Mapping):
        return dict(manifest)
    if manifest is not None:
        paths = [Path(manifest) if Path(manifest).is_absolute() else root / manifest]
        if not paths[0].exists():
            raise DatasetError(f"MeshFolderDataset: manifest {str(paths[0])!r} does not exist")
    else:
        paths = [root / "split.json", root / "manifest.json"]
    for p in paths:
        if p.exists():
            try:
                data = strict_json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise DatasetError(f"{p}: cannot read the manifest as JSON: {e}") from None
            split = _split_from_manifest(data, p)
            if split is not None:
                return split
            if manifest is not None or p.name == "split.json":
                raise DatasetError(
                    f"{p}: no split found; expected {{'train': [...], 'test': [...]}}, a 'split' key holding "
                    "that or {case: 'train'|'test'}, or case records with a 'split' key"
                )
    return None


def _assign(out: dict, name: str, part: str, where) -> None:
    """``out[name] = part``; a case listed in two splits is a :class:`DatasetError`."""
    if name in out and out[name] != part:
        raise DatasetError(f"{where}: case {name!r} is listed in two splits, {out[name]!r} and {part!r}; "
                           "a case belongs to one split (remove it from one of them)")
    out[name] = part


def _split_from_manifest(data: Any, where) -> Optional[dict]:
    """Normalise the accepted manifest layouts to ``{case: "train"|"test"|other}``; a case in
    two splits is a :class:`DatasetError` naming it and both splits."""
    if isinstance(data, Mapping) and "split" in data:
        data = data["split"]
    out: dict = {}
    if isinstance(data, Mapping) and any(k in data for k in ("train", "val", "test")):
        for part, names in data.items():
            if isinstance(names, (list, tuple)):
                for n in names:
                    _assign(out, str(n), str(part), where)
        return out
    if isinstance(data, Mapping) and data and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    records = data.get("cases") if isinstance(data, Mapping) else data
    if isinstance(records, list) and records and all(isinstance(r, Mapping) for r in records):
        if all("split" in r for r in records):
            for r in records:
                name = next((r[k] for k in ("case", "name", "id") if k in r), None)
                if name is None:
                    raise DatasetError(f"{where}: manifest record {dict(r)} has a 'split' but no 'case'/'name'/'id'")
                _assign(out, str(name), str(r["split"]), where)
            return out
    return None


def resolve_split(cases: Sequence[str], seed: int = 0, test_fraction: float = 0.2,
                  manifest: Optional[Mapping[str, str]] = None, val_fraction: float = 0.0) -> dict[str, str]:
    """``{case: "train"|"val"|"test"}``. From ``manifest`` when given (cases it does not list
    are left out), else a deterministic shuffle of the naturally sorted names with ``seed``:
    ``round(test_fraction * n)`` test cases (at least one when 0 < fraction and n >= 2), then
    ``round(val_fraction * n)`` validation cases (at least one when 0 < fraction) from the rest
    (with a manifest that names no ``"val"`` case: from its training cases)."""
    if manifest is not None:
        out = {c: manifest[c] for c in cases if c in manifest}
        if val_fraction > 0 and "val" not in out.values():  # draw validation cases from the training ones
            train = [c for c in sorted(out, key=natural_key) if out[c] == "train"]
            part = resolve_split(train, seed, 0.0, None, val_fraction)
            out.update({c: "val" for c, v in part.items() if v == "val"})
        return out
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"MeshFolderDataset: test_fraction must be in [0, 1), got {test_fraction}")
    names = sorted(cases, key=natural_key)
    n = len(names)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if not 0.0 <= val_fraction < 1.0 or (val_fraction > 0 and n - n_test < 2):
        raise DatasetError(f"MeshFolderDataset: val_fraction must be in [0, 1) and leave a training case, got "
                           f"{val_fraction} for {n} cases ({n_test} test)")
    n_val = min(max(int(round(val_fraction * n)), 1 if val_fraction > 0 else 0), max(n - n_test - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    test = {names[i] for i in perm[:n_test]}
    val = {names[i] for i in perm[n_test:n_test + n_val]}
    return {c: ("test" if c in test else "val" if c in val else "train") for c in names}


# ---------------------------------------------------------------------------- the index
class CaseIndex:
    """The cases of a folder and the split of each: discovery and split, done once, no mesh
    file opened. Every dataset of a run can share one index.

    Attributes
    ----------
    root : the folder (or store)
    files : ``{case: CaseFiles}`` of the cases that have a split (natural order)
    split_of : ``{case: "train" | "val" | "test" | other}``
    problems : ``[(case, file, reason)]``: cases left out (a file of one role missing, a
        manifest naming cases without files), in the order found
    n_found : how many cases discovery found
    """

    def __init__(self, root, files: Mapping[str, CaseFiles], split_of: Mapping[str, str],
                 problems: Sequence[tuple[str, str, str]] = (), n_found: Optional[int] = None):
        self.root = Path(root)
        self.files = dict(files)
        self.split_of = dict(split_of)
        self.problems = list(problems)
        self.n_found = len(self.files) if n_found is None else int(n_found)

    @classmethod
    def from_folder(cls, root, input_file: Pattern = None, query_file: Pattern = None, *,
                    set_files: Optional[Sequence[Pattern]] = None, manifest=None, seed: int = 0,
                    test_fraction: float = 0.2, val_fraction: float = 0.0,
                    report: Optional[Callable[[str, str, str], None]] = None) -> "CaseIndex":
        """Discover the cases under ``root`` (:func:`discover_cases`, or
        :func:`discover_set_cases` with ``set_files``) and split them
        (:meth:`from_found`). ``report(case, file, reason)`` is called for each problem as it
        is found (e.g. to raise at the first one); problems are kept in ``problems`` too."""
        if set_files:
            found, problems = discover_set_cases(root, input_file, list(set_files))
        else:
            found, problems = discover_cases(root, input_file, query_file)
        return cls.from_found(root, found, problems, manifest=manifest, seed=seed, test_fraction=test_fraction,
                              val_fraction=val_fraction, report=report)

    @classmethod
    def from_found(cls, root, found: Mapping[str, CaseFiles], problems: Sequence[tuple[str, str, str]] = (), *,
                   manifest=None, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0,
                   report: Optional[Callable[[str, str, str], None]] = None) -> "CaseIndex":
        """The split of discovered cases ``found``: the manifest's (:func:`load_manifest`;
        cases it names without files are a problem, cases it does not name are left out with
        a warning) or the seeded one (:func:`resolve_split`)."""
        root = Path(root)
        problems = list(problems)
        report = report or (lambda case, file, reason: None)
        for p in problems:
            report(*p)
        man = load_manifest(root, manifest)
        if man is not None:
            unknown = sorted(set(c for c, part in man.items() if part in ("train", "val", "test")) - set(found), key=natural_key)
            if unknown:
                p = (unknown[0], str(root), f"manifest lists {len(unknown)} case(s) with no files: "
                     f"{unknown[:5]}; cases found: {list(found)[:5]}...")
                problems.append(p)
                report(*p)
            unlisted = sorted(set(found) - set(man), key=natural_key)
            if unlisted:
                warnings.warn(f"MeshFolderDataset: {len(unlisted)} case(s) in {root} are not in the manifest and "
                              f"are left out: {unlisted[:5]}", stacklevel=3)
        split_of = resolve_split(list(found), seed, test_fraction, man, val_fraction)
        return cls(root, {c: found[c] for c in found if c in split_of}, split_of, problems, len(found))

    def cases(self, split: str = "all") -> list[str]:
        """The cases of ``split`` (``"all"``: every case with a split), natural order."""
        return [c for c in self.files if split == "all" or self.split_of[c] == split]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        counts = {s: sum(1 for v in self.split_of.values() if v == s) for s in dict.fromkeys(self.split_of.values())}
        return f"CaseIndex({str(self.root)!r}, {counts}, problems={len(self.problems)})"
