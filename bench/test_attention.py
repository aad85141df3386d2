"""Attention op benchmarks per sequence length: fused kernels against the eager reference,
SDPA with an explicit bias + mask tensor, and FlexAttention with the same score/mask functions;
and the block-sparse path at windows 32 and 128 against dense.

    pytest bench --benchmark-only [--benchmark-json out.json]

Parametrized by ``seq_len`` and ``impl``; the fused ``triton`` rows run on CUDA only (on CPU the
kernels would run under the interpreter), the flex rows forward-only on CPU (eager math path).
"""
import dataclasses
import os
import time

import pytest
import torch

from suan_kernels import DENSE, AttentionPattern
from suan_kernels.ops.unified_attention.layout import LayoutCache, build_layout

from common import (CUDA, DEVICE, LENGTHS, FlexRunner, bytes_moved, cuda_ms, dense_bytes, feasible, flops,
                    gbps, impl_fn, make_case, peak_memory, peak_memory_reset, run_op, sync, tflops)

# "flash": FlashAttention-2 through SDPA, causal and bias-free: not the same function, the speed of
# light of the shape (CUDA only; run before "triton" so the fused row can store its ratio to it)
DENSE_IMPLS = ["reference", "sdpa", "flex"] + (["flash", "triton"] if CUDA else [])
BWD_IMPLS = ["reference", "sdpa"] + (["flex", "flash", "triton"] if CUDA else [])
# the eager reference materialises [B, H, L, L] several times over (backward); on the GPU it is
# timed up to this length (SUAN_BENCH_REFERENCE_MAX_LEN), where it already loses by 10x or more
REFERENCE_MAX_LEN = int(os.environ.get("SUAN_BENCH_REFERENCE_MAX_LEN", "2048" if CUDA else "1000000"))
SPARSE_BACKEND = "triton" if CUDA else "reference"
SPARSE_WINDOWS = {"dense": None, "w32": 32, "w64": 64, "w128": 128}
SPARSE_IMPLS = [f"{SPARSE_BACKEND}-{w}" for w in (["dense", "w32", "w128"] if CUDA else ["dense", "w32", "w64", "w128"])]
# CUDA: the peak of torch's allocator during the benchmark; CPU: the process's RSS high-water mark
PEAK_KEY = "peak_mem_bytes" if CUDA else "rss_high_water_bytes"
_FLEX = {}
_CASES = {}


def _case(L, grad=False, pattern=DENSE):
    key = (L, grad, pattern)
    if key not in _CASES:
        _CASES.clear()  # one case alive at a time (GPU memory)
        _CASES[key] = make_case(L, requires_grad=grad, pattern=pattern)
    return _CASES[key]


def _flex():
    if "r" not in _FLEX:
        _FLEX["r"] = FlexRunner(compiled=CUDA)
    return _FLEX["r"]


def _impl_fn(impl, case):
    return impl_fn(impl, case, _flex() if impl == "flex" else None)


def _skip_if_too_big(impl, L, case):
    if impl == "reference" and L > REFERENCE_MAX_LEN:
        pytest.skip(f"reference timed up to L={REFERENCE_MAX_LEN} (SUAN_BENCH_REFERENCE_MAX_LEN)")
    if impl in ("reference", "sdpa", "flex") and not feasible(dense_bytes(case.B, L, case.q.shape[1])):
        pytest.skip(f"{impl} at L={L} would need ~{dense_bytes(case.B, L, case.q.shape[1]) / 1e9:.0f} GB")
    if impl == "flex" and not CUDA and L * case.B > 2048:
        pytest.skip("eager FlexAttention on CPU materializes [T, T] scores: T <= 2048")


def _timed(benchmark, fn):
    def call():
        out = fn()
        sync()  # CUDA timings must be real
        return out

    return benchmark(call)


def _record_dense(record, group, seq_len, impl, case, ms, backward, **extra):
    """Derived figures of a dense benchmark (FLOPs, TFLOP/s, GB/s, peak memory, Flex's block-mask
    time); the fused kernel's row also gets its speedups over the baselines of the same run."""
    fl = flops(case, backward=backward)
    extra.update(device=DEVICE, dtype=str(case.q.dtype), cuda_ms=ms, tflops=tflops(fl["allowed_flops"], ms),
                 gbps=gbps(bytes_moved(case, backward=backward), ms), **{PEAK_KEY: peak_memory()}, **fl)
    if impl == "flex":
        extra["block_mask_ms"] = _flex().last_mask_ms
    record(group, seq_len, impl, baselines=["reference", "sdpa", "flex", "flash"] if impl == "triton" else (),
           **extra)


@pytest.mark.parametrize("impl", DENSE_IMPLS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_forward(benchmark, record, seq_len, impl):
    case = _case(seq_len)
    _skip_if_too_big(impl, seq_len, case)
    benchmark.group = f"fwd L={seq_len}"
    fn = _impl_fn(impl, case)
    with torch.no_grad():
        fn()
        sync()
        peak_memory_reset()
        _timed(benchmark, fn)
        ms = cuda_ms(fn)
    _record_dense(record, "fwd", seq_len, impl, case, ms, backward=False, batch=case.B, heads=case.q.shape[1],
                  head_dim=case.q.shape[2])


@pytest.mark.parametrize("impl", BWD_IMPLS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_forward_backward(benchmark, record, seq_len, impl):
    case = _case(seq_len, grad=True)
    _skip_if_too_big(impl, seq_len, case)
    benchmark.group = f"fwd+bwd L={seq_len}"
    fwd = _impl_fn(impl, case)
    params = [case.q, case.k, case.v, case.w_pos, case.w_time]

    def fn():
        out = fwd()
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)

    fn()
    sync()
    peak_memory_reset()
    _timed(benchmark, fn)
    ms = cuda_ms(fn, rep=10)
    _record_dense(record, "fwd_bwd", seq_len, impl, case, ms, backward=True)


def _sparse_case(impl, L, grad=False):
    window = SPARSE_WINDOWS[impl.split("-")[1]]
    return _case(L, grad=grad, pattern=AttentionPattern(window=window))


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_sparse_forward(benchmark, record, seq_len, impl):
    case = _sparse_case(impl, seq_len)
    benchmark.group = f"sparse fwd L={seq_len}"
    fn = lambda: run_op(case, SPARSE_BACKEND)  # noqa: E731
    with torch.no_grad():
        fn()
        sync()
        _timed(benchmark, fn)
        ms = cuda_ms(fn)
    fl = flops(case)
    # the block layout's cost, built from scratch (the op caches it per batch shape)
    sync()
    t0 = time.perf_counter()
    build_layout(case.offsets, case.num_targets, 64, case.pattern)
    sync()
    layout_ms = (time.perf_counter() - t0) * 1e3
    # what a new batch of an already-seen shape costs: the cache's content key (one host copy)
    cache = LayoutCache()
    cache.get(case.offsets, case.num_targets, 64, case.pattern)
    fresh_offsets, fresh_targets = case.offsets.clone(), case.num_targets.clone()
    sync()
    t0 = time.perf_counter()
    cache.get(fresh_offsets, fresh_targets, 64, case.pattern)
    sync()
    content_hit_ms = (time.perf_counter() - t0) * 1e3
    assert cache.content_hits == 1
    fwd_ms = ms if ms else benchmark.stats.stats.median * 1e3
    record("sparse_fwd", seq_len, impl, baselines=[f"{SPARSE_BACKEND}-dense"] if "dense" not in impl else (),
           device=DEVICE, window=case.pattern.window, cuda_ms=ms, tflops=tflops(fl["allowed_flops"], ms),
           density=fl["allowed_flops"] / flops(dataclasses.replace(case, pattern=DENSE))["allowed_flops"],
           layout_build_ms=layout_ms, layout_share_of_fwd=layout_ms / fwd_ms,
           layout_content_hit_ms=content_hit_ms, layout_content_hit_share_of_fwd=content_hit_ms / fwd_ms, **fl)


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_sparse_forward_backward(benchmark, record, seq_len, impl):
    case = _sparse_case(impl, seq_len, grad=True)
    benchmark.group = f"sparse fwd+bwd L={seq_len}"
    params = [case.q, case.k, case.v, case.w_pos, case.w_time]

    def fn():
        out = run_op(case, SPARSE_BACKEND)
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)

    fn()
    sync()
    _timed(benchmark, fn)
    ms = cuda_ms(fn, rep=10)
    fl = flops(case, backward=True)
    record("sparse_fwd_bwd", seq_len, impl, baselines=[f"{SPARSE_BACKEND}-dense"] if "dense" not in impl else (),
           device=DEVICE, window=case.pattern.window, cuda_ms=ms, tflops=tflops(fl["allowed_flops"], ms), **fl)
