"""``suan demo``: the main job on the embedded synthetic data.

Trains LightSUAN alone, then a SUAN teacher and a LightSUAN student together with online
distillation, evaluates all three on the test split (AUC, GAUC, LogLoss), times CPU inference
per request at K=1 and K=100 candidates, and writes ``report.json`` and ``learning_curves.png``.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from .defaults import DEMO, DISTILL
from .io import save_figure, write_json
from .latency import median_test_request, random_candidates, time_call
from .plotting import pyplot
from .rundir import RunLock
from .train import TrainConfig, open_data, short_run, train

STUDENT_GRADE, TEACHER_GRADE = DEMO.student_grade, DEMO.teacher_grade
STUDENT_LEN, TEACHER_LEN = DEMO.student_len, DEMO.teacher_len


def _common(epochs: int, seed: int, progress: bool) -> dict:
    return short_run(max_len=STUDENT_LEN, batch_size=128, lr=1e-3, embedding_lr=1e-3, epochs=epochs, seed=seed,
                     progress=progress)


def _latency(model, store, max_len: int, repeat: int = 7) -> Dict[str, float]:
    """Median ms of one request (a median-length history, K candidates, one pass) on this CPU."""
    history = median_test_request(store, max_len)
    out = {}
    model = model.to("cpu").eval()
    for K in (1, 100):
        cands = random_candidates(store.schema, K, seed=K)
        with torch.no_grad():
            out[f"ms_k{K}"] = time_call(lambda: model.score(history, cands), warmup=2, repeat=repeat)
    return out


def _plot(runs: Dict[str, dict], path: str) -> Optional[str]:
    plt = pyplot("learning curves plot")
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))

    def smooth(steps, vals, k=20):
        vals = np.asarray(vals)
        if len(vals) <= k:
            return steps, vals
        return steps[k - 1:], np.convolve(vals, np.ones(k) / k, mode="valid")

    for name, hist in runs.items():
        tr = hist["train"]
        steps = [r["step"] for r in tr]
        # each model's own click BCE (a distillation run's total loss also holds the KD term)
        curves = {"bce_teacher": f"{name}/teacher", "bce_student": f"{name}/student"} if tr and "bce_student" in tr[0] \
            else {"loss": name}
        for key, label in curves.items():
            ax1.plot(*smooth(steps, [r[key] for r in tr]), label=label)
        for key in hist["valid"][0] if hist["valid"] else []:
            if isinstance(hist["valid"][0][key], dict):
                label = name if key == "model" else f"{name}/{key}"
                ax2.plot([v["epoch"] for v in hist["valid"]], [v[key]["auc"] for v in hist["valid"]], marker="o",
                         label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training BCE on clicks (20-step mean)")
    ax1.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("valid AUC")
    ax2.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def run_demo(out_dir: str, seed: int = 0, preset: str = "demo", epochs: int = 2, progress: bool = True,
             data_dir: Optional[str] = None, data: Optional[str] = None) -> dict:
    """``data``: any dataset spec (default: the synthetic ``preset``), e.g. ``movielens-100k``."""
    t_start = time.perf_counter()
    with RunLock(out_dir, "out"):
        return _run_demo(out_dir, seed, preset, epochs, progress, data_dir, data, t_start)


def _run_demo(out_dir, seed, preset, epochs, progress, data_dir, data, t_start) -> dict:
    spec = data or f"synthetic:{preset}"
    store = open_data(spec, data_dir, seed)
    d = store.describe()
    print(f"data: {spec} (seed {seed}): {d['samples']} samples, {d['events']} behaviors, "
          f"train CTR {d['ctr']['train']:.3f}", flush=True)
    common = _common(epochs, seed, progress)

    print(f"[1/2] LightSUAN {STUDENT_GRADE} alone", flush=True)
    alone = train(TrainConfig(model="lightsuan", grade=STUDENT_GRADE, out_dir=os.path.join(out_dir, "lightsuan"),
                              **common), store)
    print(f"[2/2] SUAN {TEACHER_GRADE} teacher + LightSUAN {STUDENT_GRADE} student, online distillation", flush=True)
    dist = train(TrainConfig(model="lightsuan", grade=STUDENT_GRADE, teacher=TEACHER_GRADE,
                             teacher_overrides={"dropout": 0.0, "max_len": TEACHER_LEN},
                             **DISTILL.train_settings(),
                             out_dir=os.path.join(out_dir, "distill"), **common), store)

    models = {
        "lightsuan": (alone, "model", alone["trainer"].models()["model"]),
        "suan_teacher": (dist, "teacher", dist["trainer"].models()["teacher"]),
        "lightsuan_distilled": (dist, "student", dist["trainer"].models()["student"]),
    }
    report = {"data": {"spec": spec, "seed": seed, **{k: v for k, v in d.items() if k != "info"}},
              "models": {}}
    for name, (res, key, model) in models.items():
        m = res["test"][key]
        entry = {"auc": m["auc"], "gauc": m["gauc"], "logloss": m["logloss"],
                 "grade": model.cfg.grade, "kind": type(model).__name__,
                 "non_embedding_params": res["params"][key]["non_embedding"],
                 "train_samples_per_s": res.get("train_samples_per_s")}
        entry.update(_latency(model, store, common["max_len"]))
        report["models"][name] = entry
    base = report["models"]["lightsuan"]["auc"]
    report["margins"] = {
        "teacher_minus_lightsuan_auc": report["models"]["suan_teacher"]["auc"] - base,
        "distilled_minus_lightsuan_auc": report["models"]["lightsuan_distilled"]["auc"] - base,
    }
    report["ordering_holds"] = all(v > 0 for v in report["margins"].values())
    plot = _plot({"lightsuan": alone["trainer"].history, "distill": dist["trainer"].history},
                 os.path.join(out_dir, "learning_curves.png"))
    report["learning_curves"] = plot
    report["wall_time_s"] = time.perf_counter() - t_start
    write_json(os.path.join(out_dir, "report.json"), report)
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    lines = ["", "| model | grade | test AUC | GAUC | LogLoss | non-emb params | ms/request K=1 | K=100 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['grade']} | {m['auc']:.4f} | {m['gauc']:.4f} | {m['logloss']:.4f} | "
                     f"{m['non_embedding_params']:,} | {m['ms_k1']:.2f} | {m['ms_k100']:.2f} |")
    mg = report["margins"]
    lines.append("")
    lines.append(f"teacher - LightSUAN alone: {mg['teacher_minus_lightsuan_auc']:+.4f} AUC; "
                 f"distilled - LightSUAN alone: {mg['distilled_minus_lightsuan_auc']:+.4f} AUC "
                 f"({'ordering holds' if report['ordering_holds'] else 'ORDERING DOES NOT HOLD'})")
    lines.append(f"wall time {report['wall_time_s']:.0f} s; learning curves: {report.get('learning_curves')}")
    return "\n".join(lines)
