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
    """FlexAttention on the packed stream [1, H, T, dh]; block mask built on every call (jagged
    batches change every step) and its time kept in ``last_mask_ms``."""

    def __init__(self, compiled: bool):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        self.create_block_mask = create_block_mask
        self.flex = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
        self.last_mask_ms = 0.0

    def __call__(self, case: Case):
        T, H, dh = case.q.shape
        dev = case.q.device
        seq = torch.repeat_interleave(torch.arange(case.B, device=dev), case.offsets.diff())
        local = torch.arange(T, device=dev) - case.offsets[seq]
        n = (case.offsets.diff() - case.num_targets)[seq]
        ts = case.timestamps
        w_pos, w_time, pattern = case.w_pos, case.w_time, case.pattern

        def mask_mod(b, h, qi, ki):
            return (seq[qi] == seq[ki]) & pair_allowed(pattern, local[qi], local[ki], n[qi])

        def score_mod(score, b, h, qi, ki):
            return score + pair_bias(local[qi], local[ki], n[qi], ts[qi], ts[ki], w_pos, w_time, NUM_BUCKETS)

        sync()
        t0 = time.perf_counter()
        block_mask = self.create_block_mask(mask_mod, 1, None, T, T, device=dev)
        sync()
        self.last_mask_ms = (time.perf_counter() - t0) * 1e3
        out = self.flex(case.q.transpose(0, 1)[None], case.k.transpose(0, 1)[None], case.v.transpose(0, 1)[None],
                        score_mod=score_mod, block_mask=block_mask)
        return out[0].transpose(0, 1)


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
