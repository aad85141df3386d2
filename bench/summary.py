"""The short summary of a GPU benchmark run: the issue targets, met or not (printed last)."""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    t = defaultdict(dict)  # (group, L) -> impl -> (ms, info)
    for b in data["benchmarks"]:
        p = b.get("params") or {}
        info = b.get("extra_info", {})
        group = b["name"].split("[")[0].replace("test_", "")
        ms = info.get("cuda_ms") or b["stats"]["median"] * 1e3
        t[(group, p.get("seq_len"))][p.get("impl")] = (ms, info)
    rows = []
    for L in sorted({k[1] for k in t if k[0] == "forward_backward" and k[1]}):
        fb = t[("forward_backward", L)]
        fw = t[("forward", L)]
        if "triton" not in fb:
            continue
        tri = fb["triton"][0]
        row = {"L": L, "fused fwd+bwd ms": tri}
        for base in ("flex", "reference", "sdpa", "flash"):
            if base in fb:
                row[f"x vs {base}"] = fb[base][0] / tri
        if "triton" in fw:
            fms, finfo = fw["triton"]
            row["fwd TFLOP/s"] = finfo.get("tflops")
            bwd_ms = tri - fms
            if bwd_ms > 0:
                row["bwd TFLOP/s"] = 2.5 * finfo["allowed_flops"] / (bwd_ms * 1e-3) / 1e12
        if "flash" in fw and "flash" in fb:  # FlashAttention-2, causal, no bias: the shape's speed of light
            f_fwd, f_info = fw["flash"]
            row["FA2 fwd TFLOP/s"] = f_info.get("tflops")
            if fb["flash"][0] > f_fwd:
                row["FA2 bwd TFLOP/s"] = 2.5 * f_info["allowed_flops"] / ((fb["flash"][0] - f_fwd) * 1e-3) / 1e12
        rows.append(row)
    print("\n== summary (bf16, dh=64, H=4, B=64; TFLOP/s count allowed pairs only; 'x vs flash' and FA2: "
          "FlashAttention-2 via SDPA, causal, no bias) ==")
    keys = ["L", "fused fwd+bwd ms", "x vs flex", "x vs reference", "x vs sdpa", "x vs flash", "fwd TFLOP/s",
            "bwd TFLOP/s", "FA2 fwd TFLOP/s", "FA2 bwd TFLOP/s"]
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys))
    checks = []
    big = [r for r in rows if r["L"] >= 1024]
    if big:
        checks.append(("fused fwd+bwd >= 1.5x FlexAttention, L >= 1024",
                       all(r.get("x vs flex", 0) >= 1.5 for r in big)))
        checks.append(("fused fwd+bwd >= 4x eager reference, L >= 1024",
                       all(r.get("x vs reference", 0) >= 4 for r in big if "x vs reference" in r)))
    big2 = [r for r in rows if r["L"] >= 2048]
    if big2:
        checks.append(("dense fwd >= 250 TFLOP/s, L >= 2048", all((r.get("fwd TFLOP/s") or 0) >= 250 for r in big2)))
        checks.append(("bwd >= 150 TFLOP/s, L >= 2048", all((r.get("bwd TFLOP/s") or 0) >= 150 for r in big2)))
    sp = t.get(("sparse_forward", 4096), {})
    if "triton-dense" in sp and "triton-w128" in sp:
        dense_ms, _ = sp["triton-dense"]
        w_ms, w_info = sp["triton-w128"]
        ideal = dense_ms * w_info.get("density", 1.0)
        frac = ideal / w_ms
        print(f"block-sparse W=128, L=4096: {w_ms:.3f} ms vs dense {dense_ms:.3f} ms, density "
              f"{w_info.get('density', 0):.3f}: {100 * frac:.0f}% of the ideal speedup; layout build "
              f"{w_info.get('layout_build_ms', 0):.3f} ms = {100 * w_info.get('layout_share_of_fwd', 0):.1f}% of the forward")
        checks.append(("block-sparse W=128 L=4096 >= 60% of ideal speedup", frac >= 0.6))
        checks.append(("layout build < 5% of the forward", w_info.get("layout_share_of_fwd", 1) < 0.05))
        if "layout_content_hit_ms" in w_info:  # a batch of an already-seen shape: the content-keyed cache
            print(f"layout for a batch of a seen shape (content-keyed cache): {w_info['layout_content_hit_ms']:.3f} ms "
                  f"= {100 * w_info['layout_content_hit_share_of_fwd']:.1f}% of the forward")
            checks.append(("layout of a seen shape < 5% of the forward",
                           w_info["layout_content_hit_share_of_fwd"] < 0.05))
    for name, ok in checks:
        print(f"[{'met' if ok else 'NOT met'}] {name}")


if __name__ == "__main__":
    main(sys.argv[1])
