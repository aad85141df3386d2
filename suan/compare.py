"""``suan compare``: SUAN and LightSUAN against the baselines under one budget.

Every model gets the same data, epochs, batch size and grade; its learning rate is picked from a
small grid on seed 0 by validation AUC, then it is trained with that rate on every seed. The
table reports test AUC, GAUC and LogLoss (mean and standard deviation over seeds), non-embedding
parameters, training samples/s and CPU inference ms per request (one user, K candidates).
``lightsuan-distilled`` is a LightSUAN trained with online distillation from a SUAN teacher one
grade higher (the teacher is trained in the same run, its cost counts in that row's samples/s).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .defaults import COMPARE_PRESETS, DISTILL, ComparePreset, preset as choose_preset
from .io import write_json, write_text
from .latency import median_test_request, random_candidates, time_call
from .registry import model_names
from .rundir import RunLock
from .train import TrainConfig, open_data, short_run, train

RECIPES = ("lightsuan-distilled",)  # training recipes compared beside the registered models


def all_models() -> List[str]:
    """Every model of the comparison: the registry's (baselines first), then the recipes."""
    return model_names() + list(RECIPES)


def distill_config(teacher: str, **settings) -> TrainConfig:
    """A LightSUAN student trained with online distillation from a SUAN ``teacher`` grade."""
    return TrainConfig(model="lightsuan", teacher=teacher, teacher_overrides={"dropout": 0.0},
                       **DISTILL.train_settings(), **settings)


def _train_one(name: str, store, p: ComparePreset, lr: float, seed: int, out: str, progress: bool,
               train_samples: Optional[int] = None) -> dict:
    common = short_run(grade=p.grade, epochs=p.epochs, batch_size=p.batch_size, max_len=p.max_len, lr=lr,
                       embedding_lr=lr, seed=seed, out_dir=out, progress=progress, train_samples=train_samples)
    if name == "lightsuan-distilled":
        cfg = distill_config(p.teacher_grade, **common)
        key = "student"
    else:
        cfg = TrainConfig(model=name, **common)
        key = "model"
    res = train(cfg, store)
    model = res["trainer"].models()[key]
    valid = res["valid"][-1][key] if res["valid"] else {}
    return {"test": res["test"][key], "valid": valid, "params": res["params"][key],
            "samples_per_s": res.get("train_samples_per_s"), "model": model}


def _inference_ms(model, store, max_len: int, K: int = 100) -> float:
    """Median ms of one request (a median-length history, K candidates, one pass) on this CPU."""
    history = median_test_request(store, max_len)
    cands = random_candidates(store.schema, K, seed=K)
    model = model.to("cpu").eval()
    from .batch import collate

    def one_pass():
        with torch.no_grad():
            return model(collate([dict(history, targets=cands, labels=None)]))

    return time_call(one_pass, warmup=2, repeat=7)


def run_compare(data: Optional[str], out_dir: str, models: Optional[Sequence[str]] = None, preset: str = "smoke",
                seeds: Optional[Sequence[int]] = None, data_dir: Optional[str] = None, progress: bool = False,
                **overrides) -> dict:
    p = dataclasses.replace(choose_preset(COMPARE_PRESETS, preset, "preset"),
                            **{k: v for k, v in overrides.items() if v is not None})
    if data:
        p = dataclasses.replace(p, data=data)
    known = all_models()
    if models:
        unknown = set(models) - set(known)
        if unknown:
            raise ValueError(f"models: unknown {sorted(unknown)}; known: {', '.join(known)}")
    p = dataclasses.replace(p, models=tuple(models or p.models or known))
    if seeds:
        p = dataclasses.replace(p, seeds=tuple(seeds))
    with RunLock(out_dir, "out"):
        return _run_compare(p, preset, out_dir, data_dir, progress)


def _run_compare(p: ComparePreset, preset: str, out_dir: str, data_dir: Optional[str], progress: bool) -> dict:
    t0 = time.perf_counter()
    store = open_data(p.data, data_dir, 0)
    n_train = len(store.split("train"))
    print(f"compare on {p.data}: {store.describe()['samples']} samples; grade {p.grade}, {p.epochs} epoch(s), "
          f"batch {p.batch_size}, L={p.max_len}, lr grid {list(p.lr_grid)}, seeds {list(p.seeds)}", flush=True)
    results: Dict[str, dict] = {}
    for name in p.models:
        runs = {}
        best_lr, best_auc = p.lr_grid[0], -1.0
        if len(p.lr_grid) > 1:  # tune on seed 0's validation AUC, on a subset of the training data
            for lr in p.lr_grid:
                r = _train_one(name, store, p, lr, p.seeds[0], os.path.join(out_dir, "runs", f"{name}-tune-lr{lr:g}"),
                               progress, train_samples=p.tune_samples)
                auc = r["valid"].get("auc", float("nan"))
                print(f"  {name} lr={lr:g} (tuning on {min(p.tune_samples or 10**12, n_train):,} samples): "
                      f"valid auc {auc:.4f}", flush=True)
                if auc > best_auc:
                    best_lr, best_auc = lr, auc
        for seed in p.seeds:
            r = _train_one(name, store, p, best_lr, seed, os.path.join(out_dir, "runs", f"{name}-lr{best_lr:g}-s{seed}"),
                           progress)
            runs[seed] = r
            print(f"  {name} lr={best_lr:g} seed={seed}: test auc {r['test']['auc']:.4f}", flush=True)
        model = runs[p.seeds[0]]["model"]
        entry = {"lr": best_lr, "seeds": list(p.seeds)}
        for metric in ("auc", "gauc", "logloss"):
            vals = np.array([runs[s]["test"][metric] for s in p.seeds], dtype=float)
            ok = vals[np.isfinite(vals)]
            entry[metric] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                             "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0, "values": vals.tolist()}
        entry["non_embedding_params"] = runs[p.seeds[0]]["params"]["non_embedding"]
        entry["train_samples_per_s"] = float(np.median([runs[s]["samples_per_s"] or 0 for s in p.seeds]))
        entry["inference_ms_k100"] = _inference_ms(model, store, p.max_len)
        results[name] = entry
    report = {"data": p.data, "preset": preset, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                            for k, v in dataclasses.asdict(p).items()},
              "samples": store.describe()["samples"], "models": results, "wall_time_s": time.perf_counter() - t0}
    write_json(os.path.join(out_dir, "compare.json"), report)
    md = format_compare(report)
    write_text(os.path.join(out_dir, "compare.md"), md)
    print(md)
    return report


def format_compare(report: dict) -> str:
    s = report["settings"]
    lines = [f"Data `{report['data']}` ({report['samples']['train']:,} train / {report['samples']['test']:,} test samples); "
             f"grade {s['grade']}, {s['epochs']} epoch(s), batch {s['batch_size']}, L={s['max_len']}, "
             f"seeds {s['seeds']}; learning rate picked from {s['lr_grid']} by seed {s['seeds'][0]}'s valid AUC "
             f"(tuning runs on {s['tune_samples']} samples).",
             "", "| model | test AUC | GAUC | LogLoss | non-emb params | train samples/s | ms/request (K=100) | lr |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    best = max(report["models"].values(), key=lambda e: e["auc"]["mean"])["auc"]["mean"]
    for name, e in report["models"].items():
        auc = f"{e['auc']['mean']:.4f} ± {e['auc']['std']:.4f}"
        if e["auc"]["mean"] == best:
            auc = f"**{auc}**"
        lines.append(f"| {name} | {auc} | {e['gauc']['mean']:.4f} ± {e['gauc']['std']:.4f} | "
                     f"{e['logloss']['mean']:.4f} ± {e['logloss']['std']:.4f} | {e['non_embedding_params']:,} | "
                     f"{e['train_samples_per_s']:.0f} | {e['inference_ms_k100']:.2f} | {e['lr']:g} |")
    lines.append("")
    lines.append(f"wall time {report['wall_time_s'] / 60:.1f} min")
    return "\n".join(lines)
