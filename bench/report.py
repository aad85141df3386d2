"""Turn a ``--benchmark-json`` file into Markdown tables (one per group and length) and PNG
plots (time vs length, log-log, one line per impl).

    python bench/report.py bench.json --markdown tables.md --plot-dir plots/
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1e6:
            return f"{v:.3g}"
        return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def load(path: str):
    with open(path) as f:
        data = json.load(f)
    rows = []
    for b in data["benchmarks"]:
        params = b.get("params") or {}
        info = b.get("extra_info", {})
        group = re.sub(r" L=\d+.*", "", b.get("group") or b["name"].split("[")[0])
        rows.append({"group": group, "full_group": b.get("group"), "seq_len": params.get("seq_len"),
                     "impl": params.get("impl"), "K": params.get("num_candidates"),
                     "median_ms": b["stats"]["median"] * 1e3, "info": info})
    return data.get("machine_info", {}), data.get("commit_info", {}), rows


COLUMNS = [("cuda_ms", "CUDA ms"), ("tflops", "TFLOP/s"), ("gbps", "GB/s"), ("samples_per_s", "samples/s"),
           ("ms_per_candidate", "ms/cand"), ("block_mask_ms", "block mask ms"), ("layout_build_ms", "layout ms"),
           ("layout_content_hit_ms", "seen-shape layout ms"),
           ("layout_share_of_fwd", "layout/fwd"), ("allowed_flops", "allowed-pair FLOPs"),
           ("visited_flops", "visited-tile FLOPs"), ("dense_flops", "dense causal FLOPs"), ("peak_mem_bytes", "peak mem (B)"),
           ("rss_high_water_bytes", "RSS high-water (B)")]


def markdown(rows) -> str:
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["full_group"]].append(r)
    out = []
    for group in sorted(by_group, key=lambda g: (re.sub(r"\d+", "", g), [int(x) for x in re.findall(r"\d+", g)])):
        rs = by_group[group]
        cols = [c for c in COLUMNS if any(r["info"].get(c[0]) is not None for r in rs)]
        speed = sorted({k for r in rs for k in r["info"] if k.startswith("speedup_vs_")})
        head = ["impl", "median ms"] + [c[1] for c in cols] + [s.replace("speedup_vs_", "x vs ") for s in speed]
        out.append(f"### {group}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in rs:
            vals = [r["impl"], _fmt(r["median_ms"])] + [_fmt(r["info"].get(c[0])) for c in cols] + \
                   [_fmt(r["info"].get(s), 2) for s in speed]
            out.append("| " + " | ".join(vals) + " |")
        out.append("")
    return "\n".join(out)


def plots(rows, out_dir: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plot]'): no plots")
        return []
    os.makedirs(out_dir, exist_ok=True)
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["seq_len"] is None:
            continue
        key = r["group"] + (f" K={r['K']}" if r["K"] is not None else "")
        series[key][r["impl"]].append((r["seq_len"], r["info"].get("cuda_ms") or r["median_ms"]))
    files = []
    for key, impls in series.items():
        if all(len(pts) < 2 for pts in impls.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for impl, pts in sorted(impls.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("time (ms)")
        ax.set_title(key)
        ax.legend()
        fig.tight_layout()
        name = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".png")
        fig.savefig(name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json")
    p.add_argument("--markdown", default=None)
    p.add_argument("--plot-dir", default=None)
    a = p.parse_args(argv)
    machine, commit, rows = load(a.json)
    header = (f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
              f"python {machine.get('python_version', '?')}; commit {commit.get('id', '?')[:10]}\n\n")
    md = header + markdown(rows)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    else:
        print(md)
    if a.plot_dir:
        for f in plots(rows, a.plot_dir):
            print("plot:", f)


if __name__ == "__main__":
    main()
