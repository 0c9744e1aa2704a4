"""``segment_csr`` of the benchmark-only torch_scatter stand-in (see ``__init__``)."""
import torch


def segment_csr(src, indptr, out=None, reduce="sum"):
    if reduce not in ("sum", "mean"):
        raise ValueError(f"segment_csr shim: reduce must be 'sum' or 'mean', got {reduce!r}")
    if src.dim() == 3:  # batched, one shared indptr row per batch entry
        return torch.stack([segment_csr(s, p, reduce=reduce) for s, p in zip(src, indptr)])
    offsets = indptr.to(torch.long)
    res = torch.segment_reduce(src, reduce, offsets=offsets, axis=0, unsafe=True, initial=0.0)
    if out is not None:
        out.copy_(res)
        return out
    return res
