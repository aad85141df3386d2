"""``suan signals DIR``: what a trained comparison's models leave on the table.

Each finished run of a comparison folder (``suan compare --out DIR``) is scored again with the
weights its test metrics came from; then its logit is combined with signals that use no model,
the target item's and the user's click rate on the training split (smoothed), by a logistic
regression fitted on the **valid** split (a few weights: a calibration, not a new model) and
scored on the test split. What a signal adds on top of the model is what the model did not learn
from the same data: an item prior it under-fits, or a user bias it has no input for (ML-100K's
schema has no user id; the history stands in for it). The test split chooses nothing.

Writes ``DIR/signals.json`` and ``DIR/signals.md``: per entry, test AUC / GAUC / LogLoss of the
model alone and of each combination (mean and std over the entry's seeds), and a paired test over
seeds of each combination against the model alone.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .compare import REFERENCE_SIGNALS, _summary, click_rate_logits, paired_test
from .errors import UserError
from .io import write_json, write_text
from .metrics import ctr_metrics

# (name, the reference signals combined with the model's logit)
COMBINATIONS = (
    ("model", ()),
    ("model + item click rate", ("item click rate",)),
    ("model + user click rate", ("user click rate",)),
    ("model + item + user click rate", ("item click rate", "user click rate")),
)
NO_MODEL = ("item click rate", "user click rate")  # the reference row: both signals, no model


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-6, iters: int = 50) -> np.ndarray:
    """Weights ``w`` (intercept last) of ``P(y=1) = sigmoid(x @ w[:-1] + w[-1])`` by Newton's
    method on the mean log loss plus ``l2 * |w|^2 / 2``. ``x``: [n, k] float, ``y``: [n] in {0, 1}."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"x: expected [n, k] with n = len(y) > 0, got x {x.shape}, y {y.shape}")
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    w = np.zeros(xb.shape[1])
    n = xb.shape[0]
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) / n + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + l2 * np.eye(xb.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def _predict(result: dict, ckpt: str, store, splits: Sequence[str]) -> Dict[str, np.ndarray]:
    """The run's logits on each of ``splits``, with the weights its test metrics came from."""
    from .data.loader import iterate_split
    from .serving import load_checkpoint

    model, _ = load_checkpoint(ckpt, result["which"], "tested")
    out = {}
    with torch.no_grad():
        for split in splits:
            parts = [model(b).float().numpy() for b in iterate_split(store, split, 1024, result["config"]["max_len"])]
            out[split] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def _combined(store, columns: Dict[str, List[np.ndarray]]) -> dict:
    """Test metrics of ``columns`` (split -> score columns) combined by a logistic regression
    fitted on the valid split (one column alone is taken as it is), with the weights."""
    cols = {s: store.split(s).columns for s in ("valid", "test")}
    if len(columns["test"]) == 1:
        w, score = None, columns["test"][0]
    else:
        w = fit_logistic(np.stack(columns["valid"], axis=1), np.asarray(cols["valid"]["label"], float))
        score = np.stack(columns["test"], axis=1) @ w[:-1] + w[-1]
    m = ctr_metrics(np.asarray(cols["test"]["label"]), score, np.asarray(cols["test"]["user"]))
    m["weights"] = None if w is None else [float(v) for v in w]
    return m


def _run_signals(result: dict, ckpt: str, store, refs: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, dict]:
    """Test metrics of each combination for one run."""
    logits = _predict(result, ckpt, store, ("valid", "test"))
    return {name: _combined(store, {s: [logits[s]] + [refs[sig][s] for sig in signals] for s in logits})
            for name, signals in COMBINATIONS}


def run_signals(out_dir: str, models: Optional[Sequence[str]] = None, data_dir: Optional[str] = None) -> dict:
    """The analysis of the module docstring on the comparison folder ``out_dir``; ``models``:
    its entries to analyse (default: every entry with a finished run)."""
    from .train import open_data

    paths = sorted(glob.glob(os.path.join(out_dir, "results", "*.json")))
    if not paths:
        raise UserError(f"dir: {out_dir} has no results/*.json; run `suan compare --out {out_dir}` first")
    report = json.load(open(os.path.join(out_dir, "compare.json"), encoding="utf-8")) \
        if os.path.exists(os.path.join(out_dir, "compare.json")) else None
    chosen = {name: e["lr"] for name, e in (report or {}).get("models", {}).items()}
    runs: Dict[str, List[tuple]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        if r.get("train_samples") or (chosen and r["name"] in chosen and r["lr"] != chosen[r["name"]]):
            continue  # a tuning run at another rate (or on part of the data): not the entry's result
        if models and r["name"] not in models:
            continue
        ckpt = os.path.join(out_dir, "runs", os.path.basename(path)[:-5], "checkpoint.pt")
        if not os.path.exists(ckpt):
            print(f"  {path}: no checkpoint at {ckpt}; skipped", flush=True)
            continue
        runs.setdefault(r["name"], []).append((r, ckpt))
    missing = [m for m in (models or []) if m not in runs]
    if missing:
        raise UserError(f"models: no finished run with a checkpoint in {out_dir} for {', '.join(missing)}")
    if not chosen:  # no compare.json yet: an entry with runs at several rates is ambiguous
        for name, rs in runs.items():
            if len({r["lr"] for r, _ in rs}) > 1:
                raise UserError(f"dir: {out_dir} has no compare.json, and {name} has runs at several learning "
                                "rates; let `suan compare` finish first (it picks the rate)")
    first = next(iter(runs.values()))[0][0]
    store = open_data(first["config"]["data"], data_dir)
    refs = {name: {s: click_rate_logits(store, key, s) for s in ("valid", "test")}
            for name, key in REFERENCE_SIGNALS.items()}
    entries = {}
    for name, rs in runs.items():
        rs = sorted(rs, key=lambda t: t[0]["seed"])
        per_seed = []
        for r, ckpt in rs:
            if r.get("data_fingerprint") not in (None, store.fingerprint()):
                raise UserError(f"dir: {ckpt} trained on other data than {first['config']['data']} holds now "
                                f"(contents {r['data_fingerprint']} vs {store.fingerprint()})")
            per_seed.append(_run_signals(r, ckpt, store, refs))
            print(f"  {name} seed {r['seed']}: " + ", ".join(
                f"{c} {m['auc']:.4f}" for c, m in per_seed[-1].items()), flush=True)
        entry = {"seeds": [r["seed"] for r, _ in rs], "lr": rs[0][0]["lr"], "combinations": {}}
        for c, _ in COMBINATIONS:
            e = {k: _summary([s[c][k] for s in per_seed]) for k in ("auc", "gauc", "logloss")}
            if c != "model":
                e["vs_model"] = {k: paired_test([s[c][k] for s in per_seed], [s["model"][k] for s in per_seed])
                                 for k in ("auc", "gauc")}
            e["weights"] = [s[c]["weights"] for s in per_seed]
            entry["combinations"][c] = e
        entries[name] = entry
    no_model = _combined(store, {s: [refs[sig][s] for sig in NO_MODEL] for s in ("valid", "test")})
    out = {"data": first["config"]["data"], "dir": out_dir, "fitted_on": "valid", "entries": entries,
           "no_model": {" + ".join(NO_MODEL): no_model,
                        **{sig: ctr_metrics(np.asarray(store.split("test").columns["label"]), refs[sig]["test"],
                                            np.asarray(store.split("test").columns["user"]))
                           for sig in NO_MODEL}}}
    write_json(os.path.join(out_dir, "signals.json"), out)
    md = format_signals(out)
    write_text(os.path.join(out_dir, "signals.md"), md)
    return out


def format_signals(report: dict) -> str:
    lines = [f"What each model's logit gains from signals that use no model (`{report['data']}`): the "
             "target item's and the user's training-split click rate, combined with the logit by a "
             "logistic regression fitted on the valid split, scored on test (mean ± std over seeds; "
             "Δ and p: paired over seeds against the model alone).", "",
             "| entry | combination | test AUC | Δ AUC (p) | GAUC | Δ GAUC (p) | LogLoss |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, e in report["entries"].items():
        for c, m in e["combinations"].items():
            def delta(k):
                t = m.get("vs_model", {}).get(k)
                if not t:
                    return ""
                if not np.isfinite(t["mean_diff"]):
                    return "-"
                p = t.get("p")
                return f"{t['mean_diff']:+.4f}" + (f" ({p:.2g})" if p is not None else "")

            lines.append(f"| {name} (seeds {e['seeds']}) | {c} | {m['auc']['mean']:.4f} ± {m['auc']['std']:.4f} | "
                         f"{delta('auc')} | {m['gauc']['mean']:.4f} ± {m['gauc']['std']:.4f} | {delta('gauc')} | "
                         f"{m['logloss']['mean']:.4f} ± {m['logloss']['std']:.4f} |")
    for name, m in report.get("no_model", {}).items():
        lines.append(f"| no model | {name} | {m['auc']:.4f} | | {m['gauc']:.4f} | | {m['logloss']:.4f} |")
    return "\n".join(lines) + "\n"
