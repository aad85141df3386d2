"""Every user error of the command line ends in one line naming the argument or file, a non-zero
status and no traceback (``--debug`` shows it); no command writes over its own input; ``suan
score`` answers every bad line with an error line and goes on."""
import dataclasses
import json
import os

import pytest
import torch

from suan.cli import main
from suan.data.synthetic import generate
from suan.defaults import DATA_PRESETS
from suan.train import TrainConfig, train

TINY = dataclasses.replace(DATA_PRESETS["tiny"], num_users=120, chunk_users=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset, a checkpoint of a few steps and its export folder."""
    root = tmp_path_factory.mktemp("cli")
    store = generate(str(root / "data"), TINY)
    cfg = TrainConfig(data=store.path, model="lightsuan", grade="g0", max_len=16, epochs=1, batch_size=64,
                      max_steps=3, out_dir=str(root / "run"), progress=False, eval_batch_size=512)
    train(cfg, store)
    ckpt = root / "run" / "checkpoint.pt"
    exp = root / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(exp), "--no-try-torch-export"]) == 0
    sample = _request(store)
    return {"root": root, "store": store, "ckpt": ckpt, "export": exp, "request": sample}


def _request(store):
    from suan.data.loader import build_batch

    h = build_batch(store, store.split("test"), [0], 16).sample(0)
    return {"id": "r1", "user": "u1", "history": {"behaviors": h["behaviors"].tolist(),
                                                  "behavior_ts": h["behavior_ts"].tolist(),
                                                  "request_ts": int(h["request_ts"]), "features": h["features"].tolist(),
                                                  "dense": h["dense"].tolist()},
            "candidates": [[5, 3, 7], [8, 2, 9]]}


def _one_line_error(capsys, code, *words):
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("suan ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------------- score
def test_score_refuses_to_write_over_its_input(trained, tmp_path, capsys):
    req = tmp_path / "req.jsonl"
    text = json.dumps(trained["request"]) + "\n"
    req.write_text(text)
    code = main(["score", "--model", str(trained["export"]), "--input", str(req), "--output", str(req)])
    _one_line_error(capsys, code, "output", "input")
    assert req.read_text() == text
    link = tmp_path / "link.jsonl"
    os.symlink(req, link)
    code = main(["score", "--model", str(trained["export"]), "--input", str(req), "--output", str(link)])
    _one_line_error(capsys, code, "output")
    assert req.read_text() == text


def test_score_model_and_output_paths(trained, tmp_path, capsys):
    req = tmp_path / "req.jsonl"
    req.write_text(json.dumps(trained["request"]) + "\n")
    code = main(["score", "--model", str(trained["ckpt"]), "--input", str(req)])
    _one_line_error(capsys, code, "model:", "suan export")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained["export"] / "config.json").read_text())
    data = (trained["export"] / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 2])  # truncated
    code = main(["score", "--model", str(broken), "--input", str(req)])
    _one_line_error(capsys, code, "model.pt", "truncated")
    code = main(["score", "--model", str(trained["export"]), "--input", str(req), "--output", str(tmp_path)])
    _one_line_error(capsys, code, "output", "folder")
    code = main(["score", "--model", str(trained["export"]), "--input", str(tmp_path / "missing.jsonl")])
    _one_line_error(capsys, code, "input", "does not exist")


def test_score_answers_every_bad_line_and_goes_on(trained, tmp_path):
    good = trained["request"]
    h = good["history"]
    n = len(h["behavior_ts"])
    assert n >= 3
    late = dict(h, behavior_ts=h["behavior_ts"][:-1] + [h["request_ts"] + 5])
    backwards = dict(h, behavior_ts=[h["behavior_ts"][1], h["behavior_ts"][0]] + h["behavior_ts"][2:])
    if h["behavior_ts"][0] == h["behavior_ts"][1]:
        backwards["behavior_ts"] = [h["behavior_ts"][0] + 1] + h["behavior_ts"][1:]
    float_ids = dict(h, behaviors=[[x + 0.5 if i == 0 else x for i, x in enumerate(row)] for row in h["behaviors"]])
    lines = [json.dumps(good).encode(),
             b'{"id": "bad-utf8", "x": "\xff\xfe"}',
             json.dumps(dict(good, id="late", history=late)).encode(),
             json.dumps(dict(good, id="back", history=backwards)).encode(),
             json.dumps(dict(good, id="float", history=float_ids)).encode(),
             json.dumps(dict(good, id="float-cand", candidates=[[5.5, 3, 7]])).encode(),
             json.dumps(dict(good, id="r-last")).encode()]
    req = tmp_path / "req.jsonl"
    req.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--model", str(trained["export"]), "--input", str(req), "--output", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r1", 2, "late", "back", "float", "float-cand", "r-last"]
    assert "scores" in rows[0] and rows[0]["scores"] == rows[-1]["scores"]
    errors = {r["id"]: r["error"] for r in rows if "error" in r}
    assert "not UTF-8" in errors[2]
    assert "not before request_ts" in errors["late"]
    assert "oldest first" in errors["back"]
    assert "integers" in errors["float"] and "history.behaviors" in errors["float"]
    assert "integers" in errors["float-cand"] and "candidates" in errors["float-cand"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------- export
def test_export_errors(trained, tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code = main(["export", "--checkpoint", str(empty), "--out", str(tmp_path / "e1")])
    _one_line_error(capsys, code, "checkpoint", "empty.pt")
    data = trained["ckpt"].read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 3])
    code = main(["export", "--checkpoint", str(trunc), "--out", str(tmp_path / "e2")])
    _one_line_error(capsys, code, "checkpoint", "trunc.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, str(other))
    code = main(["export", "--checkpoint", str(other), "--out", str(tmp_path / "e3")])
    _one_line_error(capsys, code, "not a suan training checkpoint")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    code = main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(a_file)])
    _one_line_error(capsys, code, "out", "is a file")
    assert a_file.read_text() == "keep me"
    code = main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "e4")])
    _one_line_error(capsys, code, "nope.pt")


def test_export_never_overwrites_its_checkpoint(trained, tmp_path, capsys):
    folder = tmp_path / "ck"
    folder.mkdir()
    src = folder / "model.pt"  # a checkpoint that happens to be named like an export's weights
    src.write_bytes(trained["ckpt"].read_bytes())
    code = main(["export", "--checkpoint", str(src), "--out", str(folder), "--no-try-torch-export"])
    _one_line_error(capsys, code, "out", "input")
    assert src.read_bytes() == trained["ckpt"].read_bytes()


# ---------------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("args,words", [
    (["--set", "epochs=abc"], ["epochs", "expected an int", "'abc'"]),
    (["--set", "lr=\"fast\""], ["lr", "expected a float"]),
    (["--batch-size", "0"], ["batch_size", ">= 1"]),
    (["--batch-size", "-4"], ["batch_size", ">= 1"]),
    (["--set", "model_overrides=3"], ["model_overrides", "dict"]),
    (["--model", "xgboost"], ["model", "unknown 'xgboost'"]),
    (["--grade", "g99"], ["grade", "g99"]),
])
def test_train_setting_errors(trained, tmp_path, capsys, args, words):
    code = main(["train", "--data", trained["store"].path, "--out-dir", str(tmp_path / "o"), "--no-progress", *args])
    _one_line_error(capsys, code, *words)


def test_train_out_dir_errors(trained, tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    code = main(["train", "--data", trained["store"].path, "--out-dir", str(a_file), "--no-progress"])
    _one_line_error(capsys, code, "out-dir", "is a file")
    code = main(["train", "--data", trained["store"].path, "--out-dir", str(a_file / "sub"), "--no-progress"])
    _one_line_error(capsys, code, "out-dir", "cannot create")
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{\n  \"epochs\": 2,\n  oops\n}")
    code = main(["train", "--config", str(cfg), "--out-dir", str(tmp_path / "o"), "--no-progress"])
    _one_line_error(capsys, code, f"{cfg}:3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(trained, tmp_path, capsys):
    code = main(["train", "--data", trained["store"].path, "--device", "cuda", "--out-dir", str(tmp_path / "o"),
                 "--no-progress"])
    _one_line_error(capsys, code, "device", "cuda", "--device cpu")


def test_debug_flag_shows_the_traceback(trained, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        main(["--debug", "train", "--data", trained["store"].path, "--batch-size", "0",
              "--out-dir", str(tmp_path / "o")])


def test_report_on_a_folder_of_nothing_it_knows(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path) in err and "results/" in err and len(err.splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- jobs and threads
@pytest.mark.parametrize("command", [["compare"], ["distill-study"], ["scaling"]])
@pytest.mark.parametrize("flag,value", [("--jobs", "0"), ("--threads", "0"), ("--threads", "-2")])
def test_jobs_and_threads_errors(tmp_path, capsys, command, flag, value):
    code = main([*command, "--out", str(tmp_path / "o"), flag, value])
    _one_line_error(capsys, code, flag.lstrip("-"), ">= 1", value)
    assert not (tmp_path / "o").exists()


def test_data_generate_replaces_a_dataset_whole_and_refuses_other_folders(tmp_path, capsys):
    """`suan data generate` builds aside and renames: generating into a dataset replaces it whole
    (nothing left beside it); a folder holding other files is refused in one line, untouched."""
    from suan.data.store import Store

    out = tmp_path / "ds"
    args = ["data", "generate", "--preset", "tiny", "--users", "40", "--out", str(out)]
    assert main(args) == 0
    first = Store(str(out)).fingerprint()
    assert main(args + ["--seed", "1"]) == 0
    again = Store(str(out))
    assert again.info["config"]["seed"] == 1 and again.fingerprint() != first
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main(["data", "generate", "--preset", "tiny", "--users", "40", "--out", str(mine)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out:" in err[0] and "no suan dataset" in err[0]
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"
    note = tmp_path / "note.txt"
    note.write_text("keep")
    assert main(["data", "generate", "--preset", "tiny", "--users", "40", "--out", str(note)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out:" in err[0] and "is a file" in err[0] and note.read_text() == "keep"
