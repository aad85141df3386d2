"""The ``suan`` command line.

Settings of ``train`` / ``distill`` come from the ``TrainConfig`` defaults, then a JSON config
file (``--config``), then flags (``--epochs 3``, ``--set model_overrides.dropout=0.0``).

Errors: a user error (a bad argument, path, file or value) exits with status 2 and one line
``suan <command>: error: ...`` naming the argument or ``file:line``; an interrupted run exits with
130 after saying where its state is. A traceback appears only for a bug, or with ``--debug`` /
``SUAN_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from typing import List, Optional

from .config import GRADES, config_for_grade
from .errors import Interrupted, UserError


# ----------------------------------------------------------------------------------------------
# grades / latency / demo
# ----------------------------------------------------------------------------------------------
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
                         window=args.window, dilation=args.dilation, num_global=args.num_global,
                         cached=args.cached)
    print(format_latency(rows))
    if args.json:
        from .io import write_json

        write_json(args.json, {"grade": args.grade, "device": args.device, "rows": rows})
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, seed=args.seed, preset=args.preset, epochs=args.epochs,
                      progress=not args.no_progress, data_dir=args.data_dir, data=args.data)
    return 0 if report["ordering_holds"] or not args.strict else 1


# ----------------------------------------------------------------------------------------------
# train / distill
# ----------------------------------------------------------------------------------------------
def _field_type(f: dataclasses.Field):
    t = f.type if not isinstance(f.type, str) else eval(f.type, vars(typing), {})  # noqa: S307
    origin = typing.get_origin(t)
    if origin is typing.Union:
        t = [a for a in typing.get_args(t) if a is not type(None)][0]
    return t


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    p.add_argument("--config", help="JSON file of TrainConfig settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, JSON values, dotted keys into dicts (model_overrides.dropout=0)")
    for f in dataclasses.fields(TrainConfig):
        t = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        if t is bool:
            p.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction)
        elif t in (int, float, str):
            p.add_argument(flag, dest=f.name, default=None, type=t)
        else:  # dicts: JSON
            p.add_argument(flag, dest=f.name, default=None, type=json.loads, help="JSON")


def _train_config(args, distill: bool):
    from .train import TrainConfig

    d = TrainConfig().to_dict()
    if distill:
        from .defaults import DISTILL

        d.update(teacher=DISTILL.teacher, grade=DISTILL.student, **DISTILL.train_settings())
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                file_cfg = json.load(f)
        except FileNotFoundError:
            raise UserError(f"config: {args.config} does not exist") from None
        except IsADirectoryError:
            raise UserError(f"config: {args.config} is a folder; expected a JSON file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"config: {args.config}:{e.lineno}: not JSON ({e.msg})") from None
        except UnicodeDecodeError:
            raise UserError(f"config: {args.config} is not UTF-8 text") from None
        if not isinstance(file_cfg, dict):
            raise UserError(f"config: {args.config} must hold a JSON object of settings")
        unknown = set(file_cfg) - set(d)
        if unknown:
            raise UserError(f"config: unknown keys {sorted(unknown)} in {args.config}")
        d.update(file_cfg)
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            d[f.name] = v
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        head, _, tail = key.partition(".")
        if head not in d:
            raise UserError(f"--set: unknown setting {head!r}")
        if tail:
            if not isinstance(d[head], (dict, type(None))):
                raise UserError(f"--set {key}: {head} is not a dict of settings")
            d[head] = dict(d[head] or {})
            d[head][tail] = value
        else:
            d[head] = value
    if distill and not d.get("teacher"):
        raise UserError("teacher: distill needs a teacher grade (--teacher g2)")
    return TrainConfig.from_dict(d)


def cmd_train(args, distill: bool = False) -> int:
    from .train import train

    cfg = _train_config(args, distill)
    result = train(cfg)
    if result["trainer"].is_main:
        for name, m in result["test"].items():
            print(f"test {name}: auc {m['auc']:.4f} gauc {m['gauc']:.4f} logloss {m['logloss']:.4f}")
        print(f"results: {os.path.join(cfg.out_dir, 'results.json')}")
    return 0


def cmd_scaling(args) -> int:
    from .scaling import render_report, run_scaling

    run_scaling(args.out, preset=args.preset, distill=args.distill, data=args.data, data_dir=args.data_dir,
                progress=args.progress, n_boot=args.bootstrap, jobs=args.jobs, threads=args.threads)
    render_report(args.out)
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0


def cmd_report(args) -> int:
    from .compare import render_runs_progress
    from .scaling import render_report

    d = args.dir
    if any(os.path.exists(os.path.join(d, f)) for f in ("scaling.json", "plan.json")):
        print(render_report(d))
    elif os.path.isdir(os.path.join(d, "results")):
        print(render_runs_progress(d))
    else:
        raise UserError(f"{d}: neither a scaling sweep (plan.json, scaling.json) nor a comparison or distillation "
                        "study (results/); run `suan scaling`, `suan compare` or `suan distill-study` with --out there")
    return 0


def cmd_signals(args) -> int:
    from .signals import run_signals

    run_signals(args.dir, models=args.models, data_dir=args.data_dir)
    print(open(os.path.join(args.dir, "signals.md"), encoding="utf-8").read())
    return 0


def cmd_compare(args) -> int:
    from .compare import run_compare

    run_compare(args.data, args.out, models=args.models, preset=args.preset, seeds=args.seeds,
                data_dir=args.data_dir, progress=args.progress, epochs=args.epochs, grade=args.grade,
                max_len=args.max_len, batch_size=args.batch_size, early_stopping=args.early_stopping,
                dropout=args.dropout, jobs=args.jobs, threads=args.threads,
                lr_grid=tuple(args.lr_grid) if args.lr_grid else None)
    return 0


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def cmd_distill_study(args) -> int:
    from .distill_study import run_distill_study

    run_distill_study(args.out, preset=args.preset, data=args.data, students=args.students,
                      teacher_steps=args.teacher_steps, seeds=args.seeds, lambdas=args.lambdas,
                      temperatures=args.temperatures, data_dir=args.data_dir,
                      progress=args.progress, jobs=args.jobs, references_only=args.references_only,
                      threads=args.threads)
    return 0


def cmd_data(args) -> int:
    if args.data_command == "generate":
        import dataclasses as dc

        from .data.store import open_or_build
        from .data.synthetic import generate
        from .defaults import DATA_PRESETS, preset

        cfg = dc.replace(preset(DATA_PRESETS, args.preset, "preset"), seed=args.seed)
        if args.users:
            cfg = dc.replace(cfg, num_users=args.users)
        if os.path.lexists(args.out) and not os.path.isdir(args.out):
            raise UserError(f"out: {args.out} is a file, not a folder; choose a new or empty folder")
        if os.path.isdir(args.out) and os.listdir(args.out) and not os.path.exists(os.path.join(args.out, "schema.json")):
            raise UserError(f"out: {args.out} is a folder that holds no suan dataset; choose a new or empty one")
        # built aside and renamed into place: a dataset already there is replaced whole, never
        # half-rewritten under a process reading it, and kept if the build fails
        store = open_or_build(args.out, lambda tmp: generate(tmp, cfg, progress=True), usable=lambda _: False)
        print(json.dumps(store.describe(), indent=2, default=str))
        return 0
    if args.data_command == "build":
        from .data.registry import open_dataset

        store = open_dataset(args.spec, data_dir=args.data_dir, seed=args.seed)
        print(json.dumps(store.describe(), indent=2, default=str))
        return 0
    if args.data_command == "info":
        from .data.store import Store

        print(json.dumps(Store(args.path).describe(), indent=2, default=str))
        return 0
    if args.data_command == "fetch":
        from .data import movielens100k

        if args.name != "movielens-100k":
            raise ValueError(f"name: only 'movielens-100k' can be fetched, got {args.name!r}")
        movielens100k.fetch(data_dir=args.data_dir, verbose=True)
        return 0
    raise ValueError("data: choose generate, build, info or fetch")


# ----------------------------------------------------------------------------------------------
# serving
# ----------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .serving import export_model, load_checkpoint

    if os.path.isfile(args.out):
        raise UserError(f"out: {args.out} is a file; give a folder for the export (it is created)")
    model, source = load_checkpoint(args.checkpoint, args.which, args.weights)
    source["checkpoint"] = os.path.abspath(args.checkpoint)
    example = None
    if args.try_torch_export:
        from .batch import random_batch

        b = random_batch(model.cfg.schema, 1, min(16, model.cfg.max_len), 4, min_len=4, seed=0)
        example = (b.sample(0), b.targets)
    manifest = export_model(model, args.out, *(example or (None, None)), inputs=[args.checkpoint], source=source)
    print(json.dumps(manifest, indent=2))
    return 0


def cmd_score(args) -> int:
    from .serving import score_file

    stats = score_file(args.model, args.input, args.output, cache_mb=args.cache_mb)
    print(f"scored {stats['ok']} requests, {stats['errors']} errors, {stats['seconds']:.2f} s", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# CPU float sums depend on the thread count: the committed tables name the count they ran at
_THREADS_HELP = ("torch threads per run (default: 1 with --jobs > 1, torch's own count with --jobs 1); "
                 "a run repeats bit for bit only at the same count")


def build_parser() -> argparse.ArgumentParser:
    from .compare import all_models
    from .defaults import COMPARE_PRESETS, DATA_PRESETS, DEMO, DISTILL_STUDY_PRESETS, SCALING_PRESETS

    p = argparse.ArgumentParser(prog="suan", description="SUAN / LightSUAN CTR models on unified attention kernels")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors (also SUAN_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grades", help="print the grade table (parameter counts per grade)")
    g.add_argument("--json", action="store_true", help="print JSON: {\"grades\": [...]}")
    g.set_defaults(func=cmd_grades)

    demo = sub.add_parser("demo", help="the main job: LightSUAN alone vs SUAN teacher + distilled LightSUAN")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--preset", default=DEMO.data_preset, choices=list(DATA_PRESETS), help="synthetic data preset")
    demo.add_argument("--data", default=None, help="another dataset spec instead, e.g. movielens-100k")
    demo.add_argument("--epochs", type=int, default=DEMO.epochs)
    demo.add_argument("--data-dir", default=None, help="data cache folder (default $SUAN_DATA or ~/.cache/suan)")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--strict", action="store_true", help="exit 1 unless teacher and distilled student beat "
                      "LightSUAN alone")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="train one model")
    _add_train_flags(tr)
    tr.set_defaults(func=lambda a: cmd_train(a, distill=False))
    ds = sub.add_parser("distill", help="train a SUAN teacher and a LightSUAN student with online distillation")
    _add_train_flags(ds)
    ds.set_defaults(func=lambda a: cmd_train(a, distill=True))

    scl = sub.add_parser("scaling", help="grade x data-size sweep, power-law fits, plots (resumable)")
    scl.add_argument("--preset", default="smoke", choices=list(SCALING_PRESETS))
    scl.add_argument("--out", default="runs/scaling")
    scl.add_argument("--distill", action="store_true", help="also the distillation curve over teacher grades")
    scl.add_argument("--data", default=None)
    scl.add_argument("--data-dir", default=None)
    scl.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals")
    scl.add_argument("--progress", action="store_true")
    scl.add_argument("--jobs", type=int, default=1,
                     help="grid runs trained at a time, in worker processes, the longest first (default 1)")
    scl.add_argument("--threads", type=int, default=None, help=_THREADS_HELP)
    scl.set_defaults(func=cmd_scaling)

    rep = sub.add_parser("report", help="render DIR/report.md from a scaling sweep (progress.md while it runs), "
                                                 "or DIR/progress.md of a comparison or distillation study")
    rep.add_argument("dir")
    rep.set_defaults(func=cmd_report)

    cp = sub.add_parser("compare", help="SUAN / LightSUAN against DNN, DIN, BST and HSTU-style baselines")
    cp.add_argument("--data", default=None, help="dataset spec (default: the preset's synthetic data)")
    cp.add_argument("--preset", default=None, choices=list(COMPARE_PRESETS),
                    help="settings (default: ml100k for --data movielens-100k, else smoke)")
    cp.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                    help=f"models to compare (default: the preset's, all of {', '.join(all_models())}; "
                         "MODEL@gN for another grade, e.g. suan@g2)")
    cp.add_argument("--seeds", type=int, nargs="+", default=None)
    cp.add_argument("--epochs", type=int, default=None)
    cp.add_argument("--grade", default=None)
    cp.add_argument("--max-len", type=int, default=None)
    cp.add_argument("--batch-size", type=int, default=None)
    cp.add_argument("--lr-grid", type=float, nargs="+", default=None)
    cp.add_argument("--early-stopping", type=int, default=None, help="patience in epochs on valid AUC (0: off)")
    cp.add_argument("--dropout", type=float, default=None)
    cp.add_argument("--jobs", type=int, default=1, help="runs trained at a time, in worker processes (default 1)")
    cp.add_argument("--threads", type=int, default=None, help=_THREADS_HELP)
    cp.add_argument("--data-dir", default=None)
    cp.add_argument("--progress", action="store_true")
    cp.add_argument("--out", default="runs/compare")
    cp.set_defaults(func=cmd_compare)

    sg = sub.add_parser("signals", help="what a comparison's models leave on the table: their logit combined with "
                                        "the item's and the user's click rate (fitted on valid, scored on test)")
    sg.add_argument("dir", help="a `suan compare --out` folder")
    sg.add_argument("--models", nargs="+", default=None, metavar="MODEL", help="its entries (default: all)")
    sg.add_argument("--data-dir", default=None)
    sg.set_defaults(func=cmd_signals)

    dst = sub.add_parser("distill-study", help="the distillation claim: distilled LightSUAN vs SUAN one grade up "
                                               "(lambda x T on validation, several seeds; resumable)")
    dst.add_argument("--preset", default="smoke", choices=list(DISTILL_STUDY_PRESETS))
    dst.add_argument("--data", default=None, help="dataset spec (default: the preset's)")
    dst.add_argument("--students", nargs="+", default=None, metavar="GRADE", help="student grades (e.g. g0 g1)")
    dst.add_argument("--teacher-steps", type=int, nargs="+", default=None, metavar="K",
                     help="teachers K grades above each student (default 1 2)")
    dst.add_argument("--seeds", type=int, nargs="+", default=None)
    dst.add_argument("--lambdas", type=float, nargs="+", default=None, help="the lambda grid (default: the preset's)")
    dst.add_argument("--temperatures", type=float, nargs="+", default=None, help="the T grid (default: the preset's)")
    dst.add_argument("--jobs", type=int, default=1, help="runs trained at a time, in worker processes (default 1)")
    dst.add_argument("--threads", type=int, default=None, help=_THREADS_HELP)
    dst.add_argument("--references-only", action="store_true",
                     help="train only LightSUAN alone and SUAN one grade up on every seed (OUT/references.md); "
                          "the full study on the same --out later reuses them")
    dst.add_argument("--data-dir", default=None)
    dst.add_argument("--progress", action="store_true")
    dst.add_argument("--out", default="runs/distill-study")
    dst.set_defaults(func=cmd_distill_study)

    data = sub.add_parser("data", help="generate, build, fetch or inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    gen = dsub.add_parser("generate", help="generate synthetic data")
    gen.add_argument("--preset", default="demo", choices=list(DATA_PRESETS))
    gen.add_argument("--users", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True)
    bld = dsub.add_parser("build", help="build a dataset spec (taobao:FILE, movielens:FILE, amazon:FILE, ...)")
    bld.add_argument("spec")
    bld.add_argument("--data-dir", default=None)
    bld.add_argument("--seed", type=int, default=0)
    inf = dsub.add_parser("info", help="describe a dataset folder")
    inf.add_argument("path")
    fe = dsub.add_parser("fetch", help="fetch a public dataset into the cache (movielens-100k)")
    fe.add_argument("name")
    fe.add_argument("--data-dir", default=None)
    data.set_defaults(func=cmd_data)

    ex = sub.add_parser("export", help="export a trained model (the student of a distillation run) for serving")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--which", default=None, help="model | teacher | student (default: student if any)")
    ex.add_argument("--weights", default="tested", choices=["tested", "last"],
                    help="tested (default): the weights the run's test metrics came from (the best valid "
                         "epoch's with early stopping); last: the last saved step's")
    ex.add_argument("--try-torch-export", action=argparse.BooleanOptionalAction, default=True)
    ex.set_defaults(func=cmd_export)

    sc = sub.add_parser("score", help="score JSON-lines requests with an exported model")
    sc.add_argument("--model", required=True, help="folder written by `suan export`")
    sc.add_argument("--input", default="-")
    sc.add_argument("--output", default="-")
    sc.add_argument("--cache-mb", type=int, default=256, help="behavior cache size (0 disables)")
    sc.set_defaults(func=cmd_score)

    lat = sub.add_parser("latency", help="forward latency per request, SUAN vs LightSUAN")
    lat.add_argument("--grade", default="g2")
    lat.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    lat.add_argument("--candidates", type=int, nargs="+", default=[1, 100])
    lat.add_argument("--device", default="cpu")
    lat.add_argument("--repeat", type=int, default=5)
    lat.add_argument("--window", type=int, default=None)
    lat.add_argument("--dilation", type=int, default=None)
    lat.add_argument("--num-global", type=int, default=None)
    lat.add_argument("--cached", action="store_true", help="also time scoring against the behavior cache")
    lat.add_argument("--json", default=None, help="also write the rows to this JSON file")
    lat.set_defaults(func=cmd_latency)
    return p


USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("SUAN_DEBUG", "") not in ("", "0")
    try:
        return args.func(args) or 0
    except Interrupted as e:
        print(f"suan {args.command}: {e}", file=sys.stderr)
        return Interrupted.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"suan {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if debug:
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"suan {args.command}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
