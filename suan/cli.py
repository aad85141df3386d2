"""The ``suan`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .config import GRADES, config_for_grade


def _grade_rows() -> List[dict]:
    from .models import SUAN

    rows = []
    for g in GRADES:
        cfg = config_for_grade(g)
        counts = SUAN(cfg).parameter_counts()
        rows.append({
            "name": g.name, "layers": g.layers, "d_model": cfg.d_model, "heads": g.heads,
            "embed_dim": g.embed_dim, "max_len": g.max_len, "head_hidden": list(g.head_hidden),
            "non_embedding_params": counts["non_embedding"], "embedding_params": counts["embedding"],
            "total_params": counts["total"],
        })
    return rows


def cmd_grades(args) -> int:
    rows = _grade_rows()
    if args.json:
        print(json.dumps({"grades": rows}, indent=2))
        return 0
    print("| grade | layers | d_model | heads | L | non-embedding params | embedding params |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['layers']} | {r['d_model']} | {r['heads']} | {r['max_len']} | "
              f"{r['non_embedding_params']:,} | {r['embedding_params']:,} |")
    span = rows[-1]["non_embedding_params"] / rows[0]["non_embedding_params"]
    print(f"\nnon-embedding parameters span {span:,.0f}x (default schema, {len(rows)} grades)")
    return 0


def cmd_latency(args) -> int:
    import torch

    from .latency import format_latency, latency_table

    torch.manual_seed(0)
    rows = latency_table(args.grade, args.lengths, args.candidates, device=args.device, repeat=args.repeat,
                         window=args.window, dilation=args.dilation, num_global=args.num_global)
    print(format_latency(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"grade": args.grade, "device": args.device, "rows": rows}, f, indent=2)
    return 0


def cmd_demo(args) -> int:
    """Smoke run of SUAN and LightSUAN: parameter counts, one training step, latency table."""
    import os

    import torch

    from .batch import random_batch
    from .latency import format_latency, latency_table
    from .models import SUAN, LightSUAN

    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    report = {"models": {}}
    for name, light in (("suan", False), ("lightsuan", True)):
        cfg = config_for_grade(args.grade, light=light)
        model = (LightSUAN if light else SUAN)(cfg)
        batch = random_batch(cfg.schema, 32, cfg.max_len, 1, seed=args.seed)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels)
        loss.backward()
        report["models"][name] = {**model.parameter_counts(), "loss": loss.item()}
        print(f"{name:10s} non-embedding params {report['models'][name]['non_embedding']:,}  loss {float(loss):.4f}")
    rows = latency_table(args.grade, (256, 1024), (1, 100), repeat=3)
    report["latency"] = rows
    print(format_latency(rows))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="suan", description="SUAN / LightSUAN CTR models on unified attention kernels")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grades", help="print the grade table (parameter counts per grade)")
    g.add_argument("--json", action="store_true", help="print JSON: {\"grades\": [...]}")
    g.set_defaults(func=cmd_grades)

    demo = sub.add_parser("demo", help="the main job")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--grade", default="g2")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    lat = sub.add_parser("latency", help="forward latency per request, SUAN vs LightSUAN")
    lat.add_argument("--grade", default="g2")
    lat.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    lat.add_argument("--candidates", type=int, nargs="+", default=[1, 100])
    lat.add_argument("--device", default="cpu")
    lat.add_argument("--repeat", type=int, default=5)
    lat.add_argument("--window", type=int, default=None)
    lat.add_argument("--dilation", type=int, default=None)
    lat.add_argument("--num-global", type=int, default=None)
    lat.add_argument("--json", default=None, help="also write the rows to this JSON file")
    lat.set_defaults(func=cmd_latency)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"suan {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
