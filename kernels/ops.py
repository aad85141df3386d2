"""The public attention op: ``kernels.unified_attention`` (SPEC section 7) and its dispatch."""
from __future__ import annotations

from typing import Optional

import torch

from ._validation import check_metadata, check_values
from .reference import unified_attention_reference


def unified_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: Optional[torch.Tensor] = None,
    num_targets: Optional[torch.Tensor] = None,
    w_pos: Optional[torch.Tensor] = None,
    w_time: Optional[torch.Tensor] = None,
    *,
    num_buckets: int = 128,
    window: Optional[int] = None,
    dilation: Optional[int] = None,
    num_global: int = 0,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Jagged self-attention with relative position/time bias, causal + target-isolation masks.

    Args:
        q, k: ``[T, H, dh]``; v: ``[T, H, dv]``. float16, bfloat16, float32 or float64, one device.
            T is the total token count of B sequences laid end to end.
        offsets: int64 ``[B+1]``; sequence b is rows ``offsets[b]:offsets[b+1]``.
        timestamps: ``[T]`` integer (or float) timestamps; needed for the time bias.
        num_targets: int ``[B]``; the last ``num_targets[b]`` rows of sequence b are targets
            (default: none). Targets sit at position n_b (the behavior count) and see every
            behavior of their sequence and themselves, never another target.
        w_pos: ``[2P-1]`` relative-position bias, indexed by ``clamp(pos_i - pos_j) + P - 1``.
        w_time: ``[num_buckets + 1]`` time bias, indexed by
            ``min(floor(log2(max(|ts_i - ts_j|, 1))), num_buckets)``.
        window, dilation, num_global: optional sparse pattern of behavior rows: behavior i sees
            j <= i with ``i - j < window`` or ``(i - j) % dilation == 0`` or ``j < num_global``.
        scale: score scale, default ``dh ** -0.5``.
        backend: ``"auto"`` (Triton on CUDA tensors, reference elsewhere), ``"triton"`` (on CPU
            tensors it runs the kernels under the Triton interpreter), ``"reference"``.

    Returns:
        ``[T, H, dv]`` in q's dtype. Differentiable in q, k, v, w_pos and w_time.

    Raises:
        ValueError: naming the argument, for shapes, dtypes, devices, offsets, num_targets,
            window or dilation that break the contract.
    """
    check_metadata(q, k, v, offsets, timestamps, num_targets, w_pos, w_time, num_buckets,
                   window, dilation, num_global, scale, backend)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if backend == "auto":
        backend = "triton" if q.is_cuda else "reference"
    if backend == "triton":
        from .triton_ops import unified_attention_triton

        return unified_attention_triton(q, k, v, offsets, timestamps, num_targets, w_pos, w_time,
                                        num_buckets, window, dilation, num_global, float(scale))
    lengths, nts = check_values(offsets, num_targets, q.shape[0])
    return unified_attention_reference(q, k, v, offsets, timestamps, num_targets, w_pos, w_time,
                                       num_buckets, window, dilation, num_global, float(scale),
                                       lengths, nts)
