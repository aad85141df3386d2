"""Drop-in ``nn.Module`` layers built on ``unified_attention``.

* ``RelativeAttentionBias``: the two small bias tables (w_pos, w_time); one instance can be
  shared by every attention layer of a model (SPEC section 3).
* ``UnifiedSelfAttention``: q/k/v/o projections (no biases) + the op, on jagged tokens.
  ``ReferenceUnifiedAttention`` and ``FusedUnifiedAttention`` pin the backend;
  ``swap_to_fused`` / ``swap_to_reference`` exchange them inside an existing model in place,
  keeping the very same parameter objects (optimizer state stays valid).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ._nvtx import nvtx_range
from .ops.unified_attention import AttentionPattern, new_call, run


class RelativeAttentionBias(nn.Module):
    """Learned relative position bias ``w_pos`` [2P-1] and time-bucket bias ``w_time`` [nb+1]."""

    def __init__(self, num_positions: int, num_buckets: int = 128, use_time: bool = True,
                 init_std: float = 0.02):
        super().__init__()
        if num_positions < 1:
            raise ValueError(f"num_positions: must be >= 1, got {num_positions}")
        self.num_positions = num_positions
        self.num_buckets = num_buckets
        self.w_pos = nn.Parameter(torch.randn(2 * num_positions - 1) * init_std)
        self.w_time = nn.Parameter(torch.randn(num_buckets + 1) * init_std) if use_time else None

    def extra_repr(self) -> str:
        return f"num_positions={self.num_positions}, num_buckets={self.num_buckets}"


class UnifiedSelfAttention(nn.Module):
    """Multi-head self-attention over jagged sequences with relative bias and target isolation.

    Input ``x``: ``[T, d_model]`` (B sequences end to end, see ``kernels.unified_attention``);
    output ``[T, d_model]`` in x's dtype. ``rab`` may be shared between layers.
    """

    default_backend = "auto"

    def __init__(self, d_model: int, num_heads: int, rab: Optional[RelativeAttentionBias] = None, *,
                 num_positions: int = 256, num_buckets: int = 128, window: Optional[int] = None,
                 dilation: Optional[int] = None, num_global: int = 0, pattern: Optional[AttentionPattern] = None,
                 backend: Optional[str] = None):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"num_heads: {num_heads} must divide d_model = {d_model}")
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.rab = rab if rab is not None else RelativeAttentionBias(num_positions, num_buckets)
        if pattern is not None and (window is not None or dilation is not None or num_global):
            raise ValueError("pattern: give either pattern or window/dilation/num_global, not both")
        self.pattern = pattern if pattern is not None else AttentionPattern(window, dilation, num_global)
        self.backend = backend or self.default_backend

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.num_heads}, pattern={self.pattern.name}, backend={self.backend!r}"

    def project(self, x: torch.Tensor):
        """q, k, v as ``[T, H, dh]``."""
        shape = (x.shape[0], self.num_heads, self.head_dim)
        return self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def attend(self, q, k, v, offsets, timestamps=None, num_targets=None) -> torch.Tensor:
        rab = self.rab
        call = new_call(q, k, v, offsets, timestamps, num_targets, rab.w_pos, rab.w_time, num_buckets=rab.num_buckets)
        return run(call.replace(pattern=self.pattern), self.backend)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
                num_targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        with nvtx_range(f"{type(self).__name__}"):
            q, k, v = self.project(x)
            out = self.attend(q, k, v, offsets, timestamps, num_targets)
            return self.o_proj(out.reshape(x.shape[0], self.d_model))

    @classmethod
    def from_module(cls, other: "UnifiedSelfAttention") -> "UnifiedSelfAttention":
        """A layer of class ``cls`` that shares every parameter and submodule with ``other``."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name, value in vars(other).items():
            if name in ("_parameters", "_buffers", "_modules"):
                getattr(new, name).update(value)
            elif not name.startswith("_"):
                setattr(new, name, value)
        new.training = other.training
        new.backend = cls.default_backend
        return new


class ReferenceUnifiedAttention(UnifiedSelfAttention):
    """``UnifiedSelfAttention`` pinned to the pure-PyTorch reference."""

    default_backend = "reference"


class FusedUnifiedAttention(UnifiedSelfAttention):
    """``UnifiedSelfAttention`` pinned to the Triton kernels (the interpreter on CPU tensors)."""

    default_backend = "triton"


def _swap(model: nn.Module, source: type, target: type) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, UnifiedSelfAttention) and type(child) is not target and isinstance(child, source):
                parent._modules[name] = target.from_module(child)
                count += 1
    return count


def swap_to_fused(model: nn.Module) -> int:
    """Replace every (non-fused) ``UnifiedSelfAttention`` in ``model`` by a fused one, in place.

    Parameters are shared, not copied. Returns the number of layers swapped.
    """
    return _swap(model, UnifiedSelfAttention, FusedUnifiedAttention)


def swap_to_reference(model: nn.Module) -> int:
    """Replace every (non-reference) ``UnifiedSelfAttention`` by a reference one, in place."""
    return _swap(model, UnifiedSelfAttention, ReferenceUnifiedAttention)
