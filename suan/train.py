"""Training one model, or a SUAN teacher + LightSUAN student with online distillation.

* Optimizers: LazyAdam for embedding tables (only the rows a batch touched move; works with DDP
  on dense gradients; Adagrad is the alternative) and AdamW for everything else, with linear
  warmup then cosine decay; gradient clipping; bf16 autocast on CUDA.
* A NaN or infinite loss stops the run with ``NonFiniteLossError`` naming the step.
* Checkpoints (``OUT/checkpoint.pt``) are written atomically (temporary file + rename) and hold
  models, optimizers, schedulers, RNG states and the position in the epoch: a resumed run follows
  the same loss trajectory as an uninterrupted one.
* Under ``torchrun`` the models are wrapped in DistributedDataParallel (NCCL on GPU, gloo on
  CPU); every rank takes its slice of each global batch and batch norms use global statistics,
  so W processes train to the same parameters as one process on the same global batches.
* Distillation loss (SPEC section 5):
  ``BCE(y, t) + BCE(y, s) + lambda * T^2 * BCE(sigmoid(t / T).detach(), sigmoid(s / T))``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .batch import Batch
from .errors import Interrupted, UserError
from .io import save_torch, write_json
from .rundir import RunLock, prepare_out_dir
from .config import ModelConfig, config_for_grade
from .data.loader import iterate_split, make_loader, num_batches
from .data.store import Store
from .metrics import ctr_metrics
from .optim import LazyAdam


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    data: str = "synthetic:demo"
    data_dir: Optional[str] = None
    model: str = "lightsuan"
    grade: str = "g1"
    max_len: Optional[int] = 50
    model_overrides: Dict = field(default_factory=dict)
    teacher: Optional[str] = None  # a grade: trains a SUAN teacher with online distillation
    teacher_overrides: Dict = field(default_factory=dict)
    distill_lambda: float = 1.0
    temperature: float = 1.0
    distill_warmup_steps: int = 0  # ramp lambda linearly from 0 (an untrained teacher teaches noise)
    epochs: int = 2
    batch_size: int = 256
    lr: float = 2e-3
    embedding_lr: float = 2e-3
    embedding_optimizer: str = "lazy_adam"  # lazy_adam (touched rows only) | adagrad
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    clip_norm: float = 5.0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on CPU too: matmuls in bf16 with float32 accumulation. 1.8x on a g4 training
    # step on a 2-core AVX512-BF16 CPU (mm is 2/3 of it); slower on CPUs without native bf16
    cpu_bf16: bool = False
    max_steps: Optional[int] = None
    train_samples: Optional[int] = None  # train on a fixed (nested) subset of this many samples
    eval_batch_size: int = 1024
    early_stopping: int = 0  # patience in epochs without a better valid score (0: train every epoch)
    # the valid score that picks the best epoch and stops early: "auc" (higher is better) or
    # "logloss" (lower is better; what a scaling law on LogLoss should select on)
    select_on: str = "auc"
    restore_best: bool = True  # evaluate the test split with the best valid epoch's weights
    checkpoint_every: int = 0
    out_dir: str = "runs/train"
    resume: bool = True
    progress: bool = True
    log_every: int = 50
    threads: Optional[int] = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), _FIELD_TYPES[f.name]))
        for name, low in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("log_every", 1),
                          ("warmup_steps", 0), ("distill_warmup_steps", 0), ("num_workers", 0),
                          ("checkpoint_every", 0), ("early_stopping", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}: must be >= {low}, got {getattr(self, name)}")
        for name in ("max_steps", "train_samples", "max_len", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (or unset), got {getattr(self, name)}")
        for name in ("lr", "embedding_lr", "temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name}: must be a positive number, got {getattr(self, name)}")
        for name in ("weight_decay", "clip_norm", "distill_lambda"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name}: must be a number >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.select_on not in ("auc", "logloss"):
            raise ValueError(f"select_on: 'auc' or 'logloss', got {self.select_on!r}")
        if self.embedding_optimizer not in ("lazy_adam", "adagrad"):
            raise ValueError(f"embedding_optimizer: 'lazy_adam' or 'adagrad', got {self.embedding_optimizer!r}")
        if self.device != "auto" and not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device: 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        return TrainConfig(**d)


def _typed(name: str, value, kind):
    """``value`` as the field's type, or a ValueError naming the field (config files and ``--set``
    give JSON values: "3" or 3.0 for an int are refused, 3 for a float is taken)."""
    optional = typing.get_origin(kind) is typing.Union
    base = [a for a in typing.get_args(kind) if a is not type(None)][0] if optional else kind
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: must be set (a {base.__name__}), got null")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(base) in (dict, typing.Dict) or base is dict:
        if isinstance(value, dict):
            return value
        base = dict
    else:
        return value
    raise ValueError(f"{name}: expected {'an' if base is int else 'a'} {base.__name__}"
                     f"{' or null' if optional else ''}, got {value!r}")


_FIELD_TYPES = typing.get_type_hints(TrainConfig)


def short_run(**settings) -> dict:
    """TrainConfig settings of the short runs of the demo, the comparison and the scaling sweep:
    a brief warmup, cosine decay to half the rate, no dropout (one or two epochs do not overfit),
    evaluation batches of 512 (on a 2-core CPU a g4 evaluates 1.6x faster than in batches of 2,048,
    whose activations leave the cache; small grades are indifferent), a fresh start; ``settings``
    add to or override them."""
    return {"warmup_steps": 50, "min_lr_ratio": 0.5, "eval_batch_size": 512, "resume": False,
            "model_overrides": {"dropout": 0.0}, **settings}


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def build_model(kind: str, grade: str, schema, max_len: Optional[int], overrides: Optional[dict] = None) -> nn.Module:
    """A model of ``suan.registry`` (suan, lightsuan or a baseline) at a grade."""
    from .registry import build_model as build

    return build(kind, grade, schema, max_len, overrides)


class DistillPair(nn.Module):
    """Teacher and student under one module (one DDP wrapper, one forward)."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        self.teacher, self.student = teacher, student

    def forward(self, batch: Batch):
        return self.teacher(batch), self.student(batch)


def distillation_loss(labels, t_logits, s_logits, lam: float, T: float):
    """Returns (total, parts) per SPEC section 5."""
    bce_t = F.binary_cross_entropy_with_logits(t_logits, labels)
    bce_s = F.binary_cross_entropy_with_logits(s_logits, labels)
    soft = torch.sigmoid(t_logits.detach() / T)
    kd = F.binary_cross_entropy_with_logits(s_logits / T, soft)
    return bce_t + bce_s + lam * T * T * kd, {"bce_teacher": bce_t, "bce_student": bce_s, "kd": kd}


def _split_params(module: nn.Module):
    emb, rest = [], []
    emb_ids = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for p in module.parameters():
        if p.requires_grad:
            (emb if id(p) in emb_ids else rest).append(p)
    return emb, rest


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def open_data(spec: str, data_dir: Optional[str] = None, seed: int = 0) -> Store:
    """``synthetic:<preset>``, a dataset directory, or a real dataset (see ``suan.data.real``)."""
    from .data import registry

    return registry.open_dataset(spec, data_dir=data_dir, seed=seed)


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    save_torch(obj, path)


# Settings a resumed run must share with its checkpoint: what the model is, what data it reads
# in what order, and the optimizer and learning-rate schedule. Progress bars, evaluation batch,
# workers, logging, checkpoint period, device and threads may change between runs.
RESUME_KEYS = ("data", "model", "grade", "max_len", "model_overrides", "teacher", "teacher_overrides",
               "distill_lambda", "temperature", "distill_warmup_steps", "epochs", "batch_size", "lr", "embedding_lr",
               "embedding_optimizer", "weight_decay", "warmup_steps", "min_lr_ratio", "clip_norm", "seed", "amp",
               "max_steps", "train_samples", "early_stopping", "select_on", "cpu_bf16")


# a setting added after checkpoints were written: such a checkpoint ran with this value
_SETTING_BEFORE_IT_EXISTED = {"select_on": "auc", "cpu_bf16": False}


def with_settings_added_since(saved: dict) -> dict:
    """A stored TrainConfig dict with every setting added after it was written filled in with the
    value such a run used, so it compares equal to the same config written today."""
    return {**{k: v for k, v in _SETTING_BEFORE_IT_EXISTED.items() if k not in saved}, **saved}


def resume_differences(saved: dict, current: dict, saved_data: Optional[str] = None,
                       current_data: Optional[str] = None) -> List[str]:
    """``key: checkpoint X, now Y`` for every resume-relevant setting that differs. The data is
    compared by content where both fingerprints are known (``Store.fingerprint``; a dataset moved or
    named another way is the same data, a rebuilt one is not), else by its ``data`` spec: runners
    that pass their own store (compare, scaling) once left the spec at its default, so for
    checkpoints written before fingerprints the spec alone could not tell two datasets apart."""
    out = []
    for key in RESUME_KEYS:
        if key == "data" and saved_data and current_data:
            if saved_data != current_data:
                out.append(f"data: the checkpoint was trained on other data (contents {saved_data}, now "
                           f"{current_data}; spec {saved.get('data')!r}, now {current.get('data')!r})")
            continue
        was = with_settings_added_since(saved).get(key)
        if was != current.get(key):
            out.append(f"{key}: checkpoint {was!r}, now {current.get(key)!r}")
    return out


def checkpoint_differences(out_dir: str, cfg: "TrainConfig", data_fingerprint: Optional[str] = None
                           ) -> Optional[List[str]]:
    """What ``resume_differences`` finds between the checkpoint in ``out_dir`` and ``cfg``; None
    when there is no checkpoint, or one that cannot be read (the trainer names it and the way out).
    Runners that own their run folders (compare, scaling) set such a checkpoint aside instead of
    letting the trainer refuse to resume."""
    path = os.path.join(out_dir, "checkpoint.pt")
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved = state.get("config")
    except Exception:  # a damaged checkpoint
        return None
    if not isinstance(saved, dict):
        return None
    return resume_differences(saved, cfg.to_dict(), state.get("data_fingerprint"), data_fingerprint)


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device: {name} was asked for, but this torch has no usable CUDA device "
                            f"(torch {torch.__version__}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device: {name} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return device


class Trainer:
    def __init__(self, cfg: TrainConfig, store: Optional[Store] = None):
        self.cfg = cfg
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = _resolve_device(cfg.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.is_main = self.rank == 0
        if cfg.cpu_bf16 and self.device.type == "cpu" and self.is_main and not _cpu_has_native_bf16():
            print("cpu_bf16: this CPU has no native bf16 matmul (AVX512-BF16 / AMX); autocast to bf16 will be "
                  "slower than float32 here", file=sys.stderr, flush=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.store = store if store is not None else open_data(cfg.data, cfg.data_dir, cfg.seed)
        schema = self.store.schema
        if cfg.teacher:
            teacher = build_model("suan", cfg.teacher, schema, cfg.max_len, cfg.teacher_overrides)
            student = build_model(cfg.model, cfg.grade, schema, cfg.max_len, cfg.model_overrides)
            self.module: nn.Module = DistillPair(teacher, student)
            self.names = ["teacher", "student"]
        else:
            self.module = build_model(cfg.model, cfg.grade, schema, cfg.max_len, cfg.model_overrides)
            self.names = ["model"]
        # the data carries the longest history any model uses; each model keeps its own last L
        self.max_len = max(m.cfg.max_len for m in self.models().values())
        self.module.to(self.device)
        self.wrapped = self.module
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.wrapped = DDP(self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        emb, rest = _split_params(self.module)
        if not emb:
            self.opt_emb = None
        elif cfg.embedding_optimizer == "lazy_adam":
            self.opt_emb = LazyAdam(emb, lr=cfg.embedding_lr)
        elif cfg.embedding_optimizer == "adagrad":
            self.opt_emb = torch.optim.Adagrad(emb, lr=cfg.embedding_lr)
        else:
            raise ValueError(f"embedding_optimizer: 'lazy_adam' or 'adagrad', got {cfg.embedding_optimizer!r}")
        self.opt = torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_train = len(self.store.split("train"))
        if cfg.train_samples is not None:
            n_train = min(n_train, cfg.train_samples)
        self.batches_per_epoch = num_batches(n_train, cfg.batch_size, self.world_size)
        total = cfg.epochs * self.batches_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self.total_steps = max(1, total)
        warm, floor = max(0, cfg.warmup_steps), cfg.min_lr_ratio

        def lr_lambda(step):
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, self.total_steps - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: Dict[str, list] = {"train": [], "valid": []}
        # early stopping / best epoch, judged on the served model's valid score (cfg.select_on);
        # best["score"] is that score signed so that higher is better
        self.monitor = "student" if cfg.teacher else "model"
        self.best = {"epoch": 0, "score": -math.inf, "auc": None, "logloss": None, "state": None, "bad_epochs": 0,
                     "stopped": False}
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
        self._stop_signal = None
        if self.is_main:
            prepare_out_dir(cfg.out_dir)
        if cfg.resume and os.path.exists(self.ckpt_path):
            self.load_checkpoint(self.ckpt_path)

    # -- helpers ------------------------------------------------------------------------------
    def models(self) -> Dict[str, nn.Module]:
        if isinstance(self.module, DistillPair):
            return {"teacher": self.module.teacher, "student": self.module.student}
        return {"model": self.module}

    def _autocast(self):
        if self.device.type == "cuda":
            enabled = self.cfg.amp
        else:
            enabled = self.cfg.cpu_bf16 and self.device.type == "cpu"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def compute_loss(self, batch: Batch):
        with self._autocast():
            out = self.wrapped(batch)
        labels = batch.labels
        if isinstance(self.module, DistillPair):
            t_logits, s_logits = (o.float() for o in out)
            lam = self.cfg.distill_lambda
            if self.cfg.distill_warmup_steps:
                lam *= min(1.0, self.step / self.cfg.distill_warmup_steps)
            return distillation_loss(labels, t_logits, s_logits, lam, self.cfg.temperature)
        loss = F.binary_cross_entropy_with_logits(out.float(), labels)
        return loss, {}

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.store.fingerprint(),  # what it trained on, checked on resume
            "model_configs": {k: m.cfg.to_dict() for k, m in self.models().items()},
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "module": self.module.state_dict(),
            "opt": self.opt.state_dict(),
            "opt_emb": self.opt_emb.state_dict() if self.opt_emb else None,
            "sched": self.sched.state_dict(),
            "rng": _rng_state(),
            "history": self.history,
            "best": self.best,
        }

    def save_checkpoint(self) -> None:
        if self.is_main:
            atomic_save(self.state_dict(), self.ckpt_path)
        if self.world_size > 1:
            dist.barrier()

    def load_checkpoint(self, path: str) -> None:
        """Resume from ``path``; refuses (``UserError`` with the ``--no-resume`` hint) a file that
        cannot be read or a checkpoint whose settings differ from this run's."""
        hint = "run with --no-resume to start afresh (the checkpoint is then replaced)"
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # truncated, empty, not a torch file
            raise UserError(f"checkpoint: {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); it may be "
                            f"truncated or from another program: {hint}") from None
        if not isinstance(state, dict) or not {"config", "module", "model_configs"} <= set(state):
            raise UserError(f"checkpoint: {path} is not a suan training checkpoint; {hint}")
        diffs = resume_differences(state["config"], self.cfg.to_dict(), state.get("data_fingerprint"),
                                   self.store.fingerprint())
        saved_models = state["model_configs"]
        current_models = {k: m.cfg.to_dict() for k, m in self.models().items()}
        for name in sorted(set(saved_models) | set(current_models)):
            a, b = saved_models.get(name), current_models.get(name)
            if a is None or b is None:
                diffs.append(f"{name}: in {'the run' if a is None else 'the checkpoint'} only")
            elif a != b:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                diffs.append(f"{name} model config ({', '.join(keys)}): the checkpoint's differs (schema or grade)")
        if diffs:
            raise UserError(f"checkpoint: {path} was written by a run with other settings; resuming would continue "
                            f"other weights. Differences: " + "; ".join(diffs) + f". Use another --out-dir, or {hint}")
        self.module.load_state_dict(state["module"])
        self.opt.load_state_dict(state["opt"])
        if self.opt_emb and state.get("opt_emb"):
            self.opt_emb.load_state_dict(state["opt_emb"])
        self.sched.load_state_dict(state["sched"])
        _set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.history = state["history"]
        best = state.get("best", self.best)
        if "score" not in best:  # a checkpoint from before select_on: it selected on AUC
            best = {**best, "score": best["auc"], "logloss": None}
        self.best = best
        if self.is_main:
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    # -- loops --------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict:
        self.module.train()
        loss, parts = self.compute_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch}); "
                "lower the learning rate or check the data")
        self.opt.zero_grad(set_to_none=True)
        if self.opt_emb:
            self.opt_emb.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], self.cfg.clip_norm)
        self.opt.step()
        if self.opt_emb:
            self.opt_emb.step()
        self.sched.step()
        self.step += 1
        rec = {"step": self.step, "epoch": self.epoch, "loss": loss.item(), "lr": self.sched.get_last_lr()[0]}
        rec.update({k: v.item() for k, v in parts.items()})
        return rec

    def _done(self) -> bool:
        return (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps) or self.best["stopped"]

    def _track_best(self, valid: dict) -> None:
        """Keep the weights of the best valid score so far (``select_on``: AUC or LogLoss); stop
        after ``early_stopping`` epochs without a better one."""
        metrics = valid.get(self.monitor, {}) if self.is_main else {}
        auc, logloss = metrics.get("auc", float("nan")), metrics.get("logloss", float("nan"))
        if self.world_size > 1:  # every rank takes rank 0's decision
            t = torch.tensor([auc, logloss], dtype=torch.float64, device=self.device)
            dist.broadcast(t, 0)
            auc, logloss = (float(x) for x in t)
        score = auc if self.cfg.select_on == "auc" else -logloss
        if score > self.best["score"]:  # NaN never improves
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
            self.best.update(epoch=self.epoch, score=score, auc=auc, logloss=logloss, state=state, bad_epochs=0)
        else:
            self.best["bad_epochs"] += 1
            if self.cfg.early_stopping and self.best["bad_epochs"] >= self.cfg.early_stopping:
                self.best["stopped"] = True
                if self.is_main:
                    what = "AUC" if self.cfg.select_on == "auc" else "LogLoss"
                    print(f"early stopping after epoch {self.epoch}: no better valid {what} for "
                          f"{self.best['bad_epochs']} epoch(s); best epoch {self.best['epoch']} "
                          f"(valid {what} {self.best[self.cfg.select_on]:.4f})", flush=True)

    def _on_signal(self, signum, frame):
        if self._stop_signal is not None:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self._stop_signal = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after the current step "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def _stop_if_signalled(self) -> None:
        if self._stop_signal is None:
            return
        self.save_checkpoint()
        # a run started with resume off (``suan demo``, ``--no-resume``) is not continued by the same
        # command, so the message says what is true for it
        how = ("run the same command again to resume" if self.cfg.resume else
               "this run was started with resume off, so the same command starts afresh; `suan train` / "
               "`suan distill` with these settings and without --no-resume continue from it")
        raise Interrupted(f"interrupted at step {self.step} (epoch {self.epoch + 1}, batch {self.batch_in_epoch}); "
                          f"state saved to {self.ckpt_path}: {how}")

    def fit(self) -> dict:
        """Train to the end; SIGINT / SIGTERM save a checkpoint at the current step and raise
        ``Interrupted`` (the same command resumes from it)."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._fit()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)

    def _fit(self) -> dict:
        cfg = self.cfg
        while self.epoch < cfg.epochs and not self._done():
            loader = make_loader(self.store, "train", cfg.batch_size, self.max_len, seed=cfg.seed, epoch=self.epoch,
                                 num_workers=cfg.num_workers, start_batch=self.batch_in_epoch, rank=self.rank,
                                 world_size=self.world_size, pin_memory=self.device.type == "cuda",
                                 limit=cfg.train_samples)
            bar = None
            if cfg.progress and self.is_main:
                from tqdm import tqdm

                bar = tqdm(total=len(loader), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch",
                           dynamic_ncols=True, file=sys.stderr, leave=False)
            t0, seen, run_loss = time.perf_counter(), 0, None
            for batch in loader:
                batch = batch.to(self.device, non_blocking=True)
                rec = self.train_step(batch)
                self.batch_in_epoch += 1
                seen += batch.num_samples * self.world_size
                run_loss = rec["loss"] if run_loss is None else 0.98 * run_loss + 0.02 * rec["loss"]
                rec["samples_per_s"] = seen / max(1e-9, time.perf_counter() - t0)
                self.history["train"].append(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{run_loss:.4f}", sps=f"{rec['samples_per_s']:.0f}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                self._stop_if_signalled()
                if self._done():
                    break
            if bar is not None:
                bar.close()
            if not self._epoch_finished():  # stopped by max_steps inside the epoch
                self.save_checkpoint()
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            valid = self.evaluate("valid")
            valid["epoch"] = self.epoch
            valid["train_samples_per_s"] = seen / max(1e-9, time.perf_counter() - t0)
            self.history["valid"].append(valid)
            if self.is_main:
                print(f"epoch {self.epoch}: " + "  ".join(
                    f"{k} auc {v['auc']:.4f} gauc {v['gauc']:.4f} logloss {v['logloss']:.4f}"
                    for k, v in valid.items() if isinstance(v, dict)) +
                    f"  ({valid['train_samples_per_s']:.0f} samples/s)", flush=True)
            self._track_best(valid)
            self.save_checkpoint()
            self._stop_if_signalled()
        return self.history

    def _epoch_finished(self) -> bool:
        return self.batch_in_epoch >= self.batches_per_epoch

    @torch.no_grad()
    def predict(self, split: str) -> Dict[str, np.ndarray]:
        models = self.models()
        for m in models.values():
            m.eval()
        logits = {k: [] for k in models}
        labels, users = [], []
        for batch in iterate_split(self.store, split, self.cfg.eval_batch_size, self.max_len, self.cfg.num_workers):
            batch = batch.to(self.device)
            with self._autocast():
                for k, m in models.items():
                    logits[k].append(m(batch).float().cpu().numpy())
            labels.append(batch.labels.cpu().numpy())
            users.append(batch.user_ids.cpu().numpy())
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in logits.items()}
        out["labels"] = np.concatenate(labels) if labels else np.zeros(0)
        out["users"] = np.concatenate(users) if users else np.zeros(0)
        return out

    def evaluate(self, split: str) -> dict:
        if self.world_size > 1 and not self.is_main:
            dist.barrier()
            return {}
        pred = self.predict(split)
        res = {k: ctr_metrics(pred["labels"], pred[k], pred["users"]) for k in self.models()}
        if self.world_size > 1:
            dist.barrier()
        return res

    def finish(self) -> dict:
        """Test metrics and parameter counts; writes OUT/results.json (rank 0)."""
        from .models import count_parameters

        restored = self.cfg.restore_best and self.best["state"] is not None
        if restored:
            self.module.load_state_dict(self.best["state"])
        test = self.evaluate("test")
        result = {"config": self.cfg.to_dict(), "test": test, "valid": self.history["valid"],
                  "params": {k: count_parameters(m) for k, m in self.models().items()},
                  "steps": self.step, "epochs_trained": self.epoch,
                  "best_epoch": self.best["epoch"] if self.best["state"] is not None else None,
                  "best_valid_auc": self.best["auc"] if self.best["state"] is not None else None,
                  "best_valid_logloss": self.best["logloss"] if self.best["state"] is not None else None,
                  "selected_on": self.cfg.select_on,
                  "stopped_early": bool(self.best["stopped"]), "test_weights": "best" if restored else "last"}
        tr = self.history["train"]
        if tr:
            result["train_samples_per_s"] = float(np.median([r["samples_per_s"] for r in tr[len(tr) // 2:]]))
        if self.is_main:
            write_json(os.path.join(self.cfg.out_dir, "results.json"), result, default=float)
        return result


def train(cfg: TrainConfig, store: Optional[Store] = None) -> dict:
    """Train (or resume) into ``cfg.out_dir``, which this run holds locked (``suan.rundir``)."""
    lock = RunLock(cfg.out_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        trainer = Trainer(cfg, store)
        trainer.fit()
        result = trainer.finish()
    finally:
        if lock is not None:
            lock.release()
    result["trainer"] = trainer
    return result
