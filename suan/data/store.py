"""Columnar on-disk CTR datasets: raw little-endian numpy columns + a JSON schema.

Layout of a dataset directory::

    schema.json                 model schema (fields, vocabularies), columns, row counts, provenance
    events/<column>.bin         every user's behaviors, time-ordered, users contiguous
    <split>/<column>.bin        samples of split train / valid / test

Events are stored once per user; a sample points into them with ``[hist_start, hist_end)``: its
history is the last L events before ``hist_end`` (all strictly earlier than the request, so no
future behavior can leak into a sequence). Columns are written chunk by chunk (``StoreWriter``)
and read back as memory maps, so datasets larger than RAM work.

Event columns: one per behavior field (int32), ``ts`` (int64).
Sample columns: ``user`` (int64), ``request_ts`` (int64), ``hist_start``/``hist_end`` (int64),
``target.<field>`` (int32), ``feat.<field>`` (int32), ``dense`` (float32, D per row),
``label`` (float32).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from ..config import Schema

SPLITS = ("train", "valid", "test")


def sample_columns(schema: Schema) -> Dict[str, tuple]:
    cols = {"user": ("int64", 1), "request_ts": ("int64", 1), "hist_start": ("int64", 1), "hist_end": ("int64", 1)}
    for t in schema.target_fields:
        cols[f"target.{t}"] = ("int32", 1)
    for f in schema.feature_fields:
        cols[f"feat.{f.name}"] = ("int32", 1)
    cols["dense"] = ("float32", schema.num_dense)
    cols["label"] = ("float32", 1)
    return cols


def event_columns(schema: Schema) -> Dict[str, tuple]:
    cols = {f.name: ("int32", 1) for f in schema.behavior_fields}
    cols["ts"] = ("int64", 1)
    return cols


class _ColumnWriter:
    def __init__(self, path: str, dtype: str, width: int):
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.rows = 0
        self.f = open(path, "wb")

    def append(self, values) -> None:
        arr = np.ascontiguousarray(np.asarray(values, dtype=self.dtype))
        if self.width > 1:
            arr = arr.reshape(-1, self.width)
        elif arr.ndim != 1:
            arr = arr.reshape(-1)
        self.rows += arr.shape[0]
        self.f.write(arr.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())

    def close(self) -> None:
        self.f.close()


def contents_fingerprint(path: str, meta: dict) -> str:
    """The digest ``Store.fingerprint`` describes, of the dataset folder ``path`` laid out as
    ``meta`` (schema.json's contents) says."""
    h = hashlib.blake2b(digest_size=16)
    layout = {k: meta.get(k) for k in ("format", "schema", "num_events", "num_samples",
                                       "event_columns", "sample_columns")}
    h.update(json.dumps(layout, sort_keys=True).encode())
    parts = [("events", c) for c in sorted(meta["event_columns"])]
    parts += [(split, c) for split in sorted(meta["num_samples"]) for c in sorted(meta["sample_columns"])]
    for folder, column in parts:
        h.update(f"{folder}/{column}\0".encode())
        file = os.path.join(path, folder, f"{column}.bin")
        if os.path.exists(file):  # a column with no rows may have no file
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


class StoreWriter:
    """Appends events and samples chunk by chunk; ``close()`` writes schema.json last (a dataset
    without schema.json is incomplete)."""

    def __init__(self, path: str, schema: Schema, info: Optional[dict] = None):
        self.path, self.schema, self.info = path, schema, dict(info or {})
        os.makedirs(os.path.join(path, "events"), exist_ok=True)
        if os.path.exists(os.path.join(path, "schema.json")):
            os.remove(os.path.join(path, "schema.json"))
        self.events = {c: _ColumnWriter(os.path.join(path, "events", f"{c}.bin"), dt, w)
                       for c, (dt, w) in event_columns(schema).items()}
        self.samples = {}
        for split in SPLITS:
            os.makedirs(os.path.join(path, split), exist_ok=True)
            self.samples[split] = {c: _ColumnWriter(os.path.join(path, split, f"{c}.bin"), dt, w)
                                   for c, (dt, w) in sample_columns(schema).items()}

    @property
    def num_events(self) -> int:
        return self.events["ts"].rows

    def add_events(self, columns: Dict[str, np.ndarray]) -> int:
        """Appends events; returns the global index of the first one."""
        first = self.num_events
        n = None
        for c, w in self.events.items():
            arr = np.asarray(columns[c])
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(f"events: column {c} has {arr.shape[0]} rows, expected {n}")
            w.append(arr)
        return first

    def add_samples(self, split: str, columns: Dict[str, np.ndarray]) -> None:
        if split not in self.samples:
            raise ValueError(f"split: one of {SPLITS}, got {split!r}")
        for c, w in self.samples[split].items():
            w.append(columns[c])

    def close(self) -> "Store":
        for w in self.events.values():
            w.close()
        counts = {}
        for split, cols in self.samples.items():
            for w in cols.values():
                w.close()
            counts[split] = cols["label"].rows
        meta = {
            "format": "suan-columnar-1",
            "schema": self.schema.to_dict(),
            "num_events": self.num_events,
            "num_samples": counts,
            "event_columns": {c: list(v) for c, v in event_columns(self.schema).items()},
            "sample_columns": {c: list(v) for c, v in sample_columns(self.schema).items()},
            "info": self.info,
        }
        meta["fingerprint"] = contents_fingerprint(self.path, meta)  # checked by Store.fingerprint
        tmp = os.path.join(self.path, "schema.json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, os.path.join(self.path, "schema.json"))
        return Store(self.path)


@dataclass
class Split:
    name: str
    columns: Dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.columns["label"].shape[0]


class Store:
    """A dataset directory opened read-only with memory maps."""

    def __init__(self, path: str):
        meta_path = os.path.join(path, "schema.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{path}: not a suan dataset (no schema.json; incomplete or wrong path)")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.path = path
        self.schema = Schema.from_dict(self.meta["schema"])
        self.info = self.meta.get("info", {})
        n_ev = self.meta["num_events"]
        self.events = {c: self._open(os.path.join(path, "events", f"{c}.bin"), dt, w, n_ev)
                       for c, (dt, w) in self.meta["event_columns"].items()}
        self.splits = {}
        for split, n in self.meta["num_samples"].items():
            cols = {c: self._open(os.path.join(path, split, f"{c}.bin"), dt, w, n)
                    for c, (dt, w) in self.meta["sample_columns"].items()}
            self.splits[split] = Split(split, cols)

    @staticmethod
    def _open(path, dtype, width, rows):
        shape = (rows, width) if width > 1 else (rows,)
        if rows == 0 or (width == 0):
            return np.zeros(shape, dtype=dtype)
        expected = rows * max(width, 1) * np.dtype(dtype).itemsize
        actual = os.path.getsize(path)
        if actual != expected:
            raise ValueError(f"{path}: {actual} bytes, expected {expected} ({rows} rows of {dtype}x{width}); "
                             "the dataset is damaged")
        return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=shape)

    def fingerprint(self) -> str:
        """A digest of the dataset's contents: its schema, row counts, column layout and the bytes
        of every event and sample column (not ``info``, which holds provenance such as paths). Two
        folders with the same samples give the same value wherever they live; a rebuilt or edited
        dataset gives another. Runs that store results key them by it. Computed once per ``Store``
        (it reads every column: about a second per GB). A dataset records its fingerprint when it
        is built; contents that no longer match it raise ``ValueError`` (damaged or rewritten in
        place), so no run trains on, or keys its results by, data other than what was built."""
        if getattr(self, "_fingerprint", None) is None:
            value = contents_fingerprint(self.path, self.meta)
            built = self.meta.get("fingerprint")
            if built is not None and built != value:
                raise ValueError(f"{self.path}: its contents differ from what was built (fingerprint {value}, "
                                 f"built as {built}): the dataset is damaged or was rewritten in place; "
                                 "remove the folder to rebuild it")
            self._fingerprint = value
        return self._fingerprint

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ValueError(f"split: {name!r} not in {list(self.splits)}")
        return self.splits[name]

    def describe(self) -> dict:
        lab = {s: float(np.asarray(sp.columns["label"]).mean()) if len(sp) else float("nan")
               for s, sp in self.splits.items()}
        return {"path": self.path, "events": self.meta["num_events"], "samples": self.meta["num_samples"],
                "ctr": lab, "info": self.info}


def list_columns(store: Store) -> List[str]:
    return list(store.meta["sample_columns"])


def _complete_store(path: str) -> Optional[Store]:
    try:
        return Store(path)
    except (FileNotFoundError, ValueError):  # absent, half-built or damaged: not a dataset to use
        return None


def open_or_build(out_dir: str, build: Callable[[str], Store],
                  usable: Callable[[Store], bool] = lambda store: True) -> Store:
    """The dataset at ``out_dir`` (a cache folder), built by ``build(folder)`` when it is absent,
    incomplete or refused by ``usable`` (another configuration).

    ``build`` writes into a private sibling folder that is then renamed to ``out_dir``, so no
    process ever reads a half-built dataset or one rewritten under it: two processes building at
    once each build, the first rename wins and the other opens its result; a dataset replaced
    because ``usable`` refused it is moved aside and deleted, its files still readable by
    processes that mapped them. A build that fails leaves ``out_dir`` as it was."""
    store = _complete_store(out_dir)
    if store is not None and usable(store):
        return store
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(out_dir))
    tmp = tempfile.mkdtemp(prefix=f".{name}.building-", dir=parent)
    try:
        build(tmp)
        while True:
            try:
                os.rename(tmp, out_dir)  # refused while out_dir is a non-empty folder
                break
            except OSError:
                if not os.path.exists(out_dir):
                    raise
            store = _complete_store(out_dir)
            if store is not None and usable(store):  # built by another process meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return store
            aside = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
            os.rename(out_dir, os.path.join(aside, name))
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Store(out_dir)
