"""AUC, GAUC and LogLoss against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from suan.metrics import auc, ctr_metrics, gauc, logloss


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    s = rng.normal(size=500) + y
    s[:100] = np.round(s[:100], 1)  # ties
    assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-12


def test_auc_one_class_is_nan():
    assert np.isnan(auc(np.ones(5), np.arange(5)))


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(float)
    p = rng.random(300)
    assert abs(logloss(y, p) - log_loss(y, p)) < 1e-9


def test_gauc_is_impression_weighted_per_user_auc():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 800)
    y = rng.random(800) < 0.4
    s = rng.normal(size=800) + 0.5 * y
    num = den = 0.0
    for u in np.unique(users):
        m = users == u
        if y[m].all() or not y[m].any():
            continue
        num += m.sum() * roc_auc_score(y[m], s[m])
        den += m.sum()
    assert abs(gauc(y, s, users) - num / den) < 1e-12


def test_ctr_metrics_from_logits():
    y = np.array([0, 1, 0, 1, 1, 0])
    logits = np.array([-2.0, 1.0, 0.5, 2.0, -0.5, -1.0])
    m = ctr_metrics(y, logits, users=np.array([0, 0, 0, 1, 1, 1]))
    p = 1 / (1 + np.exp(-logits))
    assert abs(m["auc"] - roc_auc_score(y, p)) < 1e-12
    assert abs(m["logloss"] - log_loss(y, p)) < 1e-9
    assert 0 <= m["gauc"] <= 1
