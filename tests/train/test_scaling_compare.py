"""Power-law fits, the scaling runner and report, and `suan compare` end to end on small data
(synthetic and every real format)."""
import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import torch

from suan import scaling
from suan.compare import run_compare
from suan.defaults import SCALING_PRESETS
from suan.errors import UserError
from support.stores import relabel, relabelled_copy


def test_power_law_fit_recovers_parameters():
    N = np.geomspace(1e4, 1e7, 7)
    y = 0.45 + 3.0 * N ** -0.3
    f = scaling.fit_power_law(N, y, exponents=np.linspace(0.05, 1.0, 96))
    assert abs(f["alpha"] - 0.3) < 0.011 and abs(f["E"] - 0.45) < 1e-3 and f["r2"] > 0.999
    rng = np.random.default_rng(0)
    noisy = y + rng.normal(0, 1e-4, y.size)
    ci = scaling.bootstrap(scaling.fit_power_law, [N, noisy], ["alpha"], n=50)
    assert ci["alpha"][0] <= 0.32 and ci["alpha"][1] >= 0.28


def test_joint_fit_recovers_parameters():
    N, D = np.meshgrid(np.geomspace(1e4, 1e6, 4), np.geomspace(1e4, 1e6, 4))
    N, D = N.ravel(), D.ravel()
    y = 0.5 + 2.0 * N ** -0.25 + 5.0 * D ** -0.4
    f = scaling.fit_joint(N, D, y, exponents=np.linspace(0.05, 0.6, 56))
    assert abs(f["alpha"] - 0.25) < 0.02 and abs(f["beta"] - 0.4) < 0.02 and f["r2"] > 0.999


def test_scaling_runner_resumes_and_reports(tmp_path, monkeypatch, capsys):
    preset = scaling.ScalingPreset(data="synthetic:tiny", grades=("g0", "g1", "g2"), data_sizes=(3000, 6000, 12000),
                                   max_len=16, batch_size=128, lr=3e-3, student_grade="g0", distill_teachers=("g1",),
                                   distill_size=6000)
    monkeypatch.setitem(SCALING_PRESETS, "test", preset)
    out = str(tmp_path / "s")
    res = scaling.run_scaling(out, preset="test", distill=True, data_dir=str(tmp_path / "data"), n_boot=20)
    assert len(res["runs"]) == 9 and len(os.listdir(os.path.join(out, "runs"))) == 10
    with open(os.path.join(out, "scaling.json")) as f:
        data = json.load(f)
    assert {"params", "data", "joint"} <= set(data["fits"])
    for key in ("alpha", "r2", "ci95"):
        assert key in data["fits"]["params"]
    assert "beta" in data["fits"]["data"] and "beta" in data["fits"]["joint"]
    assert data["distill"]["curve"][0]["teacher"] == "g1"
    assert os.path.exists(os.path.join(out, "scaling.png")) and os.path.exists(os.path.join(out, "distillation.png"))
    # a second call trains nothing: every run is on disk; the plan keeps the first start time
    with open(os.path.join(out, "plan.json")) as f:
        plan = json.load(f)
    plan["started"] = "2026-01-01 00:00"
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(plan, f)
    monkeypatch.setattr(scaling, "_train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = scaling.run_scaling(out, preset="test", distill=True, data_dir=str(tmp_path / "data"), n_boot=5)
    with open(os.path.join(out, "plan.json")) as f:
        assert json.load(f)["started"] == "2026-01-01 00:00"
    assert [r["test"]["logloss"] for r in again["runs"]] == [r["test"]["logloss"] for r in res["runs"]]
    # the folder is one dataset's sweep: other contents are refused (runs are keyed by grade and size only)
    import shutil

    from suan.train import open_data

    tiny = open_data("synthetic:tiny", str(tmp_path / "data"))
    assert plan["data_fingerprint"] == tiny.fingerprint()
    edited = str(tmp_path / "edited")
    relabelled_copy(tiny.path, edited, rows=50)
    monkeypatch.setitem(SCALING_PRESETS, "edited", dataclasses.replace(preset, data=edited))
    with pytest.raises(UserError, match="holds a sweep on other data"):
        scaling.run_scaling(out, preset="edited", distill=True, data_dir=str(tmp_path / "data"), n_boot=5)
    # a sweep from before plans recorded their data is read back, with a notice naming the assumption
    with open(os.path.join(out, "plan.json")) as f:
        legacy = {k: v for k, v in json.load(f).items() if k != "data_fingerprint"}
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(legacy, f)
    capsys.readouterr()
    scaling.run_scaling(out, preset="test", distill=True, data_dir=str(tmp_path / "data"), n_boot=5)
    assert "stored before sweeps recorded their data" in capsys.readouterr().out
    md = scaling.render_report(out)
    assert "loss(N)" in md and "scaling.png" in md and os.path.exists(os.path.join(out, "report.md"))
    # an unfinished sweep: `suan report` shows the finished runs and what is left, without fits
    os.remove(os.path.join(out, "scaling.json"))
    os.remove(os.path.join(out, "runs", sorted(f for f in os.listdir(os.path.join(out, "runs")) if f.startswith("suan-"))[0]))
    progress = scaling.render_report(out)
    assert "8 of 9 runs finished" in progress and "Left: " in progress and "loss(N)" not in progress
    assert os.path.exists(os.path.join(out, "progress.md"))


def test_scaling_picks_a_learning_rate_per_grade_on_valid(tmp_path, monkeypatch):
    """Each grade's rate comes from the grid by its lowest valid LogLoss over the epochs of its run at
    tune_size (never the test split);
    every run of the grade uses it; the preset's own rate keeps the old run names; a run stored
    before valid metrics were recorded gets them from its results in tmp/."""
    preset = scaling.ScalingPreset(data="synthetic:tiny", grades=("g0", "g1"), data_sizes=(3000, 6000), max_len=16,
                                   batch_size=128, lr=3e-3, lr_grid=(3e-3, 3e-4), tune_size=3000, grid_extensions=1)
    monkeypatch.setitem(SCALING_PRESETS, "lrtest", preset)
    out = str(tmp_path / "s")
    res = scaling.run_scaling(out, preset="lrtest", data_dir=str(tmp_path / "data"), n_boot=5)
    rows = res["lr_tuning"]
    assert set(res["lr_by_grade"]) == {"g0", "g1"}
    for g in ("g0", "g1"):  # a two-point grid has its best at an edge: one step (x10) beyond it was tried
        mine = sorted(r["lr"] for r in rows if r["grade"] == g)
        assert mine in ([3e-5, 3e-4, 3e-3], [3e-4, 3e-3, 3e-2]), mine
    for g in ("g0", "g1"):
        mine = [r for r in rows if r["grade"] == g]
        best = min(mine, key=lambda r: r["valid_logloss"])
        assert res["lr_by_grade"][g] == best["lr"] and best["chosen"] and sum(r["chosen"] for r in mine) == 1
        assert all(r["lr"] == best["lr"] for r in res["runs"] if r["grade"] == g)
    names = sorted(os.listdir(os.path.join(out, "runs")))
    assert "suan-g0-D3000.json" in names and "suan-g0-D3000-lr0.0003.json" in names
    # 6 tuning runs at D=3000 (the chosen one reused by the grid) + one run per grade at D=6000
    assert len(rows) == 6 and len(names) == 8 and len(res["runs"]) == 4
    with open(os.path.join(out, "plan.json")) as f:
        assert json.load(f)["lr_by_grade"] == res["lr_by_grade"]
    # an old run file without valid metrics: read back from its tmp/ results, nothing retrained
    path = os.path.join(out, "runs", "suan-g1-D3000.json")
    with open(path) as f:
        old = json.load(f)
    old.pop("valid"), old.pop("valid_epochs"), old.pop("lr")
    with open(path, "w") as f:
        json.dump(old, f)
    monkeypatch.setattr(scaling, "_train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = scaling.run_scaling(out, preset="lrtest", data_dir=str(tmp_path / "data"), n_boot=5)
    assert again["lr_by_grade"] == res["lr_by_grade"]
    with open(path) as f:  # restored; the choice reads the lowest valid LogLoss over the run's epochs
        restored = json.load(f)
    assert restored["valid"]["epoch"] == restored["best_epoch"]
    assert min(e["logloss"] for e in restored["valid_epochs"]) == next(
        r["valid_logloss"] for r in rows if r["grade"] == "g1" and r["lr"] == 3e-3)
    md = scaling.render_report(out)
    assert "Learning rate per grade" in md and "| lr |" in md
    # runs kept by valid AUC (before select_on): tuning runs still count for the choice, but a run
    # the law is fitted on is moved to superseded/ with its tmp/ and trained again
    monkeypatch.undo()
    monkeypatch.setitem(SCALING_PRESETS, "lrtest", preset)
    old_grid = os.path.join(out, "runs", "suan-g0-D6000" + scaling._lr_tag(preset.lr, res["lr_by_grade"]["g0"]) + ".json")
    before = {}
    for name in os.listdir(os.path.join(out, "runs")):
        with open(os.path.join(out, "runs", name)) as f:
            r = json.load(f)
        assert r["selected_on"] == "logloss" and r["cpu_bf16"] is False
        r.pop("selected_on"), r.pop("cpu_bf16")
        before[name] = r
        with open(os.path.join(out, "runs", name), "w") as f:
            json.dump(r, f)
    trained = []
    real_train = scaling._train
    monkeypatch.setattr(scaling, "_train", lambda store, p, grade, size, *a, **k: trained.append((grade, size))
                        or real_train(store, p, grade, size, *a, **k))
    third = scaling.run_scaling(out, preset="lrtest", data_dir=str(tmp_path / "data"), n_boot=5)
    assert third["lr_by_grade"] == res["lr_by_grade"]
    assert sorted(trained) == [("g0", 3000), ("g0", 6000), ("g1", 3000), ("g1", 6000)]  # the 4 grid runs
    assert all(r["selected_on"] == "logloss" for r in third["runs"])
    # a grid run that replaced a tuning run keeps that run's valid metrics: the choice stays made on them
    for r in third["runs"]:
        name = os.path.basename(scaling._run_path(out, "suan", r["grade"], r["train_samples"],
                                                  lr_tag=scaling._lr_tag(preset.lr, r["lr"])))
        if r["train_samples"] == 3000:
            assert r["tuning"]["valid_epochs"] == before[name]["valid_epochs"]
        else:
            assert "tuning" not in r
    assert [(x["grade"], x["lr"], x["valid_logloss"]) for x in third["lr_tuning"]] == [
        (x["grade"], x["lr"], x["valid_logloss"]) for x in rows]
    # another precision is another protocol too
    assert not scaling._made_as(dataclasses.replace(preset, cpu_bf16=True))(third["runs"][0])
    assert "| precision |" in scaling.render_progress(out)
    # a run interrupted under the older protocol (its checkpoint in tmp/, no run file) does not
    # stop the sweep with a resume refusal: its folder is set aside and it starts afresh
    auc_preset = dataclasses.replace(preset, select_on="auc")
    monkeypatch.setitem(SCALING_PRESETS, "lrtest", auc_preset)
    g1 = next(r for r in third["runs"] if r["grade"] == "g1" and r["train_samples"] == 6000)
    os.remove(scaling._run_path(out, "suan", "g1", 6000, lr_tag=scaling._lr_tag(preset.lr, g1["lr"])))
    tmp = scaling._tmp_dir(out, "g1", 6000, None, scaling._lr_tag(preset.lr, g1["lr"]))
    assert os.path.exists(os.path.join(tmp, "checkpoint.pt"))
    fourth = scaling.run_scaling(out, preset="lrtest", data_dir=str(tmp_path / "data"), n_boot=5)
    assert all(r["selected_on"] == "auc" for r in fourth["runs"])
    assert any(os.path.isdir(os.path.join(d, "tmp", os.path.basename(tmp)))
               for d in glob.glob(os.path.join(out, "superseded", "*")))
    kept = [os.path.join(d, "runs", os.path.basename(old_grid))
            for d in glob.glob(os.path.join(out, "superseded", "*"))]
    assert any(os.path.exists(k) for k in kept)


def test_compare_smoke_on_synthetic(tmp_path):
    rep = run_compare("synthetic:tiny", str(tmp_path / "c"), models=["dnn", "din", "lightsuan", "lightsuan-distilled"],
                      seeds=[0, 1], data_dir=str(tmp_path / "data"), max_len=16, lr_grid=(1e-3, 3e-3),
                      tune_samples=3000, grid_extensions=1)
    assert set(rep["models"]) == {"dnn", "din", "lightsuan", "lightsuan-distilled"}
    for e in rep["models"].values():
        assert len(e["auc"]["values"]) == 2 and e["auc"]["std"] >= 0 and e["inference_ms_k100"] > 0
        assert e["family"] in ("suan", "baseline") and e["best_epoch"]["mean"] >= 1
        # a two-point grid always has its best at an edge: one step further on that side was tried
        assert e["lr"] in (3.33e-4, 1e-3, 3e-3, 9e-3)
    tuning = [f for f in os.listdir(tmp_path / "c" / "results")]
    assert len(tuning) >= 4 * 3  # per model: the grid's two rates and one extension (seed 1 adds more)
    md = open(tmp_path / "c" / "compare.md").read()
    assert "| dnn |" in md and "±" in md and "one outer step further" in md


@pytest.mark.parametrize("kind", ["taobao", "movielens", "amazon"])
def test_compare_on_real_format_fixtures(tmp_path, kind):
    from support import fixture_files as ff

    if kind == "taobao":
        src = tmp_path / "UserBehavior.csv"
        ff.write_taobao(src, users=60)
    elif kind == "movielens":
        ff.write_movielens(tmp_path, users=60)
        src = tmp_path / "ratings.dat"
    else:
        src = tmp_path / "reviews.jsonl"
        ff.write_amazon(src, users=60)
    rep = run_compare(f"{kind}:{src}", str(tmp_path / "c"), models=["dnn", "bst", "hstu", "suan", "lightsuan"],
                      seeds=[0], data_dir=str(tmp_path / "cache"), max_len=8, lr_grid=(3e-3,))
    assert set(rep["models"]) == {"dnn", "bst", "hstu", "suan", "lightsuan"}
    assert all(0 <= e["auc"]["mean"] <= 1 or np.isnan(e["auc"]["mean"]) for e in rep["models"].values())


def test_compare_resumes_finished_runs_and_reports_tests(tmp_path):
    kw = dict(models=["dnn", "suan", "suan@g1", "suan~nogate"], seeds=[0, 1], data_dir=str(tmp_path / "data"), max_len=12,
              lr_grid=(3e-3,), epochs=2, early_stopping=1, grade="g0")
    rep = run_compare("synthetic:tiny", str(tmp_path / "c"), jobs=2, **kw)
    assert set(rep["models"]) == {"dnn", "suan", "suan@g1", "suan~nogate"} and rep["models"]["suan@g1"]["grade"] == "g1"
    assert set(rep["tests"]) == {"suan", "suan@g1", "suan~nogate"} and rep["tests"]["suan"]["against"] == "dnn"
    assert {"item click rate", "user click rate"} <= set(rep["reference"])
    results = sorted(os.listdir(tmp_path / "c" / "results"))
    assert len(results) == 8
    mtimes = {f: os.path.getmtime(tmp_path / "c" / "results" / f) for f in results}
    again = run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)  # every run is read back, none retrained
    assert {f: os.path.getmtime(tmp_path / "c" / "results" / f) for f in results} == mtimes
    assert again["models"]["suan"]["auc"] == rep["models"]["suan"]["auc"]
    # a result stored before a setting existed (select_on) is still this config's; another value is not
    first = tmp_path / "c" / "results" / results[0]
    stored = json.loads(first.read_text())
    stored["config"].pop("select_on")
    first.write_text(json.dumps(stored))
    written = os.path.getmtime(first)
    run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)
    assert os.path.getmtime(first) == written
    stored["config"]["select_on"] = "logloss"
    first.write_text(json.dumps(stored))
    with pytest.raises(UserError, match="another config"):
        run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)
    md = open(tmp_path / "c" / "compare.md").read()
    assert "Paired test" in md and "item click rate" in md
    # `suan report` on a comparison folder: every finished run, and nothing in progress
    from suan.cli import main
    assert main(["report", str(tmp_path / "c")]) == 0
    progress = (tmp_path / "c" / "progress.md").read_text()
    assert "8 finished; 0 started and not finished" in progress
    assert sum(line.startswith("| suan~nogate |") for line in progress.splitlines()) == 2
    with pytest.raises(ValueError, match="unknown 'xgb'"):
        run_compare("synthetic:tiny", str(tmp_path / "d"), models=["xgb"], seeds=[0])


def _interrupt_at_step(monkeypatch, step):
    """Trainer.train_step as if a SIGTERM arrived during ``step``: the trainer saves its checkpoint
    after that step and raises Interrupted, as it does for a real signal."""
    import signal

    from suan.train import Trainer

    real = Trainer.train_step

    def train_step(self, batch):
        rec = real(self, batch)
        if self.step == step:
            self._stop_signal = signal.SIGTERM
        return rec

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_compare_run_interrupted_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from suan.errors import Interrupted

    kw = dict(models=["lightsuan"], seeds=[0], data_dir=str(tmp_path / "data"), max_len=12,
              lr_grid=(3e-3,), epochs=2, grade="g0")
    fresh = run_compare("synthetic:tiny", str(tmp_path / "fresh"), **kw)
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 7)  # inside the first epoch
        with pytest.raises(Interrupted, match="run the same command again to resume"):
            run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)
    assert not os.listdir(tmp_path / "c" / "results")
    (run_dir,) = glob.glob(str(tmp_path / "c" / "runs" / "*"))
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    capsys.readouterr()
    resumed = run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)
    assert "resumed from" in capsys.readouterr().out
    # exact resume: the same weights, so the same test metrics as the run that was never stopped
    for metric in ("auc", "gauc", "logloss"):  # (GAUC may be NaN on this tiny set: equal as NaN)
        np.testing.assert_array_equal(resumed["models"]["lightsuan"][metric]["values"],
                                      fresh["models"]["lightsuan"][metric]["values"])
    # a result written before runs resumed (resume=False, no periodic checkpoint) is still this
    # configuration's: read back, not retrained
    (path,) = glob.glob(str(tmp_path / "c" / "results" / "*.json"))
    stored = json.loads(open(path).read())
    stored["config"].update(resume=False, checkpoint_every=0, progress=True)
    open(path, "w").write(json.dumps(stored))
    written = os.path.getmtime(path)
    run_compare("synthetic:tiny", str(tmp_path / "c"), **kw)
    assert os.path.getmtime(path) == written
    # a checkpoint left by other settings (here 2 epochs, now 3) is kept aside, and the run starts afresh
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 7)
        with pytest.raises(Interrupted):
            run_compare("synthetic:tiny", str(tmp_path / "e"), **kw)
    capsys.readouterr()
    longer = run_compare("synthetic:tiny", str(tmp_path / "e"), **{**kw, "epochs": 3})
    out = capsys.readouterr().out
    assert "written with other settings (epochs: checkpoint 2, now 3)" in out and "resumed from" not in out
    (run_dir,) = glob.glob(str(tmp_path / "e" / "runs" / "*"))
    assert glob.glob(os.path.join(run_dir, "checkpoint.superseded-*.pt"))
    assert longer["models"]["lightsuan"]["best_epoch"]["mean"] >= 1


def test_paired_test_matches_scipy_and_the_sign_flip_fallback(monkeypatch):
    from suan.compare import paired_test

    a, b = [0.81, 0.80, 0.82, 0.805, 0.815], [0.79, 0.795, 0.80, 0.79, 0.80]
    t = paired_test(a, b)
    assert t["test"] == "paired t-test" and t["mean_diff"] > 0 and t["p"] < 0.01
    monkeypatch.setitem(__import__("sys").modules, "scipy", None)
    f = paired_test(a, b)
    assert f["test"] == "sign-flip permutation test" and abs(f["p"] - 2 / 32) < 1e-12
    monkeypatch.undo()
    for test in ("paired t-test", "sign-flip permutation test"):  # no difference on any seed: p = 1
        if test != "paired t-test":
            monkeypatch.setitem(__import__("sys").modules, "scipy", None)
        same, shifted = paired_test(a, a), paired_test([x + 0.01 for x in a], a)
        assert same["test"] == test and same["p"] == 1.0 and same["t"] == 0.0 and same["mean_diff"] == 0.0
        assert shifted["p"] < 0.1 and shifted["t"] > 0


def test_distill_study_smoke_picks_on_valid_and_resumes(tmp_path):
    from suan.compare import parse_entry
    from suan.distill_study import run_distill_study

    out = str(tmp_path / "d")
    # the references alone first, as a study split across sessions does; the full study then reuses them
    refs = run_distill_study(out, preset="smoke", seeds=[0], data_dir=str(tmp_path / "data"), references_only=True)
    assert refs["references_only"] and set(refs["students"]["g0"]["rows"]) == {"lightsuan@g0", "suan"}
    assert refs["students"]["g0"]["claim"] == {}
    assert sorted(os.listdir(os.path.join(out, "results"))) == ["lightsuan_at_g0-lr0.003-s0.json",
                                                                "suan-lr0.003-s0.json"]
    assert "Student LightSUAN g0" in open(os.path.join(out, "references.md")).read()
    assert not os.path.exists(os.path.join(out, "distill.json"))
    ref_mtimes = {f: os.path.getmtime(os.path.join(out, "results", f)) for f in os.listdir(os.path.join(out, "results"))}
    rep = run_distill_study(out, preset="smoke", seeds=[0], data_dir=str(tmp_path / "data"))
    assert {f: os.path.getmtime(os.path.join(out, "results", f)) for f in ref_mtimes} == ref_mtimes
    assert rep["students"]["g0"]["rows"]["suan"]["auc"] == refs["students"]["g0"]["rows"]["suan"]["auc"]
    rows = rep["students"]["g0"]["rows"]
    distilled = [n for n in rows if n.startswith("lightsuan-distilled~tg1~")]
    assert len(distilled) == 1 and {"lightsuan@g0", "suan"} <= set(rows)
    grid = rows[distilled[0]]["valid_grid"]
    assert len(grid) == 2 and max(grid, key=grid.get) == distilled[0]  # chosen on validation AUC
    claim = rep["students"]["g0"]["claim"][distilled[0]]
    assert claim["against"] == "suan" and np.isfinite(claim["mean_diff"]) and isinstance(claim["holds"], bool)
    assert claim["verdict"] in ("holds", "not shown", "does not hold")
    md = open(os.path.join(out, "distill.md")).read()
    assert "Student LightSUAN g0" in md and "the claim **" in md and "valid AUC grid" in md
    results = sorted(os.listdir(os.path.join(out, "results")))
    assert len(results) == 4  # two grid points, LightSUAN alone, SUAN one grade up
    mtimes = [os.path.getmtime(os.path.join(out, "results", f)) for f in results]
    again = run_distill_study(out, preset="smoke", seeds=[0], data_dir=str(tmp_path / "data"))
    assert [os.path.getmtime(os.path.join(out, "results", f)) for f in results] == mtimes
    assert again["students"]["g0"]["rows"][distilled[0]]["auc"] == rows[distilled[0]]["auc"]
    # the entry grammar the study writes, and its errors
    e = parse_entry("lightsuan-distilled~tg3~lam1~T2@g1", "g0")
    assert e.grade == "g1" and e.distill == {"teacher": "g3", "distill_lambda": 1.0, "temperature": 2.0}
    for bad, msg in (("suan~tg2", "unknown modifier 'tg2'"), ("lightsuan-distilled~lam0", "positive"),
                     ("lightsuan-distilled~lamx", "unknown modifier")):
        with pytest.raises(ValueError, match=msg):
            parse_entry(bad, "g0")
    with pytest.raises(ValueError, match="teacher-steps"):
        run_distill_study(str(tmp_path / "e"), preset="smoke", teacher_steps=[0])


def test_compare_on_movielens_defaults_to_its_preset():
    from suan.compare import default_preset

    assert default_preset("movielens-100k") == "ml100k"
    assert default_preset("synthetic:tiny") == default_preset(None) == "smoke"


def test_scaling_grid_on_worker_processes_matches_one_process(tmp_path, monkeypatch):
    """`suan scaling --jobs 2`: the grid's runs on two worker processes (one thread each, the longest
    first) give the results of one process, in the grid's order; a rerun trains nothing and starts
    no worker."""
    import torch

    preset = scaling.ScalingPreset(data="synthetic:tiny", grades=("g0", "g1"), data_sizes=(3000, 6000),
                                   max_len=16, batch_size=128, lr=3e-3)
    monkeypatch.setitem(SCALING_PRESETS, "jobs", preset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same float summation order
    try:
        one = scaling.run_scaling(str(tmp_path / "one"), preset="jobs", data_dir=str(tmp_path / "data"), n_boot=5)
    finally:
        torch.set_num_threads(threads)
    two = scaling.run_scaling(str(tmp_path / "two"), preset="jobs", data_dir=str(tmp_path / "data"), n_boot=5,
                              jobs=2)
    key = [(r["grade"], r["train_samples"]) for r in one["runs"]]
    assert key == [(r["grade"], r["train_samples"]) for r in two["runs"]] == [
        ("g0", 3000), ("g1", 3000), ("g0", 6000), ("g1", 6000)]
    for a, b in zip(one["runs"], two["runs"]):
        assert a["test"]["logloss"] == pytest.approx(b["test"]["logloss"], abs=1e-6)
        assert a["test"]["auc"] == pytest.approx(b["test"]["auc"], abs=1e-6)
    monkeypatch.setattr(scaling, "run_in_processes", lambda *a, **k: pytest.fail("started workers for stored runs"))
    again = scaling.run_scaling(str(tmp_path / "two"), preset="jobs", data_dir=str(tmp_path / "data"), n_boot=5,
                                jobs=2)
    assert [r["test"]["logloss"] for r in again["runs"]] == [r["test"]["logloss"] for r in two["runs"]]
    with pytest.raises(ValueError, match="jobs"):
        scaling.run_scaling(str(tmp_path / "three"), preset="jobs", jobs=0)


def test_compare_keys_stored_runs_by_the_contents_they_trained_on(tmp_path, capsys):
    """A stored run is read back for the same data under another name or folder and refused for
    other data under the same settings (results once did not record their data, so a comparison on
    other data with the same settings read them back as its own); a result from before
    fingerprints is read back with a notice naming the assumption."""
    import shutil

    from suan.data.store import Store
    from suan.train import open_data

    kw = dict(models=["dnn"], seeds=[0], data_dir=str(tmp_path / "data"), max_len=8, lr_grid=(3e-3,))
    out = str(tmp_path / "c")
    first = run_compare("synthetic:tiny", out, **kw)
    (result,) = glob.glob(os.path.join(out, "results", "*.json"))
    stored = json.load(open(result))
    tiny = open_data("synthetic:tiny", kw["data_dir"])
    assert stored["data_fingerprint"] == tiny.fingerprint() and stored["config"]["data"] == "synthetic:tiny"
    assert stored["torch_threads"] >= 1
    mtime = os.path.getmtime(result)
    moved = str(tmp_path / "moved")
    shutil.copytree(tiny.path, moved)
    again = run_compare(moved, out, **kw)  # the same contents named by their folder: read back
    assert os.path.getmtime(result) == mtime and again["models"]["dnn"]["auc"] == first["models"]["dnn"]["auc"]
    copied = str(tmp_path / "copied")  # the comparison's folder copied elsewhere holds the same runs
    shutil.copytree(out, copied)
    there = run_compare("synthetic:tiny", copied, **kw)
    (copy_result,) = glob.glob(os.path.join(copied, "results", "*.json"))
    assert os.path.getmtime(copy_result) == os.path.getmtime(result)
    assert there["models"]["dnn"]["auc"] == first["models"]["dnn"]["auc"]
    assert there["models"]["dnn"]["inference_ms_k100"] > 0  # from the copy's own checkpoint
    relabel(moved, rows=50)
    assert Store(moved).fingerprint() != tiny.fingerprint()
    with pytest.raises(UserError, match="another data_fingerprint"):
        run_compare(moved, out, **kw)
    assert os.path.getmtime(result) == mtime
    # a result written before runs recorded their data
    legacy = {k: v for k, v in stored.items() if k != "data_fingerprint"}
    legacy["config"] = {**stored["config"], "data": "synthetic:demo"}  # what such results said
    with open(result, "w") as f:
        json.dump(legacy, f)
    capsys.readouterr()
    old = run_compare("synthetic:tiny", out, **kw)
    assert "written before run results recorded the data" in capsys.readouterr().out
    assert old["models"]["dnn"]["auc"] == first["models"]["dnn"]["auc"]


def test_threads_make_a_one_job_run_repeat_a_worker_run(tmp_path):
    """CPU float sums depend on torch's thread count, so a run repeats bit for bit only under the
    same count: a worker (``jobs=2``) trains on one thread, and ``threads=1`` makes a one-job run
    repeat it; the count is recorded in each result and this process's count is left as it was."""
    kw = dict(models=["suan"], seeds=[0], data_dir=str(tmp_path / "data"), max_len=8, lr_grid=(3e-3,), grade="g0")
    before = torch.get_num_threads()
    workers = run_compare("synthetic:tiny", str(tmp_path / "w"), jobs=2, **kw)
    one_job = run_compare("synthetic:tiny", str(tmp_path / "one"), jobs=1, threads=1, **kw)
    assert torch.get_num_threads() == before
    assert one_job["models"]["suan"]["auc"] == workers["models"]["suan"]["auc"]
    assert one_job["models"]["suan"]["logloss"] == workers["models"]["suan"]["logloss"]
    for out in ("w", "one"):
        (result,) = glob.glob(str(tmp_path / out / "results" / "*.json"))
        assert json.load(open(result))["torch_threads"] == 1
    run_compare("synthetic:tiny", str(tmp_path / "two"), jobs=2, threads=2, **kw)
    (result,) = glob.glob(str(tmp_path / "two" / "results" / "*.json"))
    assert json.load(open(result))["torch_threads"] == 2
    with pytest.raises(ValueError, match="threads"):
        run_compare("synthetic:tiny", str(tmp_path / "bad"), threads=0, **kw)
