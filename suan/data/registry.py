"""Resolving a dataset spec to an opened ``Store`` (building and caching it when needed).

Specs:
* ``synthetic:<preset>`` (tiny, demo, small, medium, large): the embedded generator;
* ``taobao:<csv>``, ``movielens:<ratings.dat|ratings.csv>``, ``amazon:<reviews.jsonl>``:
  public datasets in their native formats, converted once into the cache;
* ``movielens-100k``: fetched by ``suan data fetch movielens-100k``;
* a directory holding ``schema.json``: an already built dataset.

The cache folder is ``data_dir``, else ``$SUAN_DATA``, else ``~/.cache/suan``.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

from .paths import cache_root
from .store import Store


def _file_key(path: str) -> str:
    st = os.stat(path)
    h = hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    return h[:16]


def open_dataset(spec: str, data_dir: Optional[str] = None, seed: int = 0, max_len: int = 200) -> Store:
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "schema.json")):
        return Store(spec)
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
        out = os.path.join(cache_root(data_dir), f"{kind}-{_file_key(arg)}")
        if os.path.exists(os.path.join(out, "schema.json")):
            return Store(out)
        return real.BUILDERS[kind](arg, out, seed=seed)
    if kind == "movielens-100k":
        from . import movielens100k

        return movielens100k.open_store(data_dir=data_dir, seed=seed)
    if os.path.exists(spec):
        raise ValueError(f"data: {spec!r} exists but is not a suan dataset (no schema.json)")
    raise ValueError(f"data: cannot resolve {spec!r} (synthetic:<preset>, taobao:<csv>, movielens:<file>, "
                     "amazon:<jsonl>, movielens-100k, or a dataset folder)")
