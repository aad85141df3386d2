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
from typing import IO, Optional, Tuple

import numpy as np
import torch

from .cache import BehaviorCache
from .errors import UserError
from .io import atomic_open, refuse_overwriting_input, save_torch, write_json
from .rundir import prepare_out_dir
from .config import ModelConfig
from .models import SUAN, LightSUAN

KINDS = {"SUAN": SUAN, "LightSUAN": LightSUAN}


def _load_torch(path: str, what: str, weights_only: bool, hint: str):
    if os.path.isdir(path):
        raise UserError(f"{what}: {path} is a folder; {hint}")
    if not os.path.exists(path):
        raise UserError(f"{what}: {path} does not exist; {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # truncated, empty, not a torch file
        raise UserError(f"{what}: {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        f"it may be truncated or not a suan file: {hint}") from None


CHECKPOINT_WEIGHTS = ("tested", "last")


def load_checkpoint(path: str, which: Optional[str] = None, weights: str = "tested") -> Tuple[torch.nn.Module, dict]:
    """A model from a training checkpoint, and which weights it holds.

    ``which``: model | teacher | student (default: the student if there is one). ``weights``:
    ``"tested"`` (default) the weights the run's test metrics are computed with: the best valid
    epoch's (so far) when the run restores them (``TrainConfig.restore_best``, the default with
    early stopping), else the last; ``"last"`` the last saved step's (what a resume continues).
    Exporting the last weights of an early-stopped run would serve a model up to ``early_stopping``
    epochs past the one its reported AUC belongs to.

    Returns ``(model, info)``: the model in eval mode on the CPU, ``info`` = ``{"weights": "best
    valid epoch" | "last", "epoch": int, "step": int}``.
    """
    hint = "expected a checkpoint.pt written by `suan train` / `suan distill`"
    if weights not in CHECKPOINT_WEIGHTS:
        raise ValueError(f"weights: {weights!r} is not one of {', '.join(CHECKPOINT_WEIGHTS)}")
    state = _load_torch(path, "checkpoint", False, hint)
    if not isinstance(state, dict) or not {"model_configs", "module", "config"} <= set(state):
        raise UserError(f"checkpoint: {path} is not a suan training checkpoint; {hint}")
    configs = state["model_configs"]
    if which is None:
        which = "student" if "student" in configs else "model"
    if which not in configs:
        raise ValueError(f"which: {which!r} not in the checkpoint ({sorted(configs)})")
    best = state.get("best") or {}
    restores = state["config"].get("restore_best", True)
    if weights == "tested" and restores and best.get("state") is not None:
        module, info = best["state"], {"weights": "best valid epoch", "epoch": best.get("epoch"),
                                       "selected_on": state["config"].get("select_on", "auc")}
    else:
        module, info = state["module"], {"weights": "last", "epoch": state.get("epoch"), "step": state.get("step")}
    cfg = ModelConfig.from_dict(configs[which])
    prefix = "" if which == "model" else f"{which}."
    kind = state["config"]["model"] if which != "teacher" else "suan"
    from .registry import get_model

    model = get_model(kind).cls(cfg)
    sd = {k[len(prefix):]: v for k, v in module.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise UserError(f"checkpoint: {path}: the weights of {which!r} do not fit its config "
                        f"({str(e).splitlines()[0][:160]})") from None
    return model.eval(), {"which": which, **info}


def load_checkpoint_model(path: str, which: Optional[str] = None, weights: str = "tested"):
    """The model of ``load_checkpoint`` (``weights="tested"``: the weights the run's test metrics
    are computed with)."""
    return load_checkpoint(path, which, weights)[0]


EXPORT_FILES = ("model.pt", "config.json", "program.pt2", "export.json")


def export_model(model, out_dir: str, example_history: Optional[dict] = None, example_candidates=None,
                 inputs=(), source: Optional[dict] = None) -> dict:
    """Write the export folder (each file atomically). ``inputs``: paths the export must not
    overwrite (the checkpoint it came from); ``source``: where the weights came from (the ``info``
    of ``load_checkpoint``), recorded in export.json."""
    prepare_out_dir(out_dir, "out")
    for name in EXPORT_FILES:
        refuse_overwriting_input(os.path.join(out_dir, name), inputs, "out")
    kind = type(model).__name__
    save_torch(model.state_dict(), os.path.join(out_dir, "model.pt"))
    write_json(os.path.join(out_dir, "config.json"), {"kind": kind, "config": model.cfg.to_dict()})
    manifest = {"kind": kind, "files": ["model.pt", "config.json"], "torch_export": "not attempted"}
    if source is not None:
        manifest["source"] = source
    if example_history is not None and example_candidates is not None:
        try:
            from .batch import collate

            batch = collate([dict(example_history, targets=example_candidates)])
            program = torch.export.export(model.eval(), (batch,), strict=False)
            with atomic_open(os.path.join(out_dir, "program.pt2"), "wb") as f:
                torch.export.save(program, f)
            manifest["torch_export"] = "ok"
            manifest["files"].append("program.pt2")
        except Exception as e:  # export is best effort: data-dependent shapes may defeat it
            manifest["torch_export"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    write_json(os.path.join(out_dir, "export.json"), manifest)
    return manifest


def load_exported(out_dir: str):
    """The model of an export folder; ``UserError`` naming the path for anything else."""
    hint = "expected the folder written by `suan export` (from a checkpoint: suan export --checkpoint FILE --out DIR)"
    if not os.path.isdir(out_dir):
        raise UserError(f"model: {out_dir} {'is a file' if os.path.exists(out_dir) else 'does not exist'}; {hint}")
    cfg_path = os.path.join(out_dir, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
        kind = meta.get("kind")
        cfg = ModelConfig.from_dict(meta["config"])
    except FileNotFoundError:
        raise UserError(f"model: {cfg_path} is missing; {hint}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"model: {cfg_path} is not a suan export config ({type(e).__name__}: {e}); {hint}") from None
    if kind not in KINDS:
        raise UserError(f"model: {cfg_path}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    model = KINDS[kind](cfg)
    state = _load_torch(os.path.join(out_dir, "model.pt"), "model", True, "export the model again")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"model: {out_dir}/model.pt does not fit {cfg_path} ({str(e).splitlines()[0][:160]}); "
                        "export the model again") from None
    return model.eval()


def _integers(name, value) -> torch.Tensor:
    """JSON numbers that must be integers (ids, timestamps): 3.0 is taken, 3.5 or true refused."""
    try:
        arr = np.asarray(value, dtype=object)
    except Exception:
        raise ValueError(f"{name}: expected (lists of) integers") from None
    flat = arr.reshape(-1).tolist()
    for x in flat:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and not x.is_integer()):
            raise ValueError(f"{name}: expected integers, got {x!r}")
        if abs(x) >= 2 ** 63:
            raise ValueError(f"{name}: {x!r} does not fit in 64 bits")
    if arr.dtype == object and arr.ndim >= 1 and len(flat) != arr.size:
        raise ValueError(f"{name}: rows of different lengths")
    return torch.tensor([int(x) for x in flat], dtype=torch.long).reshape(arr.shape)


def _ids(name, value, width, vocab_sizes, rows_expected=None):
    t = _integers(name, value)
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
    ts = _integers("history.behavior_ts", hist.get("behavior_ts", [])).reshape(-1)
    if ts.numel() != beh.shape[0]:
        raise ValueError(f"history.behavior_ts: {ts.numel()} timestamps for {beh.shape[0]} behaviors")
    if "request_ts" not in hist:
        raise ValueError("history.request_ts: missing")
    request_ts = int(_integers("history.request_ts", hist["request_ts"]).reshape(()))
    if ts.numel():
        back = (ts[1:] < ts[:-1]).nonzero()
        if back.numel():
            i = int(back[0]) + 1
            raise ValueError(f"history.behavior_ts: behaviors must be oldest first, but behavior {i} "
                             f"({int(ts[i])}) is earlier than behavior {i - 1} ({int(ts[i - 1])})")
        if int(ts[-1]) >= request_ts:
            i = int((ts >= request_ts).nonzero()[0])
            raise ValueError(f"history.behavior_ts: behavior {i} ({int(ts[i])}) is not before request_ts "
                             f"({request_ts}); a history holds only earlier behaviors")
    feats = _ids("history.features", [hist.get("features", [])], s.num_features,
                 [f.vocab_size for f in s.feature_fields], rows_expected=1)[0]
    try:
        dense = torch.as_tensor(hist.get("dense", [0.0] * s.num_dense), dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError("history.dense: expected a list of numbers") from None
    if dense.numel() != s.num_dense:
        raise ValueError(f"history.dense: {dense.numel()} values, expected {s.num_dense}")
    if not torch.isfinite(dense).all():
        raise ValueError("history.dense: non-finite value")
    tidx = s.target_field_index()
    cands = _ids("candidates", req.get("candidates"), len(tidx), [s.behavior_fields[i].vocab_size for i in tidx])
    if cands.shape[0] == 0:
        raise ValueError("candidates: empty")
    history = {"behaviors": beh, "behavior_ts": ts, "request_ts": request_ts, "features": feats, "dense": dense}
    return history, cands


def score_stream(model, inp: IO, out: IO[str], cache_mb: int = 256) -> dict:
    """Scores every request line of ``inp`` (text or bytes) into ``out``; a line that cannot be
    decoded, parsed or scored gets an error line and the run goes on. Returns counts and timing."""
    cache = BehaviorCache(model, max_bytes=cache_mb << 20) if cache_mb > 0 else None
    n_ok = n_err = 0
    t0 = time.perf_counter()
    for line_no, raw in enumerate(inp, start=1):
        rid = None
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            line = line.strip()
            if not line:
                continue
            req = json.loads(line)
            rid = req.get("id", line_no) if isinstance(req, dict) else line_no
            history, cands = parse_request(req, model.cfg)
            # the cache matches histories by content (suan.cache.history_digest), never by user alone
            logits = model.score(history, cands, cache=cache) if cache is not None else model.score(history, cands)
            lg = [float(x) for x in logits]
            out.write(json.dumps({"id": rid, "logits": lg, "scores": [1 / (1 + math.exp(-x)) for x in lg]}) + "\n")
            n_ok += 1
        except Exception as e:  # a malformed line never stops the run
            if isinstance(e, UnicodeDecodeError):
                msg = f"not UTF-8 (byte {e.start}: {e.reason})"
            elif isinstance(e, json.JSONDecodeError):
                msg = f"not JSON ({e.msg} at column {e.colno})"
            else:
                msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            out.write(json.dumps({"id": rid if rid is not None else line_no, "line": line_no, "error": msg}) + "\n")
            n_err += 1
    return {"ok": n_ok, "errors": n_err, "seconds": time.perf_counter() - t0}


def score_file(model_dir: str, input_path: str, output_path: Optional[str], cache_mb: int = 256) -> dict:
    """``suan score``: requests from ``input_path`` (``-``: stdin) to ``output_path`` (``-`` or
    None: stdout). A file output is written to a temporary file and renamed at the end; it may
    never be the input."""
    to_stdout = not output_path or output_path == "-"
    if not to_stdout:
        refuse_overwriting_input(output_path, [input_path, os.path.join(model_dir, "model.pt"),
                                               os.path.join(model_dir, "config.json")], "output")
        if os.path.isdir(output_path):
            raise UserError(f"output: {output_path} is a folder; give a file path (or - for stdout)")
        folder = os.path.dirname(os.path.abspath(output_path))
        if not os.path.isdir(folder):
            raise UserError(f"output: folder {folder} does not exist")
    if input_path != "-":
        if os.path.isdir(input_path):
            raise UserError(f"input: {input_path} is a folder; give a JSON-lines file (or - for stdin)")
        if not os.path.exists(input_path):
            raise UserError(f"input: {input_path} does not exist")
    model = load_exported(model_dir)
    inp = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")
    try:
        if to_stdout:
            return score_stream(model, inp, sys.stdout, cache_mb)
        with atomic_open(output_path) as out:
            return score_stream(model, inp, out, cache_mb)
    finally:
        if input_path != "-":
            inp.close()
