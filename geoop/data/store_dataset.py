"""The dataset over a packed store (:mod:`geoop.data.store`): :class:`MeshFolderDataset`'s
items, split and normalisation, read lazily.

``MeshFolderDataset(STORE, ...)`` returns a :class:`PackedCaseDataset` when ``STORE`` is a
packed store, so every caller that takes a folder (``geoop train``, ``geoop evaluate``,
``geoop data check``) takes the store. What differs from the folder dataset:

* **building reads metadata only**: the cases, their point counts, dimensions, field
  widths, bounds and per-case statistics come from the case attributes; no array chunk is
  decoded (:attr:`CaseStore.chunks_read` stays 0);
* **normalisation statistics** come from the stored per-case moments
  (:meth:`FieldNormalizer.update_moments`: count, mean and centred sum of squares of every
  channel, combined exactly, not re-read) and the dataset transform from the stored bounds;
* **an item with a subsample** reads only the chunks holding its rows
  (:meth:`CaseStore.sample_rows`: random chunks, then random rows in them, from a generator
  seeded with ``(seed, epoch, index, stream)``); its quadrature weights are the whole case's
  weights of those rows divided by their inclusion probability; neighbourhoods and latent
  features (``neighbors=``) are computed on the item's points, not cached;
* **an item without a subsample** is the whole case, in file row order, as the folder
  dataset gives it (points and fields bit for bit; weights are the packed weights mapped
  with the transform's Jacobian); neighbourhoods are cached as the folder dataset caches them
  (the key uses the sha256 of the source files, stored when packing);
* ``subsample["near_input"]`` (every query point of a case), ``mirror`` augmentation (made
  when a file is read) and query sets (several query files per case) are refused;
* the symmetry planes are those packed (``symmetry=`` must match the packing's); the
  coordinate rules (``"dataset"``, ``"case"``, ``"body"``...) see each case through the two
  corners of its stored bounds and its plane, which is all they read of a case.

The store's settings must match the dataset's: a requested field the case was not packed
with, or another ``crop`` / ``input_file`` / ``query_file``, is a :class:`StoreError` naming
the case or the setting.

Shapes (one item): as :class:`MeshFolderDataset`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..batch import Sample
from ..errors import DatasetError, GeoopError
from ..geometry.geometry import Geometry, NormalizeTransform, weight_jacobian
from .cases import CaseFiles, CaseIndex
from .folder import CaseReader, CaseShape, MeshFolderDataset, _SkippedCase
from .normalize import FieldNormalizer
from .store import CaseStore, StoreError

__all__ = ["PackedCaseDataset", "StoreCaseReader"]


class StoreCaseReader(CaseReader):
    """:class:`~geoop.data.folder.CaseReader` of a packed store: a case's description from its
    metadata (no chunk decoded), whole cases (:meth:`load`) or the rows of a subsample
    (:meth:`read_part`) from its chunks."""

    strict_errors = True  # a store's StoreError is raised as it is

    def __init__(self, store: CaseStore, index: CaseIndex, inputs, targets, *, memory_cache_mb: float = 1024,
                 settings=None):
        super().__init__(index, None, memory_cache_mb=memory_cache_mb, settings=settings)
        self.store = store
        self.inputs, self.targets = list(inputs), list(targets)

    def load(self, case: str) -> tuple[Geometry, Geometry]:
        return self.store.read_case(case, self.inputs, self.targets)

    def describe(self, case: str) -> CaseShape:
        """From the case's attributes; the fields asked must be packed (else :class:`StoreError`)."""
        info = self.store.info(case)
        self.store.check_fields(case, self.inputs, self.targets)
        r = info.roles
        self.cols[case] = int(info.attrs["cols"])
        widths = {n: int(r["input"]["fields"][n][1]) for n in self.inputs}
        widths.update({n: int(r["query"]["fields"][n][1]) for n in self.targets})
        return CaseShape(self.cols[case], 2 if (r["input"]["is_2d"] and r["query"]["is_2d"]) else 3, widths)

    def failure(self, case: str, err: Exception) -> tuple[str, str]:
        path = str(self.store.info(case).path)
        return path, str(err).replace(f"{path}: ", "", 1)

    def hashes(self, case: str) -> list:
        info = self.store.info(case)
        # the source files' digests (the folder dataset's key) and whether whole cases carry cells
        return list(info.attrs["sha256"]) + [f"packed cells={bool(info.roles['input']['cells'])}"]

    def bounds(self, case: str, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) corner (3,) of a role's stored bounds."""
        lo, hi = self.store.info(case).roles[role]["bounds"]
        return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)

    def corners(self, case: str) -> tuple[Geometry, Geometry]:
        """(input, query) geometries of the two corners of each bounding box, with the packed
        symmetry planes: what the coordinate rules read of a case (bounds, planes)."""
        info = self.store.info(case)
        return tuple(Geometry(torch.stack(self.bounds(case, r)), validate=False, symmetry=info.symmetry(r))
                     for r in ("input", "query"))

    def read_part(self, case: str, role: str, k, generator: torch.Generator, T: NormalizeTransform):
        """(raw 3-D geometry of ``k`` rows of ``role`` (None: every row), their file rows or None
        when every row is kept): reads only the chunks holding the kept rows."""
        info = self.store.info(case)
        n = info.n(role)
        names = self.inputs if role == "input" else self.targets
        rows = pi = None
        if k is not None and k < n:
            rows, pi = self.store.sample_rows(case, role, k, generator)
        d = self.store.read_rows(case, role, rows, names)
        order = d["order"].astype(np.int64)
        perm = np.argsort(order, kind="stable")  # back to file row order

        def take(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a[perm]))

        pts = take(d["points"])
        r = info.roles[info.geometry_role(role)]
        cells = self.store.read_cells(case, role) if rows is None and r["cells"] else {}
        w = d["weights"].astype(np.float64) if pi is None else d["weights"].astype(np.float64) / pi
        if not cells:  # rows without cells: map their weights with the whole case's Jacobian here
            w = w / weight_jacobian(T.scale.to(pts.dtype), 3, int(r["topological_dim"]), bool(r["is_2d"]))
        g = Geometry(pts, cells=cells, normals=take(d["normals"]), weights=torch.from_numpy(w[perm]).to(pts.dtype),
                     fields={nm: take(d[nm]) for nm in names}, name=case, source=info.files[role], validate=False,
                     symmetry=info.symmetry(role))
        return g, (None if rows is None else torch.from_numpy(order[perm]))


class PackedCaseDataset(MeshFolderDataset):
    """:class:`MeshFolderDataset` over a packed store, read lazily (see the module docstring).
    Takes the same parameters; ``root`` is the store. ``store`` is its :class:`CaseStore`,
    ``reader`` a :class:`StoreCaseReader`."""

    def _configure(self, a: dict) -> dict:
        #: the packed store (metadata read now, rows on demand)
        self.store = CaseStore(a["root"])
        return super()._configure(a)

    # ------------------------------------------------------------------ building (metadata only)
    def _index(self, input_file, query_file, manifest, test_fraction, val_fraction) -> CaseIndex:
        settings = self.store.meta.get("settings", {})
        for key, asked in (("input_file", input_file), ("query_file", query_file)):
            if asked is not None and asked != settings.get(key):
                raise StoreError(f"{self.root}: the store was packed with {key}={settings.get(key)!r}, the dataset asks "
                                 f"{key}={asked!r}; pack the folder again with the dataset's patterns")
        if self.preprocessor.crop != settings.get("crop"):
            raise StoreError(f"{self.root}: the store was packed with crop={settings.get('crop')!r}, the dataset asks "
                             f"crop={self.preprocessor.crop!r}; pack the folder again with the dataset's crop")
        if self.preprocessor.symmetry != settings.get("symmetry"):
            raise StoreError(f"{self.root}: the store was packed with symmetry={settings.get('symmetry')!r}, the dataset asks "
                             f"symmetry={self.preprocessor.symmetry!r}; pack the folder again with the dataset's symmetry")
        if self.query_sets:
            raise StoreError(f"{self.root}: a packed store holds one query geometry per case; query sets "
                             f"{[q['name'] for q in self.query_sets]} need the case folder")
        if self.mirror is not None:
            raise StoreError(f"{self.root}: mirror augmentation is not available on a packed store (the mirrored copies "
                             "are made when a file is read); use the folder, or drop mirror")
        if self.subsample.get("near_input") is not None:
            raise StoreError(f"{self.root}: subsample['near_input'] needs every query point of a case; a packed store is "
                             "read a few rows at a time: use the folder, or drop near_input")
        found = {}
        for name, info in self.store.cases.items():
            found[name] = CaseFiles(name, Path(info.files["input"]), Path(info.files["query"]))
        if not found:
            raise DatasetError(f"MeshFolderDataset: no case found in the store {self.root}")
        return CaseIndex.from_found(self.root, found, [], manifest=manifest, seed=self.seed, test_fraction=test_fraction,
                                    val_fraction=val_fraction, report=self._bad if self.on_error == "raise" else None)

    def _reader(self, index: CaseIndex, memory_cache_mb: float, settings: dict) -> StoreCaseReader:
        return StoreCaseReader(self.store, index, self.inputs, self.targets, memory_cache_mb=memory_cache_mb,
                               settings=settings)

    def _check_reader(self, reader, opening: dict) -> StoreCaseReader:
        reader = super()._check_reader(reader, opening)
        self.store = reader.store  # one CaseStore: its counters count every read of the datasets sharing it
        return reader

    def _fit_statistics(self, fit_fields: bool, fit_geom: bool) -> None:
        # the coordinate rule sees each case through its bounding corners (and symmetry plane)
        self.preprocessor.fit((self.reader.corners(c) for c in self.train_cases), fields=False, geometry=fit_geom)
        if fit_fields:
            norms = self.preprocessor.normalizers
            norms.fields = {n: FieldNormalizer(name=n) for n in dict.fromkeys(self.inputs + self.targets)}
            for case in self.train_cases:
                roles = self.store.info(case).roles
                for role, names in (("input", self.inputs), ("query", self.targets)):
                    for n in names:
                        st = roles[role]["stats"][n]
                        norms.fields[n].update_moments(st["count"], st["mean"], st["m2"])

    # ------------------------------------------------------------------ reading
    def _transform(self, case: str) -> NormalizeTransform:
        """The case's coordinate transform from its stored bounds (no rows read)."""
        return self.preprocessor.transform_for(*self.reader.corners(case))

    def _prepared(self, case: str):
        hit = self._memory.get(("prepared", self._token, case))
        if hit is not None:
            return hit
        T = self._transform(case)
        try:
            gin, _ = self.reader.read_part(case, "input", None, None, T)
            gq, _ = self.reader.read_part(case, "query", None, None, T)
        except GeoopError as e:
            self._run_failure(case, e)
        sample, T = self.preprocessor.apply(gin, gq, meta={"case": case}, transform=T)
        if self.neighbors is not None:
            sample = self._with_neighbors(case, sample, T)
        out = (sample, T)
        self._memory.put(("prepared", self._token, case), out)
        return out

    def _run_failure(self, case: str, err: Exception):
        if self.on_error == "skip":
            self._skip_during_run(case, err)
            raise _SkippedCase(case) from None
        raise err if isinstance(err, StoreError) else DatasetError(f"case {case!r}: {err}") from None

    def _subsampled(self, j: int, case: str):
        """(transform, input part, its rows, query part, its rows) of item ``j``'s subsample."""
        T = self._transform(case)
        n_in, n_q = self.store.info(case).n("input"), self.store.info(case).n("query")
        k_in = None if self.subsample["points"] is None else self._count(self.subsample["points"], n_in)
        k_q = None if self.subsample["queries"] is None else self._count(self.subsample["queries"], n_q)
        try:
            gin, pidx = self.reader.read_part(case, "input", k_in, self._generator(j, 0), T)
            gq, qidx = self.reader.read_part(case, "query", k_q, self._generator(j, 1), T)
        except GeoopError as e:
            self._run_failure(case, e)
        return T, gin, pidx, gq, qidx

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> Sample:
        if self.subsample["points"] is None and self.subsample["queries"] is None:
            return super().__getitem__(index)  # whole cases: the folder dataset's path (cached)
        index, case, (T, gin, pidx, gq, qidx) = self._first_readable(index, self._subsampled)
        sample, T = self.preprocessor.apply(gin, gq, meta={"case": case}, transform=T)
        if self.neighbors is not None:
            self.neighbor_computations += 1
            out = self.neighbors(sample)
            if not isinstance(out, Sample):
                raise DatasetError(f"MeshFolderDataset: neighbors(sample) must return a Sample, got {type(out).__name__}")
            sample = out
        s = Sample(sample.geometry, sample.queries, latent_features=sample.latent_features,
                   neighbors_in=sample.neighbors_in, neighbors_out=sample.neighbors_out,
                   meta=self._meta(case, index, T, pidx, qidx))
        return self.transform(s) if self.transform is not None else s

    # ------------------------------------------------------------------ checks without whole reads
    def queries_outside(self, domain) -> tuple[int, int]:
        """(query points outside the box ``domain`` [[lo...], [hi...]] in prepared
        coordinates, all query points): cases whose stored bounds map inside count without a
        read; the others are scanned one chunk of points at a time."""
        dom = torch.as_tensor(domain, dtype=torch.float64)
        k = dom.shape[1]
        out = total = 0
        for case in self.cases:
            info = self.store.info(case)
            T = self._transform(case)
            n = info.n("query")
            total += n
            lo, hi = (T.apply(b[None].double())[0, :k] for b in self.reader.bounds(case, "query"))
            if bool(((lo >= dom[0] - 1e-9) & (hi <= dom[1] + 1e-9)).all()):
                continue
            for j in range(-(-n // self.store.chunk_rows(case, "query"))):
                q = T.apply(torch.from_numpy(self.store.read_points(case, "query", j)).double())[:, :k]
                out += int((~((q >= dom[0] - 1e-9) & (q <= dom[1] + 1e-9)).all(1)).sum())
        return out, total

    def __repr__(self) -> str:
        return (f"PackedCaseDataset({str(self.root)!r}, split={self.split!r}, cases={len(self)}, "
                f"inputs={self.inputs}, targets={self.targets}, skipped={len(self.skipped)})")
