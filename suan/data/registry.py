"""Resolving a dataset spec to an opened ``Store`` (building and caching it when needed).

Specs:
* ``synthetic:<preset>`` (tiny, demo, small, medium, large): the embedded generator;
* ``taobao:<csv>``, ``movielens:<ratings.dat|ratings.csv>``, ``amazon:<reviews.jsonl>``:
  public datasets in their native formats, converted once into the cache;
* ``movielens-100k``: fetched by ``suan data fetch movielens-100k``;
* a directory holding ``schema.json``: an already built dataset.

Real datasets take an option after ``?``: ``movielens-100k?history=file-order`` builds histories
with the old rule (every earlier line of the time-sorted file, ties with the target's second
included) instead of the default ``strict`` (only strictly earlier events).

The cache folder is ``data_dir``, else ``$SUAN_DATA``, else ``~/.cache/suan``; a built dataset's
folder is keyed by its source's content (sha256), the builder's version and the options.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

from .paths import cache_root
from .store import Store, open_or_build


BUILDER_VERSION = 2  # bump when a loader's output changes: cached builds are keyed by it


def _content_key(path: str) -> str:
    """sha256 of the file's bytes (streamed), so an edited file never reuses a stale build."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def _options(spec: str):
    """``name?key=value&...`` -> (name, {key: value}); only ``history`` is known."""
    base, _, query = spec.partition("?")
    opts = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key != "history":
            raise ValueError(f"data: unknown option {item!r} in {spec!r} (known: history=strict|file-order)")
        opts[key] = value
    rule = opts.get("history", "strict")
    from .real import HISTORY_RULES

    if rule not in HISTORY_RULES:
        raise ValueError(f"data: history={rule!r} in {spec!r}; one of {', '.join(HISTORY_RULES)}")
    return base, rule


def open_dataset(spec: str, data_dir: Optional[str] = None, seed: int = 0, max_len: int = 200) -> Store:
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "schema.json")):
        return Store(spec)
    spec, rule = _options(spec)
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        import dataclasses

        from ..defaults import DATA_PRESETS
        from .synthetic import load_or_generate

        preset = arg or "demo"
        if preset not in DATA_PRESETS:
            raise ValueError(f"data: unknown synthetic preset {preset!r}; known: {', '.join(DATA_PRESETS)}")
        cfg = dataclasses.replace(DATA_PRESETS[preset], seed=seed)
        return load_or_generate(os.path.join(cache_root(data_dir), f"synthetic-{preset}-seed{seed}"), cfg)
    if kind in ("taobao", "movielens", "amazon"):
        from . import real

        if not arg or not os.path.exists(arg):
            raise FileNotFoundError(f"data: {kind} file {arg!r} does not exist")
        out = os.path.join(cache_root(data_dir), f"{kind}-{_content_key(arg)}-v{BUILDER_VERSION}-{rule}-seed{seed}")
        return open_or_build(out, lambda tmp: real.BUILDERS[kind](arg, tmp, seed=seed, history_rule=rule))
    if kind == "movielens-100k":
        from . import movielens100k

        return movielens100k.open_store(data_dir=data_dir, seed=seed, history_rule=rule)
    if os.path.exists(spec):
        raise ValueError(f"data: {spec!r} exists but is not a suan dataset (no schema.json)")
    raise ValueError(f"data: cannot resolve {spec!r} (synthetic:<preset>, taobao:<csv>, movielens:<file>, "
                     "amazon:<jsonl>, movielens-100k, or a dataset folder)")
