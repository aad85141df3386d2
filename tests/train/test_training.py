"""Training: losses, NaN refusal, atomic checkpoints and exact resume, CLI configuration,
distributed training with gloo, export and scoring."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from suan.data.synthetic import generate
from suan.defaults import DATA_PRESETS as PRESETS
from suan.train import NonFiniteLossError, TrainConfig, Trainer, distillation_loss, train

TINY = dataclasses.replace(PRESETS["tiny"], num_users=150, chunk_users=80)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("data") / "tiny"), TINY)


def _cfg(tmp_path, **kw):
    base = dict(data="unused", model="lightsuan", grade="g0", max_len=20, epochs=2, batch_size=32,
                out_dir=str(tmp_path / "run"), progress=False, resume=False, warmup_steps=5,
                model_overrides={"dropout": 0.1}, eval_batch_size=256)
    base.update(kw)
    return TrainConfig(**base)


def test_distillation_loss_formula():
    torch.manual_seed(0)
    y = (torch.rand(50) < 0.3).float()
    t = torch.randn(50, requires_grad=True)
    s = torch.randn(50, requires_grad=True)
    total, parts = distillation_loss(y, t, s, lam=0.7, T=3.0)
    expected = (F.binary_cross_entropy_with_logits(t, y) + F.binary_cross_entropy_with_logits(s, y)
                + 0.7 * 9 * F.binary_cross_entropy(torch.sigmoid(s / 3), torch.sigmoid(t / 3).detach()))
    torch.testing.assert_close(total, expected)
    # the soft label is detached: the distillation term sends no gradient to the teacher
    g_t = torch.autograd.grad(parts["kd"], t, allow_unused=True)[0]
    assert g_t is None or g_t.abs().max() == 0


def test_training_learns(tmp_path):
    store = generate(str(tmp_path / "data"), PRESETS["tiny"])  # 12k training samples, a small world
    res = train(_cfg(tmp_path, epochs=1, batch_size=64, lr=5e-3, embedding_lr=5e-3,
                     model_overrides={"dropout": 0.0}), store)
    assert res["test"]["model"]["auc"] > 0.60  # a constant scores 0.5; this run scores ~0.65
    assert len(res["valid"]) == 1 and os.path.exists(tmp_path / "run" / "results.json")
    assert res["train_samples_per_s"] > 0


def test_distill_trains_teacher_and_student(tmp_path, store):
    res = train(_cfg(tmp_path, teacher="g1", teacher_overrides={"max_len": 30}, epochs=1, distill_lambda=2.0,
                     temperature=2.0), store)
    assert set(res["test"]) == {"teacher", "student"}
    rec = res["trainer"].history["train"][-1]
    assert {"bce_teacher", "bce_student", "kd"} <= set(rec)
    assert res["trainer"].models()["teacher"].cfg.max_len == 30


def test_nan_loss_names_the_step(tmp_path, store):
    trainer = Trainer(_cfg(tmp_path), store)
    calls = {"n": 0}
    orig = trainer.compute_loss

    def poisoned(batch):
        calls["n"] += 1
        loss, parts = orig(batch)
        return (loss * float("nan") if calls["n"] == 4 else loss), parts

    trainer.compute_loss = poisoned
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        trainer.fit()


def test_resume_follows_the_same_trajectory(tmp_path, store):
    cfg_a = _cfg(tmp_path / "a", checkpoint_every=7, epochs=2)
    full = Trainer(cfg_a, store)
    full.fit()
    losses_full = [r["loss"] for r in full.history["train"]]
    params_full = {k: v.clone() for k, v in full.module.state_dict().items()}

    cfg_b = _cfg(tmp_path / "b", checkpoint_every=7, epochs=2, resume=True)
    crashing = Trainer(cfg_b, store)
    orig = crashing.train_step

    def crash_after_14(batch):
        if crashing.step == 14:
            raise KeyboardInterrupt("simulated crash")
        return orig(batch)

    crashing.train_step = crash_after_14
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    assert not any(n.startswith("checkpoint.pt.tmp") for n in os.listdir(cfg_b.out_dir))
    resumed = Trainer(cfg_b, store)
    assert resumed.step == 14
    resumed.fit()
    losses_resumed = [r["loss"] for r in resumed.history["train"]]
    assert losses_resumed == losses_full  # bit-for-bit, including dropout masks and the LR schedule
    for k, v in resumed.module.state_dict().items():
        assert torch.equal(v, params_full[k]), k


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from suan import train as train_mod

    path = tmp_path / "ck.pt"
    train_mod.atomic_save({"a": 1}, str(path))

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(train_mod.torch, "save", boom)
    with pytest.raises(OSError):
        train_mod.atomic_save({"a": 2}, str(path))
    monkeypatch.undo()
    assert torch.load(str(path)) == {"a": 1}  # the old checkpoint is intact


def _run_cli(args, env=None, timeout=600):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "suan.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=e)


def test_cli_config_file_and_flags(tmp_path, store):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"epochs": 5, "batch_size": 64, "grade": "g0", "max_len": 12}))
    out = tmp_path / "cli"
    r = _run_cli(["train", "--config", str(cfg_file), "--data", store.path, "--epochs", "1", "--no-progress",
                  "--set", "model_overrides.dropout=0.0", "--out-dir", str(out), "--max-steps", "6"])
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["epochs"] == 1 and res["config"]["batch_size"] == 64
    assert res["config"]["model_overrides"] == {"dropout": 0.0} and res["steps"] == 6
    r = _run_cli(["train", "--data", store.path, "--set", "nonsense=1", "--out-dir", str(out)])
    assert r.returncode == 2 and "nonsense" in r.stderr


def test_cli_distill_export_and_score(tmp_path, store):
    out = tmp_path / "d"
    r = _run_cli(["distill", "--data", store.path, "--teacher", "g1", "--grade", "g0", "--max-len", "16",
                  "--epochs", "1", "--batch-size", "64", "--no-progress", "--out-dir", str(out)])
    assert r.returncode == 0, r.stderr
    assert "test student" in r.stdout and "test teacher" in r.stdout
    exp = tmp_path / "export"
    r = _run_cli(["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(exp)])
    assert r.returncode == 0, r.stderr
    manifest = json.loads((exp / "export.json").read_text())
    assert manifest["kind"] == "LightSUAN" and "torch_export" in manifest
    assert manifest["source"]["weights"] == "best valid epoch" and manifest["source"]["which"] == "student"
    from suan.serving import load_checkpoint_model, load_exported

    model = load_exported(str(exp))
    ref = load_checkpoint_model(str(out / "checkpoint.pt"))
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    # requests: two good lines, malformed ones in between
    sp = store.split("test")
    from suan.data.loader import build_batch

    b = build_batch(store, sp, [0, 1], 16)
    h = b.sample(0)
    good = {"id": "r1", "user": "u1", "history": {"behaviors": h["behaviors"].tolist(),
                                                  "behavior_ts": h["behavior_ts"].tolist(),
                                                  "request_ts": int(h["request_ts"]),
                                                  "features": h["features"].tolist(), "dense": h["dense"].tolist()},
            "candidates": [[5, 3, 7], [8, 2, 9], [1, 1, 1]]}
    lines = [json.dumps(good), "{not json", json.dumps({"id": "r3", "history": {}}),
             json.dumps(dict(good, id="r4", candidates=[[10 ** 9, 1, 1]])), "", json.dumps(dict(good, id="r5"))]
    req = tmp_path / "req.jsonl"
    req.write_text("\n".join(lines) + "\n")
    scores = tmp_path / "scores.jsonl"
    r = _run_cli(["score", "--model", str(exp), "--input", str(req), "--output", str(scores)])
    assert r.returncode == 0, r.stderr
    outs = [json.loads(x) for x in scores.read_text().splitlines()]
    assert [o["id"] for o in outs] == ["r1", 2, "r3", "r4", "r5"]
    assert len(outs[0]["scores"]) == 3 and outs[0]["scores"] == outs[4]["scores"]
    assert "error" in outs[1] and outs[1]["line"] == 2
    assert "history" in outs[2]["error"] and "candidates" in outs[3]["error"]
    with torch.no_grad():
        direct = model.score(dict(h, behaviors=h["behaviors"], features=h["features"]),
                             torch.tensor(good["candidates"]))
    assert max(abs(a - b) for a, b in zip(outs[0]["logits"], direct.tolist())) < 1e-5


def test_distributed_gloo_matches_single_process(tmp_path, store):
    """2 CPU processes (gloo) on halves of each global batch == 1 process on the whole batches."""
    common = ["--data", store.path, "--grade", "g0", "--max-len", "16", "--epochs", "1", "--batch-size", "32",
              "--max-steps", "8", "--no-progress", "--set", "model_overrides.dropout=0.0", "--warmup-steps", "2"]
    single = tmp_path / "single"
    r = _run_cli(["train", *common, "--out-dir", str(single)])
    assert r.returncode == 0, r.stderr
    multi = tmp_path / "multi"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                        "-m", "suan.cli", "train", *common, "--out-dir", str(multi)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(single / "checkpoint.pt", weights_only=False)["module"]
    b = torch.load(multi / "checkpoint.pt", weights_only=False)["module"]
    assert a.keys() == b.keys()
    # Summation order differs (two halves then an all-reduce), and Adam divides by sqrt(v), which
    # turns fp32 rounding in near-zero gradients into ~lr-sized steps: fp32-level agreement here
    # means typical differences ~1e-7 and none above 2e-4.
    diffs = []
    for k in a:
        if a[k].dtype.is_floating_point:
            torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=k)
            diffs.append((b[k] - a[k]).abs().flatten())
        else:
            assert torch.equal(a[k], b[k]), k
    assert torch.cat(diffs).median() < 1e-6


def test_early_stopping_restores_the_best_epoch(tmp_path, store):
    cfg = _cfg(tmp_path, epochs=6, early_stopping=2, batch_size=128)
    trainer = Trainer(cfg, store)
    fake = iter([0.60, 0.70, 0.65, 0.64, 0.99, 0.99])
    real_evaluate = trainer.evaluate
    snapshots = {}

    def evaluate(split):
        res = real_evaluate(split)
        if split == "valid":
            res["model"]["auc"] = next(fake)
            snapshots[trainer.epoch] = {k: v.clone() for k, v in trainer.module.state_dict().items()}
        return res

    trainer.evaluate = evaluate
    trainer.fit()
    assert trainer.epoch == 4 and trainer.best["stopped"]  # epochs 3 and 4 did not beat epoch 2
    result = trainer.finish()
    assert result["best_epoch"] == 2 and result["stopped_early"] and result["test_weights"] == "best"
    assert abs(result["best_valid_auc"] - 0.70) < 1e-12 and result["epochs_trained"] == 4
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k
    # a resumed run knows it has stopped
    again = Trainer(_cfg(tmp_path, epochs=6, early_stopping=2, batch_size=128, resume=True), store)
    assert again.best["stopped"] and again.best["epoch"] == 2
    again.fit()
    assert again.epoch == 4


def test_early_stopping_on_logloss_keeps_the_lowest_valid_logloss(tmp_path, store):
    """select_on="logloss": the epoch with the lowest valid LogLoss is kept (a later one with a
    higher AUC is not), stopping after `early_stopping` epochs without a lower one."""
    cfg = _cfg(tmp_path, epochs=6, early_stopping=1, batch_size=128, select_on="logloss")
    trainer = Trainer(cfg, store)
    fake = iter([(0.60, 0.50), (0.62, 0.45), (0.70, 0.47), (0.99, 0.10)])
    real_evaluate = trainer.evaluate
    snapshots = {}

    def evaluate(split):
        res = real_evaluate(split)
        if split == "valid":
            res["model"]["auc"], res["model"]["logloss"] = next(fake)
            snapshots[trainer.epoch] = {k: v.clone() for k, v in trainer.module.state_dict().items()}
        return res

    trainer.evaluate = evaluate
    trainer.fit()
    assert trainer.epoch == 3 and trainer.best["stopped"]
    result = trainer.finish()
    assert result["best_epoch"] == 2 and result["selected_on"] == "logloss"
    assert result["best_valid_logloss"] == 0.45 and result["best_valid_auc"] == 0.62
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k


def test_a_checkpoint_from_before_select_on_resumes_as_auc(tmp_path, store):
    """Checkpoints written before the setting existed selected on AUC: they resume under
    select_on="auc" and are refused under "logloss" (it would change which epoch is kept)."""
    from suan.train import resume_differences
    cfg = _cfg(tmp_path, epochs=1, batch_size=128)
    saved = cfg.to_dict()
    saved.pop("select_on")
    assert resume_differences(saved, cfg.to_dict()) == []
    assert resume_differences(saved, dataclasses.replace(cfg, select_on="logloss").to_dict()) == [
        "select_on: checkpoint 'auc', now 'logloss'"]
    with pytest.raises(ValueError, match="select_on"):
        _cfg(tmp_path, select_on="accuracy")


def test_cpu_bf16_autocasts_the_step_on_cpu(tmp_path, store):
    """cpu_bf16: the training step's forward runs under bf16 autocast on CPU (off by default);
    the run trains to finite losses and records the setting (a resume checks it)."""
    plain = Trainer(_cfg(tmp_path, epochs=1), store)
    with plain._autocast():
        assert not torch.is_autocast_enabled("cpu")
    cfg = _cfg(tmp_path, epochs=1, max_steps=3, batch_size=64, cpu_bf16=True, out_dir=str(tmp_path / "bf16"))
    trainer = Trainer(cfg, store)
    with trainer._autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    trainer.fit()
    result = trainer.finish()
    assert result["config"]["cpu_bf16"] is True
    assert trainer.history["train"] and all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.history["train"])


def _copy_store(store, path, flip_label: bool = False):
    """A copy of ``store``'s folder at ``path``; ``flip_label`` makes it another dataset (its
    first training label flipped, as building that dataset would give)."""
    import shutil

    from suan.data.store import Store
    from support.stores import relabelled_copy

    if flip_label:
        return relabelled_copy(store.path, str(path))
    shutil.copytree(store.path, path)
    return Store(str(path))


def test_store_fingerprint_is_its_contents_not_its_place(tmp_path, store):
    same = _copy_store(store, tmp_path / "moved")
    other = _copy_store(store, tmp_path / "edited", flip_label=True)
    assert same.fingerprint() == store.fingerprint() and len(store.fingerprint()) == 32
    assert other.fingerprint() != store.fingerprint()


def test_a_resume_refuses_a_checkpoint_trained_on_other_data(tmp_path, store):
    """The checkpoint records the data's fingerprint: the same contents resume from another folder;
    other contents under the same settings (and data spec) are refused, not continued."""
    from suan.errors import UserError

    cfg = _cfg(tmp_path, epochs=1, max_steps=3, batch_size=64, resume=True)
    Trainer(cfg, store).fit()
    assert torch.load(os.path.join(cfg.out_dir, "checkpoint.pt"), weights_only=False)["data_fingerprint"] == \
        store.fingerprint()
    with pytest.raises(UserError, match="trained on other data"):
        Trainer(cfg, _copy_store(store, tmp_path / "edited", flip_label=True))
    assert Trainer(cfg, _copy_store(store, tmp_path / "moved")).step == 3


def test_a_checkpoint_serves_the_weights_its_test_metrics_came_from(tmp_path, store):
    """The test metrics of a run are the best valid epoch's weights (restore_best); loading or
    exporting its checkpoint gives those weights, not the last epoch's (a model up to
    ``early_stopping`` epochs past the reported one); ``weights="last"`` gives the last."""
    import numpy as np

    from suan.data.loader import iterate_split
    from suan.metrics import ctr_metrics
    from suan.serving import load_checkpoint

    cfg = _cfg(tmp_path, epochs=3, lr=0.05, embedding_lr=0.05)
    res = train(cfg, store)
    ckpt = os.path.join(cfg.out_dir, "checkpoint.pt")
    model, info = load_checkpoint(ckpt)
    assert info == {"which": "model", "weights": "best valid epoch", "epoch": res["best_epoch"], "selected_on": "auc"}
    logits, labels, users = [], [], []
    with torch.no_grad():
        for b in iterate_split(store, "test", cfg.eval_batch_size, cfg.max_len):
            logits.append(model(b).numpy())
            labels.append(b.labels.numpy())
            users.append(b.user_ids.numpy())
    got = ctr_metrics(np.concatenate(labels), np.concatenate(logits), np.concatenate(users))
    assert got["auc"] == pytest.approx(res["test"]["model"]["auc"], abs=1e-6)
    assert got["logloss"] == pytest.approx(res["test"]["model"]["logloss"], abs=1e-6)
    state = torch.load(ckpt, weights_only=False)
    last, last_info = load_checkpoint(ckpt, weights="last")
    assert last_info["weights"] == "last" and last_info["epoch"] == 3
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["best"]["state"][name])
        assert torch.equal(last.state_dict()[name], state["module"][name])
    with pytest.raises(ValueError, match="weights"):
        load_checkpoint(ckpt, weights="best")
