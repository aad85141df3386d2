"""The relative attention bias and the allowed pairs in tensor form (SPEC section 7).

One home for what every PyTorch-side implementation of the op needs: the time bucket, the
position index, the table look-ups (with a fast backward) and the element-wise rules
``pair_allowed`` / ``pair_bias`` on local indices. The reference builds its pieces from them; the
SDPA and FlexAttention baselines of the benchmarks and the HSTU-style model use them through
``padded_mask_and_bias`` or directly inside ``mask_mod`` / ``score_mod``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .pattern import AttentionPattern


def time_bucket(dt: Tensor, num_buckets: int) -> Tensor:
    """``min(floor(log2(max(dt, 1))), num_buckets)`` as int64, exact for |dt| < 2**53.

    Uses the float64 exponent (frexp) rather than log2 so that ``2**k - 1`` never rounds up to k.
    """
    x = dt.to(torch.float64).clamp(min=1.0)
    _, exponent = torch.frexp(x)  # x = mantissa * 2**exponent, mantissa in [0.5, 1)
    return (exponent.to(torch.int64) - 1).clamp(max=num_buckets)


def position_index(rel: Tensor, num_positions: int) -> Tensor:
    """Index into ``w_pos`` (2P-1 entries) of a relative position ``pos_i - pos_j``."""
    p = num_positions
    return rel.clamp(-(p - 1), p - 1) + (p - 1)


class _TableLookup(torch.autograd.Function):
    """``table[idx]`` whose backward is one weighted bincount (a scatter-add through index_put is
    ~10x slower on CPU for the many repeated indices of a bias table)."""

    @staticmethod
    def forward(ctx, table, idx):
        ctx.save_for_backward(idx)
        ctx.size = table.numel()
        return table[idx]

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        g = torch.bincount(idx.reshape(-1), weights=grad.reshape(-1), minlength=ctx.size)
        return g.to(grad.dtype), None


def lookup(table: Tensor, idx: Tensor) -> Tensor:
    """``table[idx]``, differentiable in ``table`` with a bincount backward."""
    if table.requires_grad and torch.is_grad_enabled():
        return _TableLookup.apply(table, idx)
    return table[idx]


def position_term(w_pos: Optional[Tensor], rel: Tensor) -> Optional[Tensor]:
    """``w_pos[clamp(rel) + P - 1]`` (None without the table)."""
    if w_pos is None:
        return None
    return lookup(w_pos, position_index(rel, (w_pos.numel() + 1) // 2))


def time_term(w_time: Optional[Tensor], ts_i: Optional[Tensor], ts_j: Optional[Tensor],
              num_buckets: int) -> Optional[Tensor]:
    """``w_time[bucket(|ts_i - ts_j|)]`` (None without the table or the timestamps)."""
    if w_time is None or ts_i is None or ts_j is None:
        return None
    return lookup(w_time, time_bucket((ts_i - ts_j).abs(), num_buckets))


def pair_allowed(pattern: AttentionPattern, i: Tensor, j: Tensor, n: Tensor) -> Tensor:
    """Local row i may attend to local key j of a sequence with n behaviors (broadcasting).

    Behaviors follow ``pattern`` among behaviors; a target sees every behavior and itself."""
    beh_i, beh_j = i < n, j < n
    return (beh_i & beh_j & pattern.allows(i, j)) | (~beh_i & (beh_j | (i == j)))


def pair_positions(i: Tensor, n: Tensor) -> Tensor:
    """Position of local row i: i for a behavior, n for every target."""
    return torch.where(i < n, i, n)


def pair_bias(i: Tensor, j: Tensor, n: Tensor, ts_i: Optional[Tensor], ts_j: Optional[Tensor],
              w_pos: Optional[Tensor], w_time: Optional[Tensor], num_buckets: int) -> Tensor:
    """The bias of local rows i against keys j (broadcasting); missing terms are dropped."""
    out = torch.zeros((), dtype=torch.float32 if w_pos is None and w_time is None else
                      (w_pos if w_pos is not None else w_time).dtype, device=i.device)
    pos = position_term(w_pos, pair_positions(i, n) - pair_positions(j, n))
    tim = time_term(w_time, ts_i, ts_j, num_buckets)
    for term in (pos, tim):
        if term is not None:
            out = out + term
    return out


def padded_mask_and_bias(offsets: Tensor, num_targets: Optional[Tensor], timestamps: Optional[Tensor],
                         w_pos: Optional[Tensor], w_time: Optional[Tensor], num_buckets: int,
                         pattern: AttentionPattern, length: Optional[int] = None
                         ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every sequence padded to ``length`` (default: the longest).

    Returns ``allowed [B, L, L]`` (bool; padded rows and columns False), ``bias [B, L, L]``,
    ``rows [B, L]`` (token row of each slot, 0 for padding) and ``valid [B, L]``. Memory grows
    with B * L^2: for baselines and benchmarks, not for the op's own paths.
    """
    lengths = offsets.diff()
    B = lengths.numel()
    L = int(lengths.max()) if length is None and B else (length or 1)
    L = max(L, 1)
    device = offsets.device
    slot = torch.arange(L, device=device)
    valid = slot[None, :] < lengths[:, None]
    rows = torch.where(valid, offsets[:-1, None] + slot[None, :], torch.zeros_like(slot)[None, :])
    nt = torch.zeros_like(lengths) if num_targets is None else num_targets.to(lengths.dtype)
    n = (lengths - nt)[:, None, None]
    i, j = slot[None, :, None], slot[None, None, :]
    allowed = pair_allowed(pattern, i, j, n) & valid[:, :, None] & valid[:, None, :]
    if timestamps is None:
        ts = None
    else:  # padding slots read row 0; without any token there is nothing to read
        ts = timestamps[rows] if timestamps.numel() else torch.zeros(rows.shape, dtype=timestamps.dtype, device=device)
    ts_i = None if ts is None else ts[:, :, None]
    ts_j = None if ts is None else ts[:, None, :]
    bias = pair_bias(i, j, n, ts_i, ts_j, w_pos, w_time, num_buckets)
    bias = bias.expand(B, L, L) if bias.dim() == 3 else torch.broadcast_to(bias, (B, L, L))
    return allowed, bias, rows, valid
