"""Small real models and data for the training tests (not mocks: they train)."""
from __future__ import annotations

import torch
from torch import nn

from geoop.batch import GeometryBatch, Sample
from geoop.geometry.geometry import Geometry


class PointNetField(nn.Module):
    """A tiny operator: per-sample mean-pooled encoding of the input points (and input
    fields), broadcast to the query points and decoded by an MLP with dropout.

    Shapes: batch.points (ΣN, d), x (ΣN, C_in) or None -> (ΣQ, out_channels)
    """

    def __init__(self, in_channels=0, out_channels=1, dim=2, hidden=16, dropout=0.1):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, dim=dim, hidden=hidden, dropout=dropout)
        self.enc = nn.Sequential(nn.Linear(dim + in_channels, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.dec = nn.Sequential(nn.Linear(hidden + dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_channels))

    def forward(self, batch: GeometryBatch, x=None):
        h = batch.points if x is None else torch.cat([batch.points, x], 1)
        h = self.enc(h)
        pooled = torch.zeros(batch.num_samples, h.shape[1], dtype=h.dtype).index_add_(0, batch.batch, h)
        pooled = pooled / torch.bincount(batch.batch, minlength=batch.num_samples)[:, None].to(h)
        return self.dec(torch.cat([pooled[batch.query_batch], batch.queries], 1))


def make_samples(n=8, seed=0, dim=2, sizes=(20, 40)):
    """Point clouds of different sizes with a field ``a`` (input) and ``p`` (target) that
    depends on a per-sample amplitude, queries at half the points."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        m = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
        pts = torch.rand(m, dim, generator=g)
        amp = 1.0 + float(torch.rand(1, generator=g))
        a = torch.full((m, 1), amp)
        p = amp * (pts[:, :1] - 0.5) + 0.5 * pts[:, 1:2] + 1.0
        geo = Geometry(pts, fields={"a": a, "p": p}, weights=torch.full((m,), 1.0 / m), name=f"case{i}")
        q = Geometry(pts[: m // 2], fields={"p": p[: m // 2]}, weights=torch.full((m // 2,), 2.0 / m))
        out.append(Sample(geo, q, meta={"case": i}))
    return out
