"""Input checks of the unified attention op (SPEC section 7).

Two layers of checks:

* ``check_metadata``: shapes, dtypes, devices and plain Python arguments. It reads no tensor
  values, so it is safe inside ``torch.compile`` and costs nothing on the GPU.
* ``check_values``: the checks that need tensor values (offsets increasing and ending at T,
  num_targets within each sequence). They force one host sync, so they run where a sync happens
  anyway (the reference, the layout builder of the Triton path).

Every failure is a ``ValueError`` whose message starts with the argument's name.
"""
from __future__ import annotations

import math

import torch

from .call import AttentionCall
from .pattern import AttentionPattern

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BACKENDS = ("auto", "triton", "reference")
# Time differences are exact within one sequence when its timestamps span less than 2**31 units
# (68 years in seconds): the kernels rebase each sequence's timestamps to 32-bit offsets.
MAX_TIMESTAMP_SPAN = 2 ** 31


def _is_int_dtype(dtype: torch.dtype) -> bool:
    return (not dtype.is_floating_point) and (not dtype.is_complex) and dtype != torch.bool


def _check_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name}: on device {t.device}, but q is on {device}; all tensors must share one device")


def check_metadata(call: AttentionCall, backend: str = "auto") -> None:
    """Check everything that can be checked without reading tensor values."""
    q, k, v, offsets = call.q, call.k, call.v, call.offsets
    timestamps, num_targets, w_pos, w_time = call.timestamps, call.num_targets, call.w_pos, call.w_time
    num_buckets, scale = call.num_buckets, call.scale
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name}: expected shape [T, H, head_dim], got {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported (float16, bfloat16, float32, float64)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"k, v: dtypes must equal q's ({q.dtype}); got k {k.dtype}, v {v.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k: shape {tuple(k.shape)} must equal q's {tuple(q.shape)}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v: leading dims {tuple(v.shape[:2])} must equal q's [T, H] {tuple(q.shape[:2])}")
    if q.shape[1] < 1:
        raise ValueError("q: needs at least one head")
    if q.shape[2] < 1 or v.shape[2] < 1:
        raise ValueError("q, v: head dims must be at least 1")
    device = q.device
    _check_device("k", k, device)
    _check_device("v", v, device)

    if not isinstance(offsets, torch.Tensor):
        raise ValueError(f"offsets: expected a torch.Tensor, got {type(offsets).__name__}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"offsets: expected a 1-D tensor [B+1], got shape {tuple(offsets.shape)}")
    if not _is_int_dtype(offsets.dtype):
        raise ValueError(f"offsets: must be an integer tensor (int64), got {offsets.dtype}")
    _check_device("offsets", offsets, device)
    num_seqs = offsets.numel() - 1

    if timestamps is not None:
        if not isinstance(timestamps, torch.Tensor) or timestamps.dim() != 1:
            raise ValueError("timestamps: expected a 1-D tensor [T]")
        if timestamps.numel() != q.shape[0]:
            raise ValueError(f"timestamps: length {timestamps.numel()} must equal T = {q.shape[0]}")
        if timestamps.dtype == torch.bool or timestamps.dtype.is_complex:
            raise ValueError(f"timestamps: dtype {timestamps.dtype} is not supported (integer or float)")
        _check_device("timestamps", timestamps, device)

    if num_targets is not None:
        if not isinstance(num_targets, torch.Tensor) or num_targets.dim() != 1:
            raise ValueError("num_targets: expected a 1-D integer tensor [B]")
        if num_targets.numel() != num_seqs:
            raise ValueError(f"num_targets: length {num_targets.numel()} must equal B = {num_seqs}")
        if not _is_int_dtype(num_targets.dtype):
            raise ValueError(f"num_targets: must be an integer tensor, got {num_targets.dtype}")
        _check_device("num_targets", num_targets, device)

    if not isinstance(num_buckets, int) or isinstance(num_buckets, bool) or num_buckets < 0:
        raise ValueError(f"num_buckets: must be an int >= 0, got {num_buckets!r}")
    if w_pos is not None:
        if not isinstance(w_pos, torch.Tensor) or w_pos.dim() != 1:
            raise ValueError("w_pos: expected a 1-D tensor of 2P-1 entries")
        if w_pos.numel() % 2 != 1:
            raise ValueError(f"w_pos: length must be odd (2P-1), got {w_pos.numel()}")
        if not w_pos.dtype.is_floating_point:
            raise ValueError(f"w_pos: must be floating point, got {w_pos.dtype}")
        _check_device("w_pos", w_pos, device)
    if w_time is not None:
        if not isinstance(w_time, torch.Tensor) or w_time.dim() != 1:
            raise ValueError("w_time: expected a 1-D tensor of num_buckets+1 entries")
        if w_time.numel() != num_buckets + 1:
            raise ValueError(f"w_time: length {w_time.numel()} must be num_buckets + 1 = {num_buckets + 1}")
        if not w_time.dtype.is_floating_point:
            raise ValueError(f"w_time: must be floating point, got {w_time.dtype}")
        _check_device("w_time", w_time, device)

    if not isinstance(call.pattern, AttentionPattern):
        raise ValueError(f"pattern: expected an AttentionPattern, got {type(call.pattern).__name__}")
    if scale is not None:
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
            raise ValueError(f"scale: must be a finite float or None, got {scale!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {BACKENDS}, got {backend!r}")


def check_values(call: AttentionCall):
    """Value checks; returns (lengths, num_targets) as Python lists. Syncs once on CUDA."""
    offsets, num_targets, total_tokens = call.offsets, call.num_targets, call.q.shape[0]
    offs = offsets.tolist()
    if offs[0] != 0:
        raise ValueError(f"offsets: must start at 0, got {offs[0]}")
    lengths = [b - a for a, b in zip(offs[:-1], offs[1:])]
    for i, length in enumerate(lengths):
        if length < 0:
            raise ValueError(f"offsets: must be non-decreasing, but offsets[{i + 1}] = {offs[i + 1]} < offsets[{i}] = {offs[i]}")
    if offs[-1] != total_tokens:
        raise ValueError(f"offsets: must end at T = {total_tokens}, got {offs[-1]}")
    if num_targets is None:
        return lengths, [0] * len(lengths)
    nts = num_targets.tolist()
    for i, (nt, length) in enumerate(zip(nts, lengths)):
        if nt < 0:
            raise ValueError(f"num_targets: entry {i} is negative ({nt})")
        if nt > length:
            raise ValueError(f"num_targets: entry {i} is {nt}, above the sequence's length {length}")
    return lengths, nts


def check_timestamps(call: AttentionCall, lengths) -> bool:
    """Timestamps the time bias can use exactly: finite, and spanning less than
    ``MAX_TIMESTAMP_SPAN`` units within each sequence. Only checked when the time term is
    present. One host sync (on CUDA) when a problem must be reported or the result is needed.

    Returns whether every sequence's behaviors (its first ``length - num_targets`` tokens) have
    integer timestamps in non-decreasing order (read in the same sync): the Triton kernels then
    skip an ``abs`` a pair in their full tiles, whose keys all precede their queries. False
    without a time term, for float timestamps, or when any behavior is earlier than the one
    before it (the general path: the same results)."""
    ts = call.timestamps
    if ts is None or call.w_time is None or ts.numel() == 0:
        return False
    if ts.dtype.is_floating_point:
        bad = ~torch.isfinite(ts)
        if bool(bad.any()):
            rows = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"timestamps: non-finite values (NaN or inf) at rows {rows}; the time bias needs "
                             "finite timestamps")
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device=ts.device)
    B = lengths.numel()
    seq = torch.repeat_interleave(torch.arange(B, device=ts.device), lengths, output_size=ts.numel())
    if ts.dtype.is_floating_point:
        t = ts.to(torch.float64)
        lo = torch.full((B,), float("inf"), dtype=torch.float64, device=ts.device).scatter_reduce(0, seq, t, "amin")
        hi = torch.full((B,), float("-inf"), dtype=torch.float64, device=ts.device).scatter_reduce(0, seq, t, "amax")
        span = torch.where(lengths > 0, hi - lo, torch.zeros_like(hi))
    else:
        t = ts.to(torch.int64)
        big = torch.iinfo(torch.int64)
        lo = torch.full((B,), big.max, dtype=torch.int64, device=ts.device).scatter_reduce(0, seq, t, "amin")
        hi = torch.full((B,), big.min, dtype=torch.int64, device=ts.device).scatter_reduce(0, seq, t, "amax")
        # hi - lo overflows int64 only when the span is far above the limit: compare in halves first
        far = (hi // 2 - lo // 2) >= MAX_TIMESTAMP_SPAN // 2 + 1
        span = torch.where(far | (lengths == 0), torch.zeros_like(hi), hi - lo)
        span = torch.where(far & (lengths > 0), torch.full_like(hi, MAX_TIMESTAMP_SPAN), span)
    over = span >= MAX_TIMESTAMP_SPAN
    if ts.dtype.is_floating_point:
        flags = over.any().reshape(1)
    else:
        flags = torch.stack([over.any(), _behaviors_in_order(t, seq, lengths, call.num_targets)])
    flags = flags.tolist()  # the one host sync
    if flags[0]:
        b = int(over.nonzero()[0])
        raise ValueError(f"timestamps: sequence {b} spans {span[b].item():.0f} units or more; time differences are "
                         f"supported below 2**31 within a sequence (68 years in seconds): use seconds, or rebase "
                         "each sequence's timestamps")
    return len(flags) > 1 and bool(flags[1])


def _behaviors_in_order(t: torch.Tensor, seq: torch.Tensor, lengths: torch.Tensor, num_targets) -> torch.Tensor:
    """Device bool: within every sequence, each behavior's timestamp >= the one before it (targets,
    the last ``num_targets`` tokens, are not compared). No host sync."""
    if t.numel() < 2:
        return torch.ones((), dtype=torch.bool, device=t.device)
    nt = torch.zeros_like(lengths) if num_targets is None else num_targets.to(device=t.device, dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    local = torch.arange(t.numel(), device=t.device) - starts[seq]
    behavior = local < (lengths - nt)[seq]
    # token p + 1 a behavior of the same sequence as p: then p is one too (it comes first)
    pair = behavior[1:] & (seq[1:] == seq[:-1])
    return ~(pair & (t[1:] < t[:-1])).any()
