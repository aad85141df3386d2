"""Export a trained model for serving, and score JSON-lines requests with one-pass parallel scoring.

Export folder::

    model.pt        state dict
    config.json     {"kind": "LightSUAN", "config": ModelConfig}
    program.pt2     a torch.export program (when the model exports on this machine)
    export.json     what was written, and why torch.export failed if it did

Request line (one user, K candidates)::

    {"id": "r1", "user": "u42", "history": {"behaviors": [[item, category, brand, action], ...],
     "behavior_ts": [...], "request_ts": 1700000000, "features": [...], "dense": [...]},
     "candidates": [[item, category, brand], ...]}

Output line: ``{"id": "r1", "logits": [...], "scores": [...]}`` (scores are probabilities), or
``{"id": "r1", "line": 7, "error": "..."}`` for a malformed request; the run goes on.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import IO, Optional

import torch

from .cache import BehaviorCache
from .config import ModelConfig
from .models import SUAN, LightSUAN

KINDS = {"SUAN": SUAN, "LightSUAN": LightSUAN}


def load_checkpoint_model(path: str, which: Optional[str] = None):
    """A model from a training checkpoint (``which``: model | teacher | student)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    configs = state["model_configs"]
    if which is None:
        which = "student" if "student" in configs else "model"
    if which not in configs:
        raise ValueError(f"which: {which!r} not in the checkpoint ({sorted(configs)})")
    cfg = ModelConfig.from_dict(configs[which])
    prefix = "" if which == "model" else f"{which}."
    kind = state["config"]["model"] if which != "teacher" else "suan"
    model = (LightSUAN if kind == "lightsuan" and cfg.sparse else SUAN)(cfg)
    sd = {k[len(prefix):]: v for k, v in state["module"].items() if k.startswith(prefix)}
    model.load_state_dict(sd)
    return model.eval()


def export_model(model, out_dir: str, example_history: Optional[dict] = None, example_candidates=None) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    kind = type(model).__name__
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pt"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"kind": kind, "config": model.cfg.to_dict()}, f, indent=2)
    manifest = {"kind": kind, "files": ["model.pt", "config.json"], "torch_export": "not attempted"}
    if example_history is not None and example_candidates is not None:
        try:
            from .batch import collate

            batch = collate([dict(example_history, targets=example_candidates)])
            program = torch.export.export(model.eval(), (batch,), strict=False)
            torch.export.save(program, os.path.join(out_dir, "program.pt2"))
            manifest["torch_export"] = "ok"
            manifest["files"].append("program.pt2")
        except Exception as e:  # export is best effort: data-dependent shapes may defeat it
            manifest["torch_export"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def load_exported(out_dir: str):
    with open(os.path.join(out_dir, "config.json")) as f:
        meta = json.load(f)
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{out_dir}/config.json: unknown model kind {meta.get('kind')!r}")
    model = KINDS[meta["kind"]](ModelConfig.from_dict(meta["config"]))
    model.load_state_dict(torch.load(os.path.join(out_dir, "model.pt"), map_location="cpu", weights_only=True))
    return model.eval()


def _ids(name, value, width, vocab_sizes, rows_expected=None):
    t = torch.as_tensor(value, dtype=torch.long)
    if t.numel() == 0:
        t = t.reshape(0, width)
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name}: expected rows of {width} ids, got shape {tuple(t.shape)}")
    if rows_expected is not None and t.shape[0] != rows_expected:
        raise ValueError(f"{name}: {t.shape[0]} rows, expected {rows_expected}")
    for j, v in enumerate(vocab_sizes):
        col = t[:, j]
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= v):
            raise ValueError(f"{name}: column {j} has ids outside [0, {v})")
    return t


def parse_request(req: dict, cfg: ModelConfig):
    """Validated (history dict, candidates tensor) of one request; ValueError names the field."""
    if not isinstance(req, dict):
        raise ValueError("request: expected a JSON object")
    s = cfg.schema
    hist = req.get("history")
    if not isinstance(hist, dict):
        raise ValueError("history: missing or not an object")
    beh = _ids("history.behaviors", hist.get("behaviors", []), s.num_behavior_fields,
               [f.vocab_size for f in s.behavior_fields])
    ts = torch.as_tensor(hist.get("behavior_ts", []), dtype=torch.long).reshape(-1)
    if ts.numel() != beh.shape[0]:
        raise ValueError(f"history.behavior_ts: {ts.numel()} timestamps for {beh.shape[0]} behaviors")
    if "request_ts" not in hist:
        raise ValueError("history.request_ts: missing")
    feats = _ids("history.features", [hist.get("features", [])], s.num_features,
                 [f.vocab_size for f in s.feature_fields], rows_expected=1)[0]
    dense = torch.as_tensor(hist.get("dense", [0.0] * s.num_dense), dtype=torch.float32).reshape(-1)
    if dense.numel() != s.num_dense:
        raise ValueError(f"history.dense: {dense.numel()} values, expected {s.num_dense}")
    if not torch.isfinite(dense).all():
        raise ValueError("history.dense: non-finite value")
    tidx = s.target_field_index()
    cands = _ids("candidates", req.get("candidates"), len(tidx), [s.behavior_fields[i].vocab_size for i in tidx])
    if cands.shape[0] == 0:
        raise ValueError("candidates: empty")
    history = {"behaviors": beh, "behavior_ts": ts, "request_ts": int(hist["request_ts"]), "features": feats,
               "dense": dense}
    return history, cands


def score_stream(model, inp: IO[str], out: IO[str], cache_mb: int = 256) -> dict:
    """Scores every request line of ``inp`` into ``out``; returns counts and timing."""
    cache = BehaviorCache(model, max_bytes=cache_mb << 20) if cache_mb > 0 else None
    n_ok = n_err = 0
    t0 = time.perf_counter()
    for line_no, line in enumerate(inp, start=1):
        line = line.strip()
        if not line:
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id", line_no) if isinstance(req, dict) else line_no
            history, cands = parse_request(req, model.cfg)
            user = req.get("user")
            if cache is not None and user is not None:
                logits = model.score(history, cands, cache=cache, key=(str(user), history["request_ts"],
                                                                       history["behavior_ts"].numel()))
            else:
                logits = model.score(history, cands)
            lg = [float(x) for x in logits]
            out.write(json.dumps({"id": rid, "logits": lg, "scores": [1 / (1 + math.exp(-x)) for x in lg]}) + "\n")
            n_ok += 1
        except Exception as e:  # a malformed line never stops the run
            msg = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
            out.write(json.dumps({"id": rid if rid is not None else line_no, "line": line_no, "error": msg}) + "\n")
            n_err += 1
    return {"ok": n_ok, "errors": n_err, "seconds": time.perf_counter() - t0}


def score_file(model_dir: str, input_path: str, output_path: Optional[str], cache_mb: int = 256) -> dict:
    model = load_exported(model_dir)
    inp = sys.stdin if input_path == "-" else open(input_path)
    out = sys.stdout if not output_path or output_path == "-" else open(output_path, "w")
    try:
        return score_stream(model, inp, out, cache_mb)
    finally:
        if inp is not sys.stdin:
            inp.close()
        if out is not sys.stdout:
            out.close()
