"""The one table of models: name -> class, used by training, ``suan compare``, the CLI's choices
and their error messages.

A model registers itself where it is defined::

    @register_model("din", "Deep Interest Network (target attention over behaviors)")
    class DIN(_Base): ...

Every registered class takes a ``ModelConfig``; ``prepare`` may adjust the grade's config first
(LightSUAN adds its sparse pattern). Adding a baseline touches its module (the class and the
decorator) and its tests, nothing else.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from torch import nn

from .config import ModelConfig, config_for_grade

# the modules whose classes register themselves (imported on first use of the table)
MODEL_MODULES = ("suan.baselines", "suan.models")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    description: str
    family: str  # "suan" (SUAN / LightSUAN) or "baseline"
    prepare: Optional[Callable[[ModelConfig, dict], ModelConfig]] = None


_MODELS: Dict[str, ModelEntry] = {}


def register_model(name: str, description: str, family: str = "baseline",
                   prepare: Optional[Callable[[ModelConfig, dict], ModelConfig]] = None):
    """Class decorator: adds the class to the table under ``name``."""
    def wrap(cls):
        if name in _MODELS and _MODELS[name].cls is not cls:
            raise ValueError(f"model: {name!r} is registered twice ({_MODELS[name].cls.__name__}, {cls.__name__})")
        _MODELS[name] = ModelEntry(name, cls, description, family, prepare)
        return cls
    return wrap


def _load() -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)


def model_names(family: Optional[str] = None) -> List[str]:
    """Registered names, baselines first, in registration order."""
    _load()
    entries = sorted(_MODELS.values(), key=lambda e: e.family != "baseline")
    return [e.name for e in entries if family is None or e.family == family]


def get_model(name: str) -> ModelEntry:
    _load()
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"model: unknown {name!r}; known: {', '.join(model_names())}") from None


def build_model(name: str, grade: str, schema, max_len: Optional[int] = None,
                overrides: Optional[dict] = None) -> nn.Module:
    """A registered model at a grade: the grade's config on ``schema``, ``max_len`` and
    ``overrides`` applied, then the entry's ``prepare``."""
    entry = get_model(name)
    kw = dict(overrides or {})
    if max_len is not None:
        kw.setdefault("max_len", max_len)
    cfg = config_for_grade(grade, schema=schema, **kw)
    if entry.prepare is not None:
        cfg = entry.prepare(cfg, kw)
    return entry.cls(cfg)
