"""The dense attention table on a GPU, one line per measurement as soon as it is measured (a run
cut short by its time limit keeps every line it printed), plus a kernel-level profile of the
fused forward + backward and the autotuner's picks.

    python bench/gpu_quick.py --lengths 1024 4096 --impls triton triton-nobias flash sdpa flex \
        --profile 4096 [--profile-impls triton triton-nobias] [--out results.jsonl]

Implementations (bf16, dh=64, H=4, B=64, one target per sequence, the cases of bench/common.py):
``triton`` (the fused op, both bias tables), ``triton-nobias`` (the fused op without tables or
timestamps: what the bias costs), ``flash`` (FlashAttention-2 via SDPA, causal, no bias: the
speed of light of the shape, not the same function), ``sdpa`` (SDPA with the bias + mask tensor),
``flex`` (compiled FlexAttention, same score/mask functions; its compile time is printed) and
``reference`` (eager). TFLOP/s count allowed pairs only; backward = 2.5x the forward's FLOPs.
The pytest-benchmark suites (``pytest bench``) measure the same cases; this script is for a
short lease, where a suite that is killed at its limit writes no JSON at all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import FlexRunner, dense_bytes, feasible, flops, impl_fn, make_case  # noqa: E402

IMPLS = ("triton", "triton-nobias", "flash", "sdpa", "flex", "reference")


def _with_backward(fwd, case):
    params = [p for p in (case.q, case.k, case.v, case.w_pos, case.w_time) if p is not None]

    def fn():
        out = fwd()
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)

    return fn


def measure(impl: str, L: int, backward: bool, flex=None) -> dict:
    from triton.testing import do_bench

    case = make_case(L, requires_grad=backward)
    fn = impl_fn(impl, case, flex)
    if backward:
        fn = _with_backward(fn, case)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward):
        fn()  # compile / autotune
        torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
        ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
    fl = flops(case, backward=backward)["allowed_flops"]
    return {"impl": impl, "L": L, "pass": "fwd+bwd" if backward else "fwd", "ms": ms,
            "tflops": fl / (ms * 1e-3) / 1e12, "first_call_s": first_s}


def profile(L: int, impl: str = "triton", rows: int = 14) -> None:
    case = make_case(L, requires_grad=True)
    fn = _with_backward(impl_fn(impl, case), case)
    fn()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile as prof

    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    print(f"-- profile: {impl} forward + backward, L={L}, 3 calls (CUDA time by kernel) --")
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))


def autotune_picks() -> None:
    from suan_kernels.ops.unified_attention.launch import kernel_module

    mod = kernel_module(False)
    for name in ("attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"):
        tuner = getattr(mod, name, None)
        for key, cfg in (getattr(tuner, "cache", None) or {}).items():
            print(f"autotune {name} key={key}: {cfg}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--impls", nargs="+", default=["triton", "flash", "sdpa"], choices=IMPLS)
    ap.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--reference-max-len", type=int, default=2048)
    ap.add_argument("--profile", type=int, nargs="*", default=[], help="lengths to profile kernel by kernel")
    ap.add_argument("--profile-impls", nargs="+", default=["triton", "triton-nobias"],
                    choices=["triton", "triton-nobias"])
    ap.add_argument("--out", help="append one JSON line per measurement")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_quick: needs a CUDA device")
    flex = FlexRunner(compiled=True) if "flex" in args.impls else None
    results = []
    for L in args.lengths:
        for impl in args.impls:
            if impl in ("sdpa", "reference") and not feasible(dense_bytes(64, L, 4)):
                continue
            if impl == "reference" and L > args.reference_max_len:
                continue
            for pas in args.passes:
                try:
                    r = measure(impl, L, pas == "fwd+bwd", flex)
                except Exception as e:  # a failing baseline must not cost the other rows
                    print(f"FAILED {impl} L={L} {pas}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    torch.cuda.empty_cache()
                    continue
                results.append(r)
                print(f"RESULT {impl:14s} L={L:5d} {r['pass']:8s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s "
                      f"(first call {r['first_call_s']:.1f} s)", flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
        torch.cuda.empty_cache()
    autotune_picks()
    for L in args.profile:
        for impl in args.profile_impls:
            profile(L, impl)
    by = {(r["impl"], r["L"], r["pass"]): r["ms"] for r in results}
    print("\n| L | pass | " + " | ".join(f"triton x vs {b}" for b in args.impls if b != "triton") + " |")
    for (impl, L, pas), ms in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if impl != "triton":
            continue
        cells = [f"{by[(b, L, pas)] / ms:.2f}" if (b, L, pas) in by else "-" for b in args.impls if b != "triton"]
        print(f"| {L} | {pas} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
