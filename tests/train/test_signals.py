"""``suan signals``: a comparison's models re-scored with their tested weights and combined with
model-free click-rate signals by a logistic regression fitted on valid."""
import json
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from suan.cli import main
from suan.compare import run_compare
from suan.errors import UserError
from suan.signals import fit_logistic, run_signals


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_logistic_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 3)) * [1.0, 2.0, 0.5]
    y = (rng.random(2000) < 1 / (1 + np.exp(-(x @ [0.8, -0.3, 1.5] + 0.2)))).astype(float)
    w = fit_logistic(x, y, l2=0.0)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(w[:-1], ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert w[-1] == pytest.approx(ref.intercept_[0], abs=1e-6)
    with pytest.raises(ValueError, match="x"):
        fit_logistic(x[:, 0], y)


def test_signals_rescore_the_tested_weights_and_fit_on_valid(tmp_path, capsys):
    out = str(tmp_path / "c")
    kw = dict(models=["suan"], seeds=[0, 1], data_dir=str(tmp_path / "data"), max_len=8, lr_grid=(3e-3,), grade="g0",
              epochs=2)
    rep = run_compare("synthetic:tiny", out, **kw)
    sig = run_signals(out, data_dir=kw["data_dir"])
    e = sig["entries"]["suan"]
    assert e["seeds"] == [0, 1] and set(e["combinations"]) == {
        "model", "model + item click rate", "model + user click rate", "model + item + user click rate"}
    # the model alone is the comparison's own test result: the same weights, the same rows
    np.testing.assert_allclose(e["combinations"]["model"]["auc"]["values"], rep["models"]["suan"]["auc"]["values"],
                               atol=1e-6)
    both = e["combinations"]["model + item + user click rate"]
    assert all(len(w) == 4 for w in both["weights"]) and both["vs_model"]["auc"]["n"] == 2
    assert set(sig["no_model"]) == {"item click rate + user click rate", "item click rate", "user click rate"}
    stored = json.load(open(os.path.join(out, "signals.json")))
    assert stored["fitted_on"] == "valid" and "| suan (seeds [0, 1]) | model + item click rate |" in open(
        os.path.join(out, "signals.md")).read()
    with pytest.raises(UserError, match="models: .*dnn"):
        run_signals(out, models=["dnn"], data_dir=kw["data_dir"])
    assert main(["signals", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "results/" in err and len(err.strip().splitlines()) == 1
