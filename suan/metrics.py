"""CTR metrics (SPEC section 6): AUC, GAUC, LogLoss. numpy, O(N log N), ties averaged."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (like scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.concatenate([[True], xs[1:] != xs[:-1], [True]])
    starts = np.flatnonzero(boundaries)
    avg = (starts[:-1] + starts[1:] + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, np.diff(starts))
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; nan when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions; users with one class are skipped."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    order = np.argsort(g, kind="mergesort")
    y, s, g = y[order], s[order], g[order]
    cuts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1], [True]]))
    total = weight = 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        yy = y[a:b]
        pos = yy.sum()
        if pos == 0 or pos == yy.size:
            continue
        total += (b - a) * auc(yy, s[a:b])
        weight += b - a
    return float(total / weight) if weight else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def ctr_metrics(labels: np.ndarray, logits: np.ndarray, users: Optional[np.ndarray] = None) -> Dict[str, float]:
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs), "n": int(np.size(labels)),
           "ctr": float(np.mean(labels)) if np.size(labels) else float("nan")}
    if users is not None:
        out["gauc"] = gauc(labels, probs, users)
    return out
