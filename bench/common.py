"""Shared pieces of the benchmark suites: inputs, baselines, FLOP and byte counts, timing.

Baselines compute the same function as ``kernels.unified_attention`` (SPEC section 7):

* ``reference``: the eager pure-PyTorch reference (``backend="reference"``);
* ``sdpa``: ``scaled_dot_product_attention`` on sequences padded to L with an explicit additive
  bias + mask tensor ``[B, 1, L, L]`` (relative position + time buckets, -inf where masked);
* ``flex``: FlexAttention on the packed jagged stream with the same score_mod (bias tables) and
  mask_mod (same sequence, causal behaviors, isolated targets, sparse pattern); its BlockMask is
  built per call and timed separately.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from suan_kernels.ops.unified_attention import (DENSE, AttentionCall, AttentionPattern, padded_mask_and_bias, pair_allowed,
                                            pair_bias, run)
from suan_kernels.ops.unified_attention.bias import position_index, time_bucket
from suan_kernels.ops.unified_attention.layout import build_layout

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# The GPU targets of the issues: bf16, dh=64, H=4, B=64. The CPU sizes keep the suite < 10 min.
if CUDA:
    BATCH, HEADS, HEAD_DIM, DTYPE = 64, 4, 64, torch.bfloat16
    LENGTHS = [64, 256, 1024, 2048, 4096, 8192]
else:
    BATCH, HEADS, HEAD_DIM, DTYPE = 2, 2, 32, torch.float32
    LENGTHS = [64, 128, 256, 512, 1024]
if os.environ.get("SUAN_BENCH_LENGTHS"):
    LENGTHS = [int(x) for x in os.environ["SUAN_BENCH_LENGTHS"].split(",")]
NUM_TARGETS = 1
NUM_BUCKETS = 64


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    offsets: torch.Tensor
    timestamps: torch.Tensor
    num_targets: torch.Tensor
    w_pos: torch.Tensor
    w_time: torch.Tensor
    L: int
    B: int
    pattern: AttentionPattern = DENSE

    def call(self) -> AttentionCall:
        return AttentionCall(self.q, self.k, self.v, self.offsets, self.timestamps, self.num_targets, self.w_pos,
                             self.w_time, NUM_BUCKETS, self.pattern)


def make_case(L: int, B: int = BATCH, H: int = HEADS, dh: int = HEAD_DIM, dtype=DTYPE, device=DEVICE,
              pattern: AttentionPattern = DENSE, requires_grad=False, seed=0) -> Case:
    g = torch.Generator().manual_seed(seed)
    T = B * L
    def rnd(*s):
        return torch.randn(*s, generator=g).to(device=device, dtype=dtype).requires_grad_(requires_grad)
    ts = torch.cumsum(torch.exp(torch.randn(B, L, generator=g) * 2 + 5).long() + 1, 1).reshape(-1) + 1_600_000_000
    return Case(
        q=rnd(T, H, dh), k=rnd(T, H, dh), v=rnd(T, H, dh),
        offsets=torch.arange(0, T + 1, L, dtype=torch.int64, device=device),
        timestamps=ts.to(device),
        num_targets=torch.full((B,), NUM_TARGETS, dtype=torch.int64, device=device),
        w_pos=(torch.randn(2 * L + 1, generator=g) * 0.1).to(device).requires_grad_(requires_grad),
        w_time=(torch.randn(NUM_BUCKETS + 1, generator=g) * 0.1).to(device).requires_grad_(requires_grad),
        L=L, B=B, pattern=pattern)


# ---- implementations ---------------------------------------------------------------------------
def run_op(case: Case, backend: str):
    return run(case.call(), backend)


def run_sdpa(case: Case):
    """SDPA with an explicit additive bias + mask tensor (sequences of equal length: no padding)."""
    B, L, H, dh = case.B, case.L, case.q.shape[1], case.q.shape[2]
    allowed, bias, _, _ = padded_mask_and_bias(case.offsets, case.num_targets, case.timestamps, case.w_pos,
                                               case.w_time, NUM_BUCKETS, case.pattern, length=L)
    mask = bias.masked_fill(~allowed, float("-inf")).unsqueeze(1).to(case.q.dtype)  # [B, 1, L, L]
    def view(x):
        return x.view(B, L, H, -1).transpose(1, 2)
    out = torch.nn.functional.scaled_dot_product_attention(view(case.q), view(case.k), view(case.v), attn_mask=mask)
    return out.transpose(1, 2).reshape(B * L, H, -1)


class FlexRunner:
    """FlexAttention on ``[B, H, L, dh]`` views of the packed stream (every benchmark sequence has
    the same length L and the same number of targets, so one ``[L, L]`` block mask serves the
    whole batch); the score_mod reads the bias tables and the per-sequence timestamps. The block
    mask depends only on (L, targets, pattern) here, so it is built once per shape and cached, as
    a user with fixed-length batches would (our op caches its block layout the same way); the
    time of its first build is kept in ``last_mask_ms``.

    A packed ``[1, H, B*L, dh]`` stream with a same-sequence mask would be the jagged equivalent,
    but ``create_block_mask`` materialises a ``[B*L, B*L]`` mask there (68 GB at B=64, L=4096)."""

    def __init__(self, compiled: bool):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if compiled:
            import torch._dynamo

            # one compiled graph per (length, forward / backward): more than dynamo's default 8
            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        self.create_block_mask = create_block_mask
        self.flex = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
        self.last_mask_ms = 0.0
        self._masks = {}

    def __call__(self, case: Case):
        T, H, dh = case.q.shape
        B, L = case.B, case.L
        if T != B * L or not torch.equal(case.offsets.diff(), torch.full_like(case.offsets.diff(), L)):
            raise ValueError("FlexRunner: every sequence of the case must have length L")
        dev = case.q.device
        n = L - int(case.num_targets[0])
        if not bool((case.num_targets == case.num_targets[0]).all()):
            raise ValueError("FlexRunner: every sequence must have the same number of targets")
        ts = case.timestamps.view(B, L)
        w_pos, w_time, pattern = case.w_pos, case.w_time, case.pattern
        n_t = torch.tensor(n, device=dev)

        def mask_mod(b, h, qi, ki):
            return pair_allowed(pattern, qi, ki, n_t)

        num_pos = (w_pos.numel() + 1) // 2

        def score_mod(score, b, h, qi, ki):
            # plain indexing (flex differentiates captured tables itself); the same rules as pair_bias
            pi, pj = torch.where(qi < n_t, qi, n_t), torch.where(ki < n_t, ki, n_t)
            dt = (ts[b, qi] - ts[b, ki]).abs()
            return (score + w_pos[position_index(pi - pj, num_pos)]
                    + w_time[time_bucket_int(dt, NUM_BUCKETS)]).to(score.dtype)

        key = (L, n, pattern, str(dev))
        if key not in self._masks:
            sync()
            t0 = time.perf_counter()
            self._masks[key] = self.create_block_mask(mask_mod, None, None, L, L, device=dev)
            sync()
            self.last_mask_ms = (time.perf_counter() - t0) * 1e3
        block_mask = self._masks[key]

        def view(x):
            return x.view(B, L, H, -1).transpose(1, 2)

        out = self.flex(view(case.q), view(case.k), view(case.v), score_mod=score_mod, block_mask=block_mask)
        return out.transpose(1, 2).reshape(T, H, -1)


def without_bias(case: Case) -> Case:
    """The same case without bias tables or timestamps (the op's bias-free path)."""
    import dataclasses

    return dataclasses.replace(case, w_pos=None, w_time=None, timestamps=None)


def time_bucket_int(dt: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``time_bucket`` without float64 (which a compiled score_mod may not lower): float32 log2,
    then corrected by at most one with integer shifts; exact for 0 <= dt < 2**62."""
    x = dt.clamp(min=1)
    b = torch.log2(x.to(torch.float32)).floor().to(torch.int64).clamp(0, 61)
    one = torch.ones_like(x)
    b = b - ((one << b) > x).to(torch.int64) + ((one << (b + 1)) <= x).to(torch.int64)
    return b.clamp(max=num_buckets)


def run_flash_causal(case: Case):
    """Speed-of-light row, **not the same function**: FlashAttention-2 as torch ships it (SDPA's
    flash backend), causal, no bias, no targets, on the same q/k/v viewed as [B, H, L, dh]. Same
    allowed-pair count up to the targets, so its TFLOP/s is the bias-free ceiling of this shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, L, H = case.B, case.L, case.q.shape[1]

    def view(x):
        return x.view(B, L, H, -1).transpose(1, 2)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(view(case.q), view(case.k), view(case.v),
                                                               is_causal=True)
    return out.transpose(1, 2).reshape(B * L, H, -1)


def impl_fn(impl: str, case: Case, flex: Optional[Callable[[Case], torch.Tensor]] = None) -> Callable[[], torch.Tensor]:
    """A no-argument call of one benchmarked implementation on ``case``: ``reference`` (eager),
    ``triton`` (fused), ``triton-nobias`` (fused, no tables or timestamps), ``sdpa`` (bias + mask
    tensor), ``flash`` (FA2, causal, no bias) or ``flex`` (``flex``, a ``FlexRunner``)."""
    if impl in ("reference", "triton"):
        return lambda: run_op(case, impl)
    if impl == "triton-nobias":
        bare = without_bias(case)
        return lambda: run_op(bare, "triton")
    if impl == "sdpa":
        return lambda: run_sdpa(case)
    if impl == "flash":
        return lambda: run_flash_causal(case)
    if impl == "flex" and flex is not None:
        return lambda: flex(case)
    raise ValueError(f"impl: unknown or without its runner: {impl!r}")


# ---- counts ------------------------------------------------------------------------------------
def flops(case: Case, backward: bool = False) -> Dict[str, float]:
    """FLOPs counting only allowed pairs (``dense_flops``: a dense causal layout) and the visited
    64x64 tiles of the block layout (``visited_flops``); forward = 2*(dh+dv) per pair; the
    backward adds 2.5x the forward (five matmuls instead of two)."""
    H, dh, dv = case.q.shape[1], case.q.shape[2], case.v.shape[2]
    lay = build_layout(case.offsets, case.num_targets, 64, case.pattern)
    f = lay.flops(H, dh, dv)
    n = case.L - NUM_TARGETS
    pairs = case.B * (allowed_behavior_pairs(case.pattern, n) + NUM_TARGETS * (n + 1))
    mult = 3.5 if backward else 1.0
    per_pair = 2 * (dh + dv) * H
    return {"allowed_flops": pairs * per_pair * mult, "visited_flops": f["visited_flops"] * mult,
            "dense_flops": f["dense_causal_flops"] * mult, "visited_tiles": f["visited_tiles"]}


def allowed_behavior_pairs(pattern: AttentionPattern, n: int, chunk: int = 1024) -> int:
    """Allowed behavior pairs of one sequence of n behaviors (rows in chunks: memory chunk x n)."""
    if not pattern.sparse:
        return n * (n + 1) // 2
    j = torch.arange(n)[None, :]
    return sum(int(pattern.allows(torch.arange(r0, min(n, r0 + chunk))[:, None], j).sum())
               for r0 in range(0, n, chunk))


def bytes_moved(case: Case, backward: bool = False) -> float:
    """The fewest bytes: q, k, v read and out written once (+ dout, dq, dk, dv, lse for backward)."""
    elt = case.q.element_size()
    T, H, dh = case.q.shape
    dv = case.v.shape[2]
    fwd = T * H * (2 * dh + dv) * elt + T * H * dv * elt + T * H * 4
    if not backward:
        return fwd
    return fwd + T * H * (2 * dv + 2 * dh + dv + dh) * elt + T * H * 8


def sync():
    if CUDA:
        torch.cuda.synchronize()


def cuda_ms(fn: Callable, warmup: int = 5, rep: int = 20) -> Optional[float]:
    """Median CUDA time (ms) with triton.testing.do_bench (events), None on CPU."""
    if not CUDA:
        return None
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def feasible(case_bytes: float) -> bool:
    if CUDA:
        free, _ = torch.cuda.mem_get_info()
        return case_bytes < 0.6 * free
    return case_bytes < 6e9


def dense_bytes(B: int, L: int, H: int) -> float:
    """Rough memory of an implementation that materializes [B, H, L, L] float32 scores."""
    return 4.0 * B * H * L * L * 3


def peak_memory_reset():
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> Optional[int]:
    if CUDA:
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process high-water mark
    except Exception:
        return None


def tflops(fl: float, ms: Optional[float]) -> Optional[float]:
    return None if not ms else fl / (ms * 1e-3) / 1e12


def gbps(b: float, ms: Optional[float]) -> Optional[float]:
    return None if not ms else b / (ms * 1e-3) / 1e9
