"""``suan compare``: SUAN and LightSUAN against the baselines under one budget.

Every model gets the same data, epoch budget, early-stopping rule (patience on validation AUC,
the best epoch's weights restored for the test), batch size and base grade. Its learning rate is
picked from a grid by seed 0's validation AUC; it is then trained with that rate on every seed
(seed 0's tuning run is reused when tuning ran on the full data). The test split is only
evaluated, never used to choose anything. Entries:

* every model of ``suan.registry`` (baselines and SUAN / LightSUAN) at the preset's grade;
* ``lightsuan-distilled``: LightSUAN trained with online distillation from a SUAN teacher one grade
  higher (trained in the same run; its cost counts in that row's samples/s);
* ``suan@gN``: SUAN at another grade (the presets add one and two grades up).

Each run's result is kept as ``OUT/results/<run>.json``: a rerun skips finished runs, and a run
that was interrupted (SIGTERM, Ctrl-C, a killed worker) continues from its checkpoint in
``OUT/runs/<run>/`` (one per epoch, on a signal and every ``CHECKPOINT_EVERY`` steps; one written
under other settings is kept aside and the run starts afresh), so a long comparison resumes. The table reports test AUC, GAUC and LogLoss (mean and standard deviation
over seeds), the best epoch, non-embedding parameters, training samples/s and CPU inference ms
per request; a paired test over seeds compares each SUAN-family entry with the best baseline;
reference scores (the item's and the user's training click rate) put the GAUC in context.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .defaults import COMPARE_PRESETS, DISTILL, ComparePreset, preset as choose_preset
from .io import write_json, write_text
from .latency import median_test_request, random_candidates, time_call
from .metrics import ctr_metrics
from .registry import get_model, model_names
from .rundir import RunLock
from .train import TrainConfig, checkpoint_differences, open_data, short_run, train, with_settings_added_since
from .workers import check_jobs, check_threads, run_in_processes, torch_threads

RECIPES = ("lightsuan-distilled",)  # training recipes compared beside the registered models


def all_models() -> List[str]:
    """Every model of the comparison: the registry's (baselines first), then the recipes."""
    return model_names() + list(RECIPES)


# ablations of SUAN usable as entries: ``suan~notime``, ``suan~nocross~1layer@g2``
ABLATIONS = {"notime": {"use_time_bias": False}, "nocross": {"use_cross_attention": False},
             "nogate": {"use_msgate": False}, "1layer": {"num_layers": 1}}
# distillation options of ``lightsuan-distilled`` entries: ``lightsuan-distilled~tg3~lam1~T2@g1`` is a
# LightSUAN g1 student of a SUAN g3 teacher with lambda 1 and temperature 2 (defaults: one grade
# up, ``suan.defaults.DISTILL``'s lambda and T)
_DISTILL_OPTIONS = {"t": ("teacher", str), "lam": ("distill_lambda", float), "T": ("temperature", float)}


class Entry(NamedTuple):
    """One entry of a comparison, parsed: model kind, grade, model overrides (ablations) and
    distillation settings (``lightsuan-distilled`` only)."""

    kind: str
    grade: str
    overrides: dict
    distill: dict


def _distill_option(token: str) -> Optional[Tuple[str, object]]:
    for prefix in sorted(_DISTILL_OPTIONS, key=len, reverse=True):
        if token.startswith(prefix) and len(token) > len(prefix):
            field, cast = _DISTILL_OPTIONS[prefix]
            try:
                return field, cast(token[len(prefix):])
            except ValueError:
                return None
    return None


def parse_entry(name: str, base_grade: str) -> Entry:
    """``suan~nogate@g2`` -> Entry(``suan``, ``g2``, the ablations' model overrides, {}); ``din`` ->
    Entry(``din``, the preset's grade, {}, {}); ``lightsuan-distilled~tg3~lam1@g1`` -> its teacher
    grade and lambda in ``distill``."""
    from .config import get_grade

    head, sep, grade = name.partition("@")
    kind, *modifiers = head.split("~")
    if kind not in all_models():
        raise ValueError(f"models: unknown {kind!r}; known: {', '.join(all_models())} (optionally ~ablation, @grade)")
    overrides, distill = {}, {}
    for a in modifiers:
        option = _distill_option(a) if kind in RECIPES else None
        if option is not None:
            distill[option[0]] = option[1]
            continue
        if a not in ABLATIONS:
            known = list(ABLATIONS) + (["tgN", "lamX", "TX"] if kind in RECIPES else [])
            raise ValueError(f"models: unknown modifier {a!r} in {name!r}; known: {', '.join(known)}")
        overrides.update(ABLATIONS[a])
    for g in ([grade] if sep else []) + ([distill["teacher"]] if "teacher" in distill else []):
        try:
            get_grade(g)
        except ValueError as e:
            raise ValueError(f"models: {name!r}: {e}") from None
    for key in ("distill_lambda", "temperature"):
        if key in distill and not (math.isfinite(distill[key]) and distill[key] > 0):
            raise ValueError(f"models: {key} in {name!r} must be a positive number")
    return Entry(kind, grade if sep else base_grade, overrides, distill)


def distill_config(teacher: str, **settings) -> TrainConfig:
    """A LightSUAN student trained with online distillation from a SUAN ``teacher`` grade
    (``settings`` may override the default lambda / temperature)."""
    return TrainConfig(model="lightsuan", teacher=teacher, teacher_overrides={"dropout": 0.0},
                       **{**DISTILL.train_settings(), **settings})


def _one_grade_up(grade: str) -> str:
    from .config import GRADES, get_grade

    names = [g.name for g in GRADES]
    i = names.index(get_grade(grade).name)
    return names[min(i + 1, len(names) - 1)].split("-")[0]


# A run interrupted (SIGTERM, Ctrl-C, a worker killed) continues from its checkpoint when the
# comparison is run again: one is written at every epoch's end, on a signal, and every this many
# steps, so a hard kill loses at most that much of a run that may take an hour.
CHECKPOINT_EVERY = 300
# How a run is carried out, not what it computes: a stored result is this configuration's whatever
# these were (results written before runs resumed say resume=False, checkpoint_every=0; a folder
# moved or copied elsewhere holds the same runs).
_RUN_MECHANICS = ("resume", "checkpoint_every", "progress", "out_dir")
# Where the data was named or found, not what it is: a stored result is keyed by the contents it
# trained on (``data_fingerprint``). Results written before that recorded ``data`` as the config's
# default, whatever the comparison's data was, since the comparison passes its own store.
_DATA_NAMING = ("data", "data_dir")


def _result_identity(config: dict) -> dict:
    """The settings that decide a run's result: ``config`` (a TrainConfig dict) without
    ``_RUN_MECHANICS`` and ``_DATA_NAMING``, with settings added since it was written at the value
    it ran with."""
    return {k: v for k, v in with_settings_added_since(config).items()
            if k not in _RUN_MECHANICS and k not in _DATA_NAMING}


def _train_config(name: str, p: ComparePreset, lr: float, seed: int, out: str, progress: bool,
                  train_samples: Optional[int]) -> Tuple[TrainConfig, str]:
    kind, grade, ablation, distill = parse_entry(name, p.grade)
    common = short_run(data=p.data, grade=grade, epochs=p.epochs, batch_size=p.batch_size, max_len=p.max_len, lr=lr,
                       embedding_lr=lr, seed=seed, out_dir=out, progress=progress, train_samples=train_samples,
                       early_stopping=p.early_stopping, model_overrides={"dropout": p.dropout, **ablation},
                       resume=True, checkpoint_every=CHECKPOINT_EVERY)
    if kind == "lightsuan-distilled":
        distill = dict(distill)
        teacher = distill.pop("teacher", None) or p.teacher_grade or _one_grade_up(grade)
        return distill_config(teacher, **distill, **common), "student"
    return TrainConfig(model=kind, **common), "model"


def _run_path(out_dir: str, name: str, lr: float, seed: int, train_samples: Optional[int]) -> str:
    tag = f"{name}-lr{lr:g}-s{seed}" + (f"-n{train_samples}" if train_samples else "")
    return os.path.join(out_dir, "results", tag.replace("@", "_at_") + ".json")


def _run_one(name: str, store, p: ComparePreset, lr: float, seed: int, out_dir: str, progress: bool,
             train_samples: Optional[int] = None) -> dict:
    """One training run's summary, from ``OUT/results`` when it finished before."""
    from .io import cached_json

    path = _run_path(out_dir, name, lr, seed, train_samples)
    run_dir = os.path.join(out_dir, "runs", os.path.basename(path)[:-5])
    cfg, key = _train_config(name, p, lr, seed, run_dir, progress, train_samples)
    fingerprint = store.fingerprint()

    def run():
        diffs = checkpoint_differences(run_dir, cfg, fingerprint)
        if diffs:  # interrupted under other settings: kept, not resumed and not overwritten
            kept = os.path.join(run_dir, f"checkpoint.superseded-{time.strftime('%Y%m%dT%H%M%S')}.pt")
            os.replace(os.path.join(run_dir, "checkpoint.pt"), kept)
            print(f"  {os.path.basename(run_dir)}: its checkpoint was written with other settings "
                  f"({'; '.join(diffs)}); kept as {os.path.basename(kept)}, training afresh", flush=True)
        res = train(cfg, store)
        # CPU float sums depend on the thread count, so a run repeats bit for bit only under the same
        # count (--threads; default --jobs N: one per run, --jobs 1: torch's); recorded, not part of the key
        return {"name": name, "lr": lr, "seed": seed, "train_samples": train_samples, "which": key,
                "torch_threads": torch.get_num_threads(), "data_fingerprint": fingerprint, "config": cfg.to_dict(), "test": res["test"][key],
                "valid": res["valid"][-1][key] if res["valid"] else {},
                "best_epoch": res["best_epoch"], "best_valid_auc": res["best_valid_auc"],
                "epochs_trained": res["epochs_trained"], "params": res["params"][key],
                "samples_per_s": res.get("train_samples_per_s"),
                "checkpoint": os.path.join(run_dir, "checkpoint.pt")}

    def upgrade(r: dict) -> dict:
        r = {**r, "config": _result_identity(r.get("config") or {})}
        if "data_fingerprint" not in r:  # written before results recorded their data: said, not hidden
            print(f"  {path}: written before run results recorded the data they trained on; read back as a "
                  f"run on {p.data} (contents {fingerprint}); remove it to retrain if it was not", flush=True)
            r["data_fingerprint"] = fingerprint
        return r

    result, _ = cached_json(path, run, expect={"data_fingerprint": fingerprint,
                                               "config": _result_identity(cfg.to_dict())}, upgrade=upgrade)
    # this folder's copy of the run's weights (the stored path is where it was trained)
    return {**result, "checkpoint": os.path.join(run_dir, "checkpoint.pt")}


def _inference_ms(run: dict, store, max_len: int, K: int = 100) -> Optional[float]:
    """Median ms of one request (a median-length history, K candidates, one pass) on this CPU,
    for the model of a run's checkpoint."""
    from .batch import collate
    from .serving import load_checkpoint_model

    if not os.path.exists(run["checkpoint"]):
        return None
    model = load_checkpoint_model(run["checkpoint"], run["which"]).to("cpu").eval()
    history = median_test_request(store, max_len)
    cands = random_candidates(store.schema, K, seed=K)

    def one_pass():
        with torch.no_grad():
            return model(collate([dict(history, targets=cands, labels=None)]))

    return time_call(one_pass, warmup=2, repeat=7)


def _summary(vals: Sequence[float]) -> dict:
    a = np.asarray(vals, dtype=float)
    ok = a[np.isfinite(a)]
    return {"mean": float(ok.mean()) if ok.size else float("nan"),
            "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0, "values": a.tolist()}


def summarize_runs(rs: Sequence[dict]) -> dict:
    """One entry's runs over seeds (the first seed first): test metrics and best epoch as mean /
    std / values, non-embedding parameters, median training samples/s."""
    out = {m: _summary([r["test"][m] for r in rs]) for m in ("auc", "gauc", "logloss")}
    out["best_epoch"] = _summary([r["best_epoch"] or 0 for r in rs])
    out["non_embedding_params"] = rs[0]["params"]["non_embedding"]
    out["train_samples_per_s"] = float(np.median([r["samples_per_s"] or 0 for r in rs]))
    return out


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired comparison over seeds of ``a - b``: mean difference, t statistic and two-sided p
    (Student's t with n-1 degrees of freedom, scipy; without scipy the exact sign-flip test)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = d.size
    out = {"n": int(n), "mean_diff": float(d.mean()) if n else float("nan")}
    if n < 2:
        return out
    sd = d.std(ddof=1)
    # every seed the same difference: none at all is p = 1, a constant non-zero one p = 0
    no_difference = sd == 0 and d.mean() == 0
    out["t"] = float(d.mean() / (sd / math.sqrt(n))) if sd > 0 else (0.0 if no_difference else
                                                                      float("inf") * np.sign(d.mean()))
    try:
        from scipy import stats

        out["p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (1.0 if no_difference else 0.0)
        out["test"] = "paired t-test"
    except ImportError:
        signs = np.array(np.meshgrid(*[[-1, 1]] * n)).reshape(n, -1).T
        null = np.abs((signs * d).mean(1))
        out["p"] = float((null >= abs(d.mean()) - 1e-15).mean())
        out["test"] = "sign-flip permutation test"
    return out


def click_rate_logits(store, key: str, split: str, strength: float = 5.0) -> np.ndarray:
    """The logit of the training split's click rate of each ``split`` row's ``key`` (a column:
    ``"target.item"``, ``"user"``), smoothed toward the global rate with ``strength`` pseudo-shows:
    a score that uses no model. Shape [rows], float64."""
    train_cols = store.split("train").columns
    cols = store.split(split).columns
    y = np.asarray(train_cols["label"], float)
    prior = float(y.mean())
    ids = np.asarray(train_cols[key], np.int64)
    size = int(max(ids.max(initial=0), np.asarray(cols[key]).max(initial=0))) + 1
    clicks = np.bincount(ids, weights=y, minlength=size)
    shows = np.bincount(ids, minlength=size)
    rate = (clicks + strength * prior) / (shows + strength)
    score = rate[np.asarray(cols[key], np.int64)]
    return np.log(np.clip(score, 1e-6, 1 - 1e-6) / np.clip(1 - score, 1e-6, 1))


REFERENCE_SIGNALS = {"item click rate": "target.item", "user click rate": "user"}


def reference_scores(store) -> Dict[str, dict]:
    """Test AUC / GAUC / LogLoss of two scores that use no model: the target item's and the user's
    click rate on the training split (smoothed toward the global rate)."""
    test_cols = store.split("test").columns
    return {name: ctr_metrics(np.asarray(test_cols["label"]), click_rate_logits(store, key, "test"),
                              np.asarray(test_cols["user"]))
            for name, key in REFERENCE_SIGNALS.items()}


def default_preset(data: Optional[str]) -> str:
    """The preset a comparison on ``data`` uses unless one is named: ``ml100k`` for MovieLens-100K
    (so that ``suan compare --data movielens-100k`` reproduces the README's table), else ``smoke``."""
    return next((name for name, p in COMPARE_PRESETS.items() if data and p.data == data), "smoke")


def run_compare(data: Optional[str], out_dir: str, models: Optional[Sequence[str]] = None,
                preset: Optional[str] = None,
                seeds: Optional[Sequence[int]] = None, data_dir: Optional[str] = None, progress: bool = False,
                jobs: int = 1, threads: Optional[int] = None, **overrides) -> dict:
    """The comparison of the module docstring; ``jobs`` > 1 trains that many runs at a time in
    worker processes. ``threads``: torch threads per run (default: one in a worker, torch's own
    count with one job); a run repeats bit for bit only under the same count."""
    check_jobs(jobs)
    check_threads(threads)
    preset = preset or default_preset(data)
    p = dataclasses.replace(choose_preset(COMPARE_PRESETS, preset, "preset"),
                            **{k: v for k, v in overrides.items() if v is not None})
    if data:
        p = dataclasses.replace(p, data=data)
    entries = list(models) if models else list(p.models or all_models()) + list(p.extra)
    for name in entries:
        parse_entry(name, p.grade)
    p = dataclasses.replace(p, models=tuple(entries), extra=())
    if seeds:
        p = dataclasses.replace(p, seeds=tuple(seeds))
    with RunLock(out_dir, "out"):
        return _run_compare(p, preset, out_dir, data_dir, progress, jobs, threads)


def render_runs_progress(out_dir: str) -> str:
    """``suan report DIR`` on a comparison or distillation study (finished or not): every finished
    run of ``DIR/results`` (its valid and test metrics, best epoch, speed) and the runs in progress
    (a run folder without a result yet), into ``DIR/progress.md``. No aggregates: a partial grid
    would bias them; the command's own report (compare.md, distill.md) has them when it ends."""
    import glob
    import json

    paths = sorted(glob.glob(os.path.join(out_dir, "results", "*.json")))
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    done = {os.path.basename(p)[:-5] for p in paths}
    running = sorted(os.path.basename(d) for d in glob.glob(os.path.join(out_dir, "runs", "*"))
                     if os.path.isdir(d) and os.path.basename(d) not in done)
    lines = [f"# Runs finished so far in `{out_dir}`", "",
             f"{len(rows)} finished; {len(running)} started and not finished"
             + (f" ({', '.join(running)})" if running else "") + ". Re-running the same command resumes "
             "(finished runs are read back, a run in progress continues from its checkpoint).", "",
             "| run | lr | seed | epochs (best) | best valid AUC | test AUC | test GAUC | test LogLoss | "
             "train samples/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def num(x, fmt=".4f"):
        return "-" if x is None else format(x, fmt)

    for r in sorted(rows, key=lambda r: (r["name"], r["lr"], r["seed"])):
        t = r.get("test") or {}
        lines.append(f"| {r['name']} | {r['lr']:g} | {r['seed']} | {r.get('epochs_trained') or '-'} "
                     f"({r.get('best_epoch') or '-'}) | {num(r.get('best_valid_auc'))} | {num(t.get('auc'))} | "
                     f"{num(t.get('gauc'))} | {num(t.get('logloss'))} | {num(r.get('samples_per_s'), '.0f')} |")
    md = "\n".join(lines) + "\n"
    write_text(os.path.join(out_dir, "progress.md"), md)
    return md


def _worker_run(args) -> dict:
    """A run in a worker process (``jobs > 1``), the store opened from its spec."""
    name, p, lr, seed, out_dir, data_dir, tune_n = args
    store = open_data(p.data, data_dir, 0)
    return _run_one(name, store, p, lr, seed, out_dir, False, tune_n)


def _run_all(tasks, store, p, out_dir, data_dir, progress, jobs, threads: Optional[int] = None) -> list:
    """Runs of ``tasks`` [(name, lr, seed, train_samples)], in order, or on ``jobs`` processes;
    ``threads`` torch threads each (None: torch's count in this process, one in a worker)."""
    if jobs <= 1:
        with torch_threads(threads):
            return [_run_one(n, store, p, lr, seed, out_dir, progress, ts) for n, lr, seed, ts in tasks]
    return run_in_processes(_worker_run, [(n, p, lr, seed, out_dir, data_dir, ts) for n, lr, seed, ts in tasks],
                            jobs, os.path.join(out_dir, "results"), threads=threads)


def _run_compare(p: ComparePreset, preset: str, out_dir: str, data_dir: Optional[str], progress: bool,
                 jobs: int = 1, threads: Optional[int] = None) -> dict:
    t0 = time.perf_counter()
    store = open_data(p.data, data_dir, 0)
    n_train = len(store.split("train"))
    tune_n = p.tune_samples if p.tune_samples and p.tune_samples < n_train else None
    print(f"compare on {p.data}: {store.describe()['samples']} samples (history rule "
          f"{store.info.get('history_rule', 'unrecorded')}); grade {p.grade}, up to {p.epochs} epoch(s)"
          f"{f', early stopping after {p.early_stopping}' if p.early_stopping else ''}, batch {p.batch_size}, "
          f"L={p.max_len}, lr grid {list(p.lr_grid)}, seeds {list(p.seeds)}"
          f"{f', {jobs} worker processes' if jobs > 1 else ''}"
          f", {threads or (1 if jobs > 1 else torch.get_num_threads())} torch thread(s) per run", flush=True)
    seed0 = p.seeds[0]
    # phase 1: the learning-rate grid on seed 0's validation AUC (the test split is never looked at);
    # a model whose best rate is at an edge of the grid gets the next rate beyond it (x3 or /3), up
    # to ``grid_extensions`` times, so every model's choice is bracketed
    best_lr = {name: p.lr_grid[0] for name in p.models}
    tuned: Dict[Tuple[str, float], dict] = {}

    def valid_auc(name, lr):
        r = tuned[(name, lr)]
        return r["best_valid_auc"] if r["best_valid_auc"] is not None else r["valid"].get("auc", -math.inf)

    if len(p.lr_grid) > 1:
        grids = {name: sorted(p.lr_grid) for name in p.models}
        pending = [(name, lr) for name in p.models for lr in grids[name]]
        for round_ in range(p.grid_extensions + 1):
            tasks = [(name, lr, seed0, tune_n) for name, lr in pending]
            for (name, lr, _, _), r in zip(tasks, _run_all(tasks, store, p, out_dir, data_dir, progress, jobs, threads)):
                tuned[(name, lr)] = r
                print(f"  {name} lr={lr:g} (tuning, seed {seed0}{f', {tune_n:,} samples' if tune_n else ''}): "
                      f"valid auc {valid_auc(name, lr):.4f} (best epoch {r['best_epoch']})", flush=True)
            pending = []
            if round_ == p.grid_extensions:
                break
            for name in p.models:
                grid = grids[name]
                best = max(grid, key=lambda lr: valid_auc(name, lr))
                step = grid[-1] / grid[-2]
                if best == grid[-1]:
                    pending.append((name, float(f"{best * step:.3g}")))
                elif best == grid[0]:
                    pending.append((name, float(f"{best / (grid[1] / grid[0]):.3g}")))
            for name, lr in pending:
                grids[name] = sorted(grids[name] + [lr])
            if not pending:
                break
        for name in p.models:
            best_lr[name] = max(grids[name], key=lambda lr: valid_auc(name, lr))
    # phase 2: every seed at the chosen rate (seed 0's tuning run reused when it saw all the data)
    runs: Dict[str, Dict[int, dict]] = {name: {} for name in p.models}
    tasks = []
    for name in p.models:
        for seed in p.seeds:
            if seed == seed0 and tune_n is None and (name, best_lr[name]) in tuned:
                runs[name][seed] = tuned[(name, best_lr[name])]
            else:
                tasks.append((name, best_lr[name], seed, None))
    for (name, _, seed, _), r in zip(tasks, _run_all(tasks, store, p, out_dir, data_dir, progress, jobs, threads)):
        runs[name][seed] = r
    results: Dict[str, dict] = {}
    for name in p.models:
        for seed in p.seeds:
            r = runs[name][seed]
            print(f"  {name} lr={best_lr[name]:g} seed={seed}: test auc {r['test']['auc']:.4f} "
                  f"(best epoch {r['best_epoch']} of {r['epochs_trained']})", flush=True)
        kind, grade = parse_entry(name, p.grade)[:2]
        entry = {"lr": best_lr[name], "seeds": list(p.seeds), "grade": grade,
                 "family": "suan" if kind in ("suan", "lightsuan", "lightsuan-distilled") else "baseline"}
        entry.update(summarize_runs([runs[name][s] for s in p.seeds]))
        entry["inference_ms_k100"] = _inference_ms(runs[name][seed0], store, p.max_len)
        results[name] = entry
    report = {"data": p.data, "preset": preset, "history_rule": store.info.get("history_rule"),
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(p).items()},
              "samples": store.describe()["samples"], "models": results, "tests": _paired_tests(results),
              "reference": reference_scores(store), "wall_time_s": time.perf_counter() - t0}
    write_json(os.path.join(out_dir, "compare.json"), report)
    md = format_compare(report)
    write_text(os.path.join(out_dir, "compare.md"), md)
    print(md)
    return report


def _paired_tests(results: Dict[str, dict]) -> Dict[str, dict]:
    """Each SUAN-family entry against the best baseline (by mean test AUC) and against every
    baseline's mean: the margin in units of the larger standard deviation."""
    baselines = {k: v for k, v in results.items() if v["family"] == "baseline"}
    if not baselines:
        return {}
    best = max(baselines, key=lambda k: baselines[k]["auc"]["mean"])
    out = {}
    for name, e in results.items():
        if e["family"] != "suan":
            continue
        t = paired_test(e["auc"]["values"], baselines[best]["auc"]["values"])
        t["against"] = best
        margins = {}
        for b, be in baselines.items():
            spread = max(e["auc"]["std"], be["auc"]["std"], 1e-12)
            margins[b] = (e["auc"]["mean"] - be["auc"]["mean"]) / spread
        t["margin_in_std"] = margins
        t["ahead_of_every_baseline_by_2_std"] = all(m > 2 for m in margins.values())
        out[name] = t
    return out


def format_compare(report: dict) -> str:
    s = report["settings"]
    tune = f"tuning runs on {s['tune_samples']:,} samples" if s.get("tune_samples") else "tuning runs on all samples"
    stop = (f", early stopping after {s['early_stopping']} epoch(s) without a better valid AUC (the best epoch's "
            "weights tested)" if s.get("early_stopping") else "")
    extend = (f"; a best rate at an edge of the grid extends it one outer step further, up to {s['grid_extensions']} times"
              if s.get("grid_extensions") else "")
    lines = [f"Data `{report['data']}` ({report['samples']['train']:,} train / {report['samples']['test']:,} test "
             f"samples, history rule `{report.get('history_rule')}`); grade {s['grade']}, up to {s['epochs']} "
             f"epoch(s){stop}, batch {s['batch_size']}, L={s['max_len']}, dropout {s.get('dropout', 0.0)}, seeds "
             f"{s['seeds']}; learning rate picked from {s['lr_grid']} by seed {s['seeds'][0]}'s valid AUC ({tune}"
             f"{extend}).",
             "", "| model | test AUC | GAUC | LogLoss | best epoch | non-emb params | train samples/s | "
             "ms/request (K=100) | lr |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    best = max(e["auc"]["mean"] for e in report["models"].values())
    for name, e in report["models"].items():
        auc = f"{e['auc']['mean']:.4f} ± {e['auc']['std']:.4f}"
        if e["auc"]["mean"] == best:
            auc = f"**{auc}**"
        ms = e.get("inference_ms_k100")
        be = e.get("best_epoch", {})
        lines.append(f"| {name} | {auc} | {e['gauc']['mean']:.4f} ± {e['gauc']['std']:.4f} | "
                     f"{e['logloss']['mean']:.4f} ± {e['logloss']['std']:.4f} | "
                     f"{be.get('mean', float('nan')):.1f} | {e['non_embedding_params']:,} | "
                     f"{e['train_samples_per_s']:.0f} | {'-' if ms is None else f'{ms:.2f}'} | {e['lr']:g} |")
    ref = report.get("reference") or {}
    if ref:
        lines += ["", "Reference scores without a model (training-split click rates, smoothed):", "",
                  "| score | test AUC | GAUC | LogLoss |", "|---|---:|---:|---:|"]
        for name, m in ref.items():
            lines.append(f"| {name} | {m['auc']:.4f} | {m['gauc']:.4f} | {m['logloss']:.4f} |")
    tests = report.get("tests") or {}
    if tests:
        lines += ["", "Paired test over seeds (test AUC) against the best baseline; margin over each baseline in "
                  "units of the larger of the two standard deviations:", "",
                  "| model | vs | mean diff | t | p | smallest margin (std) | ahead of every baseline by > 2 std |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for name, t in tests.items():
            smallest = min(t["margin_in_std"].items(), key=lambda kv: kv[1])
            lines.append(f"| {name} | {t['against']} | {t['mean_diff']:+.4f} | {t.get('t', float('nan')):.2f} | "
                         f"{t.get('p', float('nan')):.3f} | {smallest[1]:+.1f} ({smallest[0]}) | "
                         f"{'yes' if t['ahead_of_every_baseline_by_2_std'] else 'no'} |")
    lines.append("")
    lines.append(f"wall time {report['wall_time_s'] / 60:.1f} min")
    return "\n".join(lines)
