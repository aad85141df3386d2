"""Scaling laws (SPEC sections 1, 4, 5): grade x data-size sweeps, power-law fits, distillation curve.

``run_scaling`` trains one SUAN per (grade, data size) on a nested subset of D training samples
(one epoch, or with a preset's ``epoch_budget`` up to ``max_epochs`` epochs with early stopping on
valid AUC, so that small D are not just undertrained); each run's result is one JSON file: a
finished run is skipped, so a sweep resumes, evaluates test LogLoss / AUC / GAUC, and fits

    loss(N) = E + A * N^-alpha        over non-embedding parameters, at the largest D
    loss(D) = E + B * D^-beta         over training samples, at the largest grade
    loss(N, D) = E + A * N^-alpha + B * D^-beta   over every run

by variable projection (a grid over the exponents, linear least squares for E, A, B with A, B,
E >= 0), with R^2 and bootstrap (over runs) 95% intervals. ``distill=True`` adds the
distillation curve: a fixed LightSUAN student trained with online distillation from SUAN
teachers of growing grade, next to plain SUAN at each grade, to test the paper's claim that the
distilled LightSUAN beats SUAN one grade higher.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .config import GRADE_BY_NAME, get_grade
from .rundir import RunLock
from .errors import UserError
from .io import save_figure, write_json, write_text
from .workers import check_jobs, check_threads, run_in_processes, torch_threads
from .plotting import INSTALL_HINT, pyplot
from .defaults import SCALING_PRESETS, ScalingPreset, preset as choose_preset


# ----------------------------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------------------------
def _nnls_small(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients for a handful of columns (exhaustive active set)."""
    k = X.shape[1]
    best, best_sse = np.zeros(k), float(((y) ** 2).sum())
    for mask in range(1, 1 << k):
        cols = [i for i in range(k) if mask >> i & 1]
        coef, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
        if (coef < 0).any():
            continue
        full = np.zeros(k)
        full[cols] = coef
        sse = float(((X @ full - y) ** 2).sum())
        if sse < best_sse:
            best, best_sse = full, sse
    return best


def fit_power_law(x: np.ndarray, y: np.ndarray, exponents: np.ndarray = np.linspace(0.01, 2.0, 200)) -> dict:
    """y = E + A * x^-alpha; returns E, A, alpha, r2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    best = None
    scale = x.min()
    for a in exponents:
        X = np.stack([np.ones_like(x), (x / scale) ** -a], 1)
        coef = _nnls_small(X, y)
        sse = float(((X @ coef - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, a, coef)
    sse, a, coef = best
    sst = float(((y - y.mean()) ** 2).sum())
    return {"E": float(coef[0]), "A": float(coef[1] * scale ** a), "alpha": float(a),
            "r2": 1 - sse / sst if sst > 0 else float("nan"), "n": int(len(x))}


def fit_joint(N: np.ndarray, D: np.ndarray, y: np.ndarray, exponents: np.ndarray = np.linspace(0.02, 1.5, 60)) -> dict:
    """y = E + A N^-alpha + B D^-beta."""
    N, D, y = (np.asarray(v, float) for v in (N, D, y))
    sn, sd = N.min(), D.min()
    best = None
    for a in exponents:
        for b in exponents:
            X = np.stack([np.ones_like(N), (N / sn) ** -a, (D / sd) ** -b], 1)
            coef = _nnls_small(X, y)
            sse = float(((X @ coef - y) ** 2).sum())
            if best is None or sse < best[0]:
                best = (sse, a, b, coef)
    sse, a, b, coef = best
    sst = float(((y - y.mean()) ** 2).sum())
    return {"E": float(coef[0]), "A": float(coef[1] * sn ** a), "alpha": float(a), "B": float(coef[2] * sd ** b),
            "beta": float(b), "r2": 1 - sse / sst if sst > 0 else float("nan"), "n": int(len(y))}


def bootstrap(fn, arrays: List[np.ndarray], keys: Sequence[str], n: int = 200, seed: int = 0) -> Dict[str, List[float]]:
    """95% percentile intervals of fitted values, resampling runs with replacement."""
    rng = np.random.default_rng(seed)
    m = len(arrays[0])
    samples = {k: [] for k in keys}
    for _ in range(n):
        idx = rng.integers(0, m, m)
        if len(np.unique(idx)) < 3:
            continue
        try:
            res = fn(*[a[idx] for a in arrays])
        except Exception:
            continue
        for k in keys:
            samples[k].append(res[k])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else [float("nan")] * 2
            for k, v in samples.items()}


def fit_all(runs: List[dict], n_boot: int = 200) -> dict:
    """The three fits over finished runs (loss = test LogLoss)."""
    N = np.array([r["non_embedding_params"] for r in runs], float)
    D = np.array([r["train_samples"] for r in runs], float)
    y = np.array([r["test"]["logloss"] for r in runs], float)
    fits = {}
    d_max, n_max = D.max(), N.max()
    sel = D == d_max
    if sel.sum() >= 3:
        f = fit_power_law(N[sel], y[sel])
        f["ci95"] = bootstrap(fit_power_law, [N[sel], y[sel]], ["alpha", "E", "A"], n_boot)
        f["at_train_samples"] = int(d_max)
        fits["params"] = f
    sel = N == n_max
    if sel.sum() >= 3:
        f = fit_power_law(D[sel], y[sel])
        f["ci95"] = bootstrap(fit_power_law, [D[sel], y[sel]], ["alpha", "E", "A"], n_boot)
        fits["data"] = {"beta": f["alpha"], "B": f["A"], "E": f["E"], "r2": f["r2"], "n": f["n"],
                        "ci95": {"beta": f["ci95"]["alpha"], "E": f["ci95"]["E"], "B": f["ci95"]["A"]},
                        "at_non_embedding_params": int(n_max)}
    if len(y) >= 5 and len(np.unique(N)) >= 2 and len(np.unique(D)) >= 2:
        f = fit_joint(N, D, y)
        f["ci95"] = bootstrap(fit_joint, [N, D, y], ["alpha", "beta", "E"], max(20, n_boot // 4))
        fits["joint"] = f
    return fits


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------
def _lr_tag(base_lr: Optional[float], lr: Optional[float]) -> str:
    """'' for the preset's own rate ``base_lr`` (the names of sweeps made before per-grade rates),
    else -lr<lr>."""
    return "" if lr is None or base_lr is None or lr == base_lr else f"-lr{lr:g}"


def _run_path(out_dir, kind, grade, size, teacher=None, lr_tag=""):
    name = f"{kind}-{grade}-D{size}" + (f"-T{teacher}" if teacher else "") + lr_tag
    return os.path.join(out_dir, "runs", name + ".json")


def _tmp_dir(out_dir, grade, size, teacher=None, lr_tag=""):
    return os.path.join(out_dir, "tmp", f"{grade}-{size}-{teacher}{lr_tag}")


def _valid_epochs(res: dict, side: str = "model") -> List[dict]:
    """Every epoch's valid {auc, logloss, epoch} of a run."""
    out = []
    for entry in res.get("valid") or []:
        m = entry.get(side) or entry.get("model") or {}
        out.append({"auc": m.get("auc"), "logloss": m.get("logloss"), "epoch": entry.get("epoch")})
    return out


def _best_valid(res: dict, side: str = "model") -> Optional[dict]:
    """The valid metrics of the epoch a run kept (its best, else its last): {auc, logloss, epoch}."""
    epochs = _valid_epochs(res, side)
    return next((e for e in epochs if e["epoch"] == res.get("best_epoch")), epochs[-1]) if epochs else None


def _lowest_logloss(epochs: List[dict]) -> Optional[dict]:
    """The epoch with the lowest valid LogLoss (what chooses a grade's rate), None without one."""
    scored = [e for e in epochs or [] if e.get("logloss") is not None]
    return min(scored, key=lambda e: e["logloss"]) if scored else None


def _train(store, p: ScalingPreset, grade: str, size: int, out_dir: str, teacher: Optional[str] = None,
           progress: bool = False, lr: Optional[float] = None) -> dict:
    from .train import TrainConfig, short_run, train

    # a long run checkpoints every few hundred steps and resumes (its settings checked) when the
    # sweep is restarted, so no more than that is lost to an interruption
    lr = p.lr if lr is None else lr
    n = min(size, len(store.split("train")))
    epochs = min(p.max_epochs, max(1, round(p.epoch_budget / n))) if p.epoch_budget else 1
    common = short_run(grade=grade, epochs=epochs, batch_size=p.batch_size, max_len=p.max_len, lr=lr,
                       embedding_lr=lr, train_samples=size, progress=progress, resume=True, checkpoint_every=300,
                       early_stopping=1 if epochs > 1 else 0, select_on=p.select_on, cpu_bf16=p.cpu_bf16)
    tmp = _tmp_dir(out_dir, grade, size, teacher, _lr_tag(p.lr, lr))
    t0 = time.perf_counter()
    if teacher:
        from .compare import distill_config

        cfg = distill_config(teacher, out_dir=tmp, **common)
    else:
        cfg = TrainConfig(model="suan", out_dir=tmp, **common)
    _set_aside_other_checkpoint(tmp, cfg, store.fingerprint())
    res = train(cfg, store)
    out = {"grade": grade, "train_samples": int(n), "seconds": time.perf_counter() - t0,
           "train_samples_per_s": res.get("train_samples_per_s"), "epochs": epochs, "lr": lr,
           "selected_on": p.select_on, "cpu_bf16": p.cpu_bf16,
           "best_epoch": res.get("best_epoch"), "epochs_trained": res.get("epochs_trained"),
           "valid": _best_valid(res, "student" if teacher else "model"),
           "valid_epochs": _valid_epochs(res, "student" if teacher else "model")}
    if teacher:
        out.update({"teacher": teacher, "test": res["test"]["student"], "teacher_test": res["test"]["teacher"],
                    "non_embedding_params": res["params"]["student"]["non_embedding"],
                    "teacher_non_embedding_params": res["params"]["teacher"]["non_embedding"]})
    else:
        out.update({"test": res["test"]["model"], "non_embedding_params": res["params"]["model"]["non_embedding"]})
    return out


def _run_once(path: str, run, current=None, tmp_dir: Optional[str] = None, tuning: bool = False
              ) -> Tuple[dict, bool]:
    """The result stored at ``path`` (and True), or ``run()``'s, written there atomically (and False):
    a rerun of the sweep skips finished runs. A stored result that ``current(result)`` rejects (made
    under an older protocol) is moved with its ``tmp_dir`` to ``superseded/`` (kept, not deleted)
    and trained again; if it was a learning-rate ``tuning`` run, its valid metrics stay in the new
    result as ``tuning`` (the rate was chosen on them, and a re-training for the law's protocol
    does not reopen that choice)."""
    old = _read_run(path)
    if old is not None:
        if current is None or current(old):
            return old, True
        _supersede(path, tmp_dir)
    r = run()
    if tuning and old is not None and old.get("valid_epochs"):
        # the run it replaces was a learning-rate tuning run: its evidence stays the choice's
        r["tuning"] = old.get("tuning") or {k: old.get(k) for k in ("valid_epochs", "lr", "selected_on", "cpu_bf16")}
    write_json(path, r)
    return r, False


def _read_run(path: str) -> Optional[dict]:
    """A stored run's result, or None where there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _supersede(path: Optional[str], tmp_dir: Optional[str]) -> None:
    """Move a run file (``OUT/runs/X.json``) and / or its ``OUT/tmp/`` folder to
    ``OUT/superseded/<time>/``: kept, out of the sweep's way."""
    out_dir = os.path.dirname(os.path.dirname(path or tmp_dir))
    dest = os.path.join(out_dir, "superseded", time.strftime("%Y%m%d-%H%M%S"))
    if path:
        os.makedirs(os.path.join(dest, "runs"), exist_ok=True)
        os.replace(path, os.path.join(dest, "runs", os.path.basename(path)))
    if tmp_dir and os.path.isdir(tmp_dir):
        os.makedirs(os.path.join(dest, "tmp"), exist_ok=True)
        os.replace(tmp_dir, os.path.join(dest, "tmp", os.path.basename(tmp_dir)))
    print(f"  {os.path.basename(path or tmp_dir)}: made under an older protocol, moved to {dest}; training it "
          "again", flush=True)


def _set_aside_other_checkpoint(tmp: str, cfg, data_fingerprint: Optional[str] = None) -> None:
    """A run interrupted under other settings (the sweep's protocol changed since) would refuse to
    resume: its folder is set aside (``_supersede``) and the run starts afresh."""
    from .train import checkpoint_differences

    if checkpoint_differences(tmp, cfg, data_fingerprint):
        _supersede(None, tmp)


def _run_protocol(r: dict) -> Tuple[str, bool]:
    """(the valid score that kept its epoch, bf16 on CPU) of a stored run; runs stored before these
    settings existed selected on AUC, in float32."""
    return r.get("selected_on", "auc"), r.get("cpu_bf16", False)


def _made_as(p: ScalingPreset):
    """Whether a stored run was made under the preset's protocol (``select_on``, ``cpu_bf16``)."""
    return lambda r: _run_protocol(r) == (p.select_on, p.cpu_bf16)


def _tune_size(p: ScalingPreset, sizes: Sequence[int], n_train: int) -> int:
    """The D of the learning-rate tuning runs (the smallest data size without ``tune_size``)."""
    return min(p.tune_size or min(sizes), n_train)


def _valid_of(path: str, r: dict, p: ScalingPreset, out_dir: str, grade: str, size: int, lr: float
              ) -> Optional[dict]:
    """A run's lowest valid LogLoss over its epochs, {auc, logloss, epoch} of that epoch; runs stored
    before the valid metrics were recorded get them from their own results in ``tmp/`` (and the run
    file is rewritten with them)."""
    if not r.get("valid_epochs"):
        res_path = os.path.join(_tmp_dir(out_dir, grade, size, None, _lr_tag(p.lr, lr)), "results.json")
        if not os.path.exists(res_path):
            return None
        with open(res_path) as f:
            res = json.load(f)
        r = {**r, "lr": r.get("lr", lr), "valid": _best_valid(res), "valid_epochs": _valid_epochs(res)}
        write_json(path, r)
    return _lowest_logloss((r.get("tuning") or r)["valid_epochs"])


def choose_learning_rates(store, p: ScalingPreset, out_dir: str, sizes: Sequence[int], progress: bool = False,
                          on_choice=None) -> Tuple[Dict[str, float], List[dict]]:
    """Per grade, the rate of ``p.lr_grid`` with the lowest valid LogLoss (over a run's epochs) at
    ``p.tune_size`` samples (its runs are ordinary runs of the sweep, kept and reused); ``p.lr`` for
    all without a grid. Over the epochs, not at the epoch a run keeps: tuning runs made before runs
    selected on LogLoss kept their best valid AUC epoch, and a fast rate's later epochs can gain AUC
    while their LogLoss has already turned (g4 at 3e-4 kept epoch 3, LogLoss 0.620; epoch 1 had 0.589).
    ``on_choice(chosen_so_far)`` is called after each grade (the sweep records it in its plan)."""
    if not p.lr_grid:
        return {g: p.lr for g in p.grades}, []
    tune = _tune_size(p, sizes, len(store.split("train")))
    chosen, rows = {}, []
    for grade in p.grades:
        scores = []

        def score(lr):
            path = _run_path(out_dir, "suan", grade, tune, lr_tag=_lr_tag(p.lr, lr))
            r, _ = _run_once(path, lambda: _train(store, p, grade, tune, out_dir, progress=progress, lr=lr))
            v = _valid_of(path, r, p, out_dir, grade, tune, lr)
            if v is None or v.get("logloss") is None:
                raise UserError(f"{path}: no valid metrics to choose a learning rate from (its tmp/ results are "
                                "gone); delete the run file to train it again")
            scores.append((v["logloss"], lr))
            rows.append({"grade": grade, "lr": lr, "train_samples": tune, "valid_logloss": v["logloss"],
                         "valid_auc": v["auc"], "epoch": v.get("epoch")})

        grid = sorted(p.lr_grid)
        for lr in grid:
            score(lr)
        for _ in range(p.grid_extensions if len(grid) > 1 else 0):
            best = min(scores)[1]
            if best == grid[0]:
                new = float(f"{best / (grid[1] / grid[0]):.3g}")
            elif best == grid[-1]:
                new = float(f"{best * (grid[-1] / grid[-2]):.3g}")
            else:
                break
            score(new)
            grid = sorted(grid + [new])
        chosen[grade] = min(scores)[1]
        if on_choice is not None:
            on_choice(dict(chosen))
        for row in rows[-len(scores):]:
            row["chosen"] = row["lr"] == chosen[grade]
        print(f"  {grade}: learning rate {chosen[grade]:g} (valid LogLoss at D={tune}: "
              + ", ".join(f"{lr:g} -> {ll:.4f}" for ll, lr in scores) + ")", flush=True)
    return chosen, rows


def run_scaling(out_dir: str, preset: str = "smoke", distill: bool = False, data: Optional[str] = None,
                data_dir: Optional[str] = None, progress: bool = False, n_boot: int = 200, jobs: int = 1,
                threads: Optional[int] = None) -> dict:
    """The sweep (resumable: finished runs are kept and skipped). ``jobs`` > 1 trains that many grid
    runs at a time, each in a process of its own with one thread (``threads`` to change it), the
    longest first."""
    check_jobs(jobs)
    check_threads(threads)
    p = choose_preset(SCALING_PRESETS, preset, "preset")
    if data:
        p = dataclasses.replace(p, data=data)
    for g in list(p.grades) + list(p.distill_teachers) + [p.student_grade]:
        get_grade(g)
    with RunLock(out_dir, "out"), torch_threads(threads):  # this process's runs; a worker sets its own
        return _run_scaling(p, preset, out_dir, distill, data_dir, progress, n_boot, jobs, threads)


def _grid_run(store, p: ScalingPreset, out_dir: str, grade: str, size: int, lr: float, tuning: bool,
              progress: bool) -> Tuple[dict, bool]:
    """One grid run (grade, data size) at rate ``lr``: its stored result (and True) or a new one."""
    # a learning-rate tuning run may have been made under an older protocol (its choice reads
    # valid LogLoss over the epochs, whatever epoch it kept, in whatever precision); a run the law
    # is fitted on must follow the preset's rules
    return _run_once(_grid_path(p, out_dir, grade, size, lr),
                     lambda: _train(store, p, grade, size, out_dir, progress=progress, lr=lr),
                     current=_made_as(p), tmp_dir=_tmp_dir(out_dir, grade, size, None, _lr_tag(p.lr, lr)),
                     tuning=tuning)


def _grid_path(p: ScalingPreset, out_dir: str, grade: str, size: int, lr: float) -> str:
    return _run_path(out_dir, "suan", grade, size, lr_tag=_lr_tag(p.lr, lr))


def _grid_worker(args) -> Tuple[dict, bool]:
    """A grid run in a worker process (``jobs`` > 1), the store opened from its spec."""
    from .train import open_data

    p, out_dir, data_dir, grade, size, lr, tuning = args
    return _grid_run(open_data(p.data, data_dir, 0), p, out_dir, grade, size, lr, tuning, False)


def _stored_run(p: ScalingPreset, out_dir: str, grade: str, size: int, lr: float) -> Optional[dict]:
    """A grid run's stored result if it follows the preset's rules (``_run_once`` would keep it)."""
    r = _read_run(_grid_path(p, out_dir, grade, size, lr))
    return r if r is not None and _made_as(p)(r) else None


def _run_scaling(p: ScalingPreset, preset: str, out_dir: str, distill: bool, data_dir: Optional[str], progress: bool,
                 n_boot: int, jobs: int = 1, threads: Optional[int] = None) -> dict:
    from .train import open_data

    t0 = time.perf_counter()
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    store = open_data(p.data, data_dir, 0)
    n_train = len(store.split("train"))
    sizes = sorted({min(s, n_train) for s in p.data_sizes})
    print(f"scaling '{preset}' on {p.data} ({n_train:,} train samples): grades {list(p.grades)} x D {sizes}", flush=True)
    # the plan, so that `suan report` can show a sweep's progress before it finishes; a resumed
    # sweep keeps the time its first part started
    plan = {"preset": preset, "data": p.data, "grades": list(p.grades), "data_sizes": sizes}
    plan_path = os.path.join(out_dir, "plan.json")
    started = time.strftime("%Y-%m-%d %H:%M")
    lr_info = {"lr": p.lr, "lr_grid": list(p.lr_grid), "tune_size": p.tune_size, "select_on": p.select_on,
               "cpu_bf16": p.cpu_bf16}
    before = {}
    if os.path.exists(plan_path):
        try:
            with open(plan_path) as f:
                before = json.load(f)
            before = before if isinstance(before, dict) else {}
            if all(before.get(k) == v for k, v in plan.items()):
                started = before.get("started", started)
        except (OSError, ValueError):
            pass
    # the stored runs are keyed by grade and size, not by data: a folder holds one dataset's sweep
    fingerprint = store.fingerprint()
    if before.get("data_fingerprint") not in (None, fingerprint):
        raise UserError(f"out: {out_dir} holds a sweep on other data (contents {before['data_fingerprint']}, "
                        f"{before.get('data')!r}; now {fingerprint}, {p.data!r}); use another --out")
    if "data_fingerprint" not in before and glob.glob(os.path.join(out_dir, "runs", "*.json")):
        print(f"  {out_dir}: its runs were stored before sweeps recorded their data; they are read back as runs "
              f"on {p.data} (contents {fingerprint})", flush=True)
    lr_info["data_fingerprint"] = fingerprint
    write_json(plan_path, {**plan, **lr_info, "started": started})
    lr_by_grade, lr_tuning = choose_learning_rates(
        store, p, out_dir, sizes, progress,
        on_choice=lambda so_far: write_json(plan_path, {**plan, **lr_info, "lr_by_grade": so_far, "started": started}))
    write_json(plan_path, {**plan, **lr_info, "lr_by_grade": lr_by_grade, "started": started})
    tune_size = _tune_size(p, sizes, n_train)
    grid = [(grade, size, lr_by_grade[grade], bool(lr_tuning) and size == tune_size)
            for size in sizes for grade in p.grades]

    def say(grade, size, r, before):
        if before:
            print(f"  {grade} D={size}: done before (logloss {r['test']['logloss']:.4f})", flush=True)
        else:
            print(f"  {grade} D={size}: logloss {r['test']['logloss']:.4f} auc {r['test']['auc']:.4f} "
                  f"({r['seconds']:.0f} s)", flush=True)

    if jobs <= 1:
        runs = []
        for grade, size, lr, tuning in grid:
            r, before = _grid_run(store, p, out_dir, grade, size, lr, tuning, progress)
            say(grade, size, r, before)
            runs.append(r)
    else:
        runs = [_stored_run(p, out_dir, grade, size, lr) for grade, size, lr, _ in grid]
        for (grade, size, _, _), r in zip(grid, runs):
            if r is not None:
                say(grade, size, r, True)
        # the longest runs first (grade, then data size), so that the last ones to start are short
        order = sorted((i for i, r in enumerate(runs) if r is None),
                       key=lambda i: (list(p.grades).index(grid[i][0]), grid[i][1]), reverse=True)
        if order:
            print(f"  {len(order)} run(s) to train on {min(jobs, len(order))} worker processes", flush=True)

            def done(k, result):
                i = order[k]
                say(grid[i][0], grid[i][1], result[0], result[1])

            tasks = [(p, out_dir, data_dir, *grid[i]) for i in order]
            for i, (r, _) in zip(order, run_in_processes(_grid_worker, tasks, min(jobs, len(order)),
                                                         os.path.join(out_dir, "runs"), on_result=done,
                                                         threads=threads)):
                runs[i] = r
    curve = []
    if distill:
        size = min(p.distill_size or max(sizes), n_train)
        lr = lr_by_grade.get(p.student_grade, p.lr)  # the student's rate, shared by the joint run
        for teacher in p.distill_teachers:
            r, _ = _run_once(_run_path(out_dir, "distill", p.student_grade, size, teacher, _lr_tag(p.lr, lr)),
                             lambda: _train(store, p, p.student_grade, size, out_dir, teacher=teacher,
                                            progress=progress, lr=lr),
                             current=_made_as(p), tmp_dir=_tmp_dir(out_dir, p.student_grade, size, teacher,
                                                                       _lr_tag(p.lr, lr)))
            print(f"  LightSUAN {p.student_grade} distilled from SUAN {teacher} (D={size}): auc "
                  f"{r['test']['auc']:.4f}", flush=True)
            curve.append(r)
    result = {"preset": preset, "data": p.data, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                            for k, v in dataclasses.asdict(p).items()},
              "oracle": store.info.get("oracle_auc"), "fits": fit_all(runs, n_boot), "runs": runs,
              "lr_by_grade": lr_by_grade, "lr_tuning": lr_tuning}
    if distill:
        result["distill"] = _distill_summary(curve, runs, p)
    result["wall_time_s"] = time.perf_counter() - t0
    write_json(os.path.join(out_dir, "scaling.json"), result)
    plot_scaling(result, out_dir)
    print(format_fits(result))
    return result


def _distill_summary(curve: List[dict], runs: List[dict], p: ScalingPreset) -> dict:
    size = curve[0]["train_samples"] if curve else None
    suan_at = {r["grade"]: r["test"]["auc"] for r in runs if r["train_samples"] == size}
    order = [g.name for g in GRADE_BY_NAME.values()]
    def idx(g):
        return order.index(get_grade(g).name)
    rows = []
    for r in curve:
        rows.append({"teacher": r["teacher"], "student_auc": r["test"]["auc"], "teacher_auc": r["teacher_test"]["auc"],
                     "suan_auc_at_teacher_grade": suan_at.get(r["teacher"])})
    student = get_grade(p.student_grade).name
    one_up = None
    for g in p.grades:
        if idx(g) == idx(student) + 1:
            one_up = g
    claim = None
    if one_up is not None and one_up in suan_at and rows:
        best_student = max(r["student_auc"] for r in rows)
        claim = {"student_grade": p.student_grade, "suan_one_grade_higher": one_up,
                 "suan_one_grade_higher_auc": suan_at[one_up], "best_distilled_student_auc": best_student,
                 "holds": best_student > suan_at[one_up]}
    return {"train_samples": size, "student_grade": p.student_grade,
            "student_alone_suan_auc": suan_at.get(p.student_grade), "curve": rows, "claim": claim}


# ----------------------------------------------------------------------------------------------
# Plots and report
# ----------------------------------------------------------------------------------------------
def plot_scaling(result: dict, out_dir: str) -> List[str]:
    """scaling.png (and distillation.png); none without matplotlib (one notice line)."""
    plt = pyplot("scaling plots")
    if plt is None:
        return []
    import matplotlib.ticker

    runs = result["runs"]
    fits = result["fits"]

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        return path

    def panel(ax, x_key, group_key, group_label, fit, coef, exponent, xlabel):
        """Test LogLoss against ``x_key`` on log-log axes, one line per ``group_key`` value, plus the fit."""
        for gv in sorted({r[group_key] for r in runs}):
            pts = sorted((r[x_key], r["test"]["logloss"]) for r in runs if r[group_key] == gv)
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", label=group_label(gv))
        if fit is not None:
            xs = np.geomspace(min(r[x_key] for r in runs), max(r[x_key] for r in runs), 50)
            ax.plot(xs, fit["E"] + fit[coef] * xs ** -fit[exponent], "k--",
                    label=f"fit: {exponent}={fit[exponent]:.3f}, R2={fit['r2']:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # plain decimals on the log loss axis, not 6x10^-1
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3f"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.3f"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test LogLoss")
        ax.legend(fontsize=8)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    panel(a1, "non_embedding_params", "train_samples", lambda D: f"D={D:,}", fits.get("params"), "A", "alpha",
          "non-embedding parameters N")
    panel(a2, "train_samples", "grade", str, fits.get("data"), "B", "beta", "training samples D")
    files = [save(fig, "scaling.png")]
    d = result.get("distill")
    if d and d["curve"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        teachers = [r["teacher"] for r in d["curve"]]
        ax.plot(teachers, [r["student_auc"] for r in d["curve"]], "o-", label=f"LightSUAN {d['student_grade']} distilled")
        ax.plot(teachers, [r["suan_auc_at_teacher_grade"] for r in d["curve"]], "s--", label="SUAN at that grade")
        ax.plot(teachers, [r["teacher_auc"] for r in d["curve"]], "^:", label="the teacher (joint run)")
        if d.get("student_alone_suan_auc") is not None:
            ax.axhline(d["student_alone_suan_auc"], color="gray", lw=1, label=f"SUAN {d['student_grade']}")
        ax.set_xlabel("teacher grade")
        ax.set_ylabel("test AUC")
        ax.legend(fontsize=8)
        files.append(save(fig, "distillation.png"))
    return files


def _ci(f, key):
    ci = f.get("ci95", {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def format_fits(result: dict) -> str:
    fits = result["fits"]
    out = []
    if "params" in fits:
        f = fits["params"]
        out.append(f"loss(N) = {f['E']:.4f} + {f['A']:.3g} N^-{f['alpha']:.3f}{_ci(f, 'alpha')}  R2={f['r2']:.3f} "
                   f"(D={f['at_train_samples']:,})")
    if "data" in fits:
        f = fits["data"]
        out.append(f"loss(D) = {f['E']:.4f} + {f['B']:.3g} D^-{f['beta']:.3f}{_ci(f, 'beta')}  R2={f['r2']:.3f} "
                   f"(N={f['at_non_embedding_params']:,})")
    if "joint" in fits:
        f = fits["joint"]
        out.append(f"loss(N,D) = {f['E']:.4f} + {f['A']:.3g} N^-{f['alpha']:.3f}{_ci(f, 'alpha')} + "
                   f"{f['B']:.3g} D^-{f['beta']:.3f}{_ci(f, 'beta')}  R2={f['r2']:.3f}")
    return "\n".join(out)


def render_report(out_dir: str) -> str:
    """``suan report DIR``: a Markdown page with the tables, fitted exponents and plots."""
    path = os.path.join(out_dir, "scaling.json")
    if not os.path.exists(path):
        if os.path.exists(os.path.join(out_dir, "plan.json")):
            return render_progress(out_dir)
        raise FileNotFoundError(f"{path}: run `suan scaling --out {out_dir}` first")
    with open(path) as f:
        res = json.load(f)
    lines = [f"# Scaling report: preset `{res['preset']}` on `{res['data']}`", ""]
    if res.get("oracle"):
        lines.append(f"Ground-truth (oracle) test AUC of the synthetic data: {res['oracle'].get('test', float('nan')):.4f}.")
        lines.append("")
    lines += ["## Fits (loss = test LogLoss)", "", "```", format_fits(res), "```", "",
              "95% intervals from bootstrap over runs. `params`: at the largest data size; `data`: at the "
              "largest grade; `joint`: all runs. Exponents are searched on a bounded grid (0.01-2.0; joint 0.02-1.5): an interval "
              "that ends at a grid edge is not bounded by the data.", "",
              "## Runs", "", "| grade | non-emb params | train samples | lr | test LogLoss | AUC | GAUC | seconds |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base_lr = res.get("settings", {}).get("lr")
    for r in sorted(res["runs"], key=lambda r: (r["train_samples"], r["non_embedding_params"])):
        t = r["test"]
        lr = r.get("lr", base_lr)
        lines.append(f"| {r['grade']} | {r['non_embedding_params']:,} | {r['train_samples']:,} | "
                     f"{'-' if lr is None else f'{lr:g}'} | {t['logloss']:.4f} | "
                     f"{t['auc']:.4f} | {t.get('gauc', float('nan')):.4f} | {r['seconds']:.0f} |")
    if res.get("lr_tuning"):
        lines += ["", "## Learning rate per grade (lowest valid LogLoss over a run's epochs; the test split never "
                  "chooses)", "", "| grade | lr | train samples | valid LogLoss | valid AUC | epoch | chosen |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in res["lr_tuning"]:
            lines.append(f"| {row['grade']} | {row['lr']:g} | {row['train_samples']:,} | {row['valid_logloss']:.4f} | "
                         f"{row['valid_auc']:.4f} | {row.get('epoch') or '-'} | {'yes' if row.get('chosen') else ''} |")
    if os.path.exists(os.path.join(out_dir, "scaling.png")):
        lines += ["", "![scaling](scaling.png)", ""]
    else:
        lines += ["", f"(No plots: matplotlib is not installed; {INSTALL_HINT}, then `suan report {out_dir}`.)", ""]
    d = res.get("distill")
    if d:
        lines += [f"## Distillation curve (LightSUAN {d['student_grade']} student, D={d['train_samples']:,})", "",
                  "| teacher | distilled student AUC | teacher AUC (joint run) | SUAN AUC at the teacher's grade |",
                  "|---|---:|---:|---:|"]
        for r in d["curve"]:
            s = r["suan_auc_at_teacher_grade"]
            lines.append(f"| {r['teacher']} | {r['student_auc']:.4f} | {r['teacher_auc']:.4f} | "
                         f"{'-' if s is None else f'{s:.4f}'} |")
        c = d.get("claim")
        if c:
            lines += ["", f"Claim (distilled LightSUAN beats SUAN one grade higher): best distilled {c['student_grade']} "
                      f"student {c['best_distilled_student_auc']:.4f} vs SUAN {c['suan_one_grade_higher']} "
                      f"{c['suan_one_grade_higher_auc']:.4f}: **{'holds' if c['holds'] else 'does not hold'}** here."]
        if os.path.exists(os.path.join(out_dir, "distillation.png")):
            lines += ["", "![distillation](distillation.png)", ""]
    lines.append(f"Wall time: {res.get('wall_time_s', 0) / 60:.1f} min.")
    md = "\n".join(lines) + "\n"
    write_text(os.path.join(out_dir, "report.md"), md)
    return md


def render_progress(out_dir: str) -> str:
    """``suan report DIR`` on a sweep that has not finished: its finished runs and what is left
    (no fits: a partial grid would bias them), into ``DIR/progress.md``."""
    with open(os.path.join(out_dir, "plan.json")) as f:
        plan = json.load(f)
    done = {}
    base_lr, lr_by_grade = plan.get("lr"), plan.get("lr_by_grade") or {}
    for grade in plan["grades"]:
        if plan.get("lr_grid") and grade not in lr_by_grade:
            continue  # its rate is not chosen yet: no run of the grid counts
        for size in plan["data_sizes"]:
            path = _run_path(out_dir, "suan", grade, size, lr_tag=_lr_tag(base_lr, lr_by_grade.get(grade)))
            if os.path.exists(path):
                with open(path) as f:
                    r = json.load(f)
                # a run made under an older protocol is trained again when the sweep resumes
                if _run_protocol(r) == (plan.get("select_on", "auc"), plan.get("cpu_bf16", False)):
                    done[(grade, size)] = r
    total = len(plan["grades"]) * len(plan["data_sizes"])
    lines = [f"# Scaling sweep in progress: preset `{plan['preset']}` on `{plan['data']}`", "",
             f"{len(done)} of {total} runs finished (started {plan['started']}); `suan scaling --preset "
             f"{plan['preset']} --out {out_dir}` resumes it (finished runs are skipped, a run in progress "
             "continues from its last checkpoint). Fits are made when the grid is complete.", "",
             "| grade | non-emb params | train samples | epochs (best) | test LogLoss | AUC | GAUC | train samples/s "
             "| seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (grade, size), r in sorted(done.items(), key=lambda kv: (kv[0][1], kv[1]["non_embedding_params"])):
        t = r["test"]
        lines.append(f"| {grade} | {r['non_embedding_params']:,} | {r['train_samples']:,} | {r.get('epochs', 1)} "
                     f"({r.get('best_epoch') or '-'}) | {t['logloss']:.4f} | {t['auc']:.4f} | "
                     f"{t.get('gauc', float('nan')):.4f} | {r.get('train_samples_per_s') or 0:.0f} | "
                     f"{r['seconds']:.0f} |")
    left = [f"{g} D={d}" for d in plan["data_sizes"] for g in plan["grades"] if (g, d) not in done]
    if left:
        lines += ["", "Left: " + ", ".join(left) + "."]
    if plan.get("lr_grid"):
        tune = plan.get("tune_size") or min(plan["data_sizes"])
        lines += ["", f"## Learning rate per grade (lowest valid LogLoss at D={tune:,}; the test split never "
                  "chooses)", "",
                  f"Grid {', '.join(f'{lr:g}' for lr in plan['lr_grid'])}, extended past a best rate at its edge. "
                  + ("Chosen: " + ", ".join(f"{g} {lr:g}" for g, lr in lr_by_grade.items()) + "."
                     if lr_by_grade else "None chosen yet.")
                  + ("" if len(lr_by_grade) == len(plan["grades"]) else " A grade without a choice has no runs "
                     "counted above."), "",
                  "| grade | lr | lowest valid LogLoss | valid AUC there | epoch | precision | chosen |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for grade in plan["grades"]:
            found = []
            for path in (glob.glob(os.path.join(out_dir, "runs", f"suan-{grade}-D{tune}.json"))
                         + glob.glob(os.path.join(out_dir, "runs", f"suan-{grade}-D{tune}-lr*.json"))):
                with open(path) as f:
                    r = json.load(f)
                found.append((r.get("lr", base_lr) or 0.0, r))
            for _, r in sorted(found, key=lambda x: x[0]):
                # the lowest over the epochs (what chooses: the tuning run's, where a later run of
                # the law's protocol replaced it); the kept epoch for runs stored without them
                ev = r.get("tuning") or r
                v = _lowest_logloss(ev.get("valid_epochs")) or r.get("valid") or {}
                lr = r.get("lr", base_lr)
                ll, auc = v.get("logloss"), v.get("auc")
                lines.append(f"| {grade} | {'-' if lr is None else f'{lr:g}'} | "
                             f"{'-' if ll is None else f'{ll:.4f}'} | {'-' if auc is None else f'{auc:.4f}'} | "
                             f"{v.get('epoch') or '-'} | {'bf16' if ev.get('cpu_bf16') else 'fp32'} | "
                             f"{'yes' if lr_by_grade.get(grade) == lr else ''} |")
    md = "\n".join(lines) + "\n"
    write_text(os.path.join(out_dir, "progress.md"), md)
    return md
