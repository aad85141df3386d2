"""NVTX ranges around kernel launches and model blocks; a no-op without CUDA or nvtx."""
from __future__ import annotations

import contextlib

import torch

try:  # the nvtx package is a base dependency, but keep kernels importable without it
    import nvtx as _nvtx
except Exception:  # pragma: no cover
    _nvtx = None


def _enabled() -> bool:
    return _nvtx is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


@contextlib.contextmanager
def nvtx_range(name: str):
    """``with nvtx_range("suan/attn_fwd"): ...`` shows as a named range in Nsight."""
    if _enabled():
        with _nvtx.annotate(name, domain="suan"):
            yield
    else:
        yield
