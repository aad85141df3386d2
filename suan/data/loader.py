"""Jagged batches straight from a ``Store``, and a ``torch.utils.data`` pipeline with workers.

A batch is built vectorized (numpy fancy indexing on memory maps), so workers build whole
batches: the ``DataLoader`` gets ``batch_size=None`` and a dataset indexed by batch number.
The order is a permutation drawn from (seed, epoch): a run resumed at batch k of an epoch sees
exactly the batches it would have seen. With ``world_size > 1`` every rank takes its slice of
each global batch, so W processes see the same global batches as one.
"""
from __future__ import annotations

from typing import Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..batch import Batch
from .store import Split, Store


def build_batch(store: Store, split: Split, idx: np.ndarray, max_len: int) -> Batch:
    """Samples ``idx`` of ``split`` as a jagged ``Batch`` (histories cut to the last max_len)."""
    schema = store.schema
    cols = split.columns
    idx = np.asarray(idx, dtype=np.int64)
    end = np.asarray(cols["hist_end"][idx], dtype=np.int64)
    start = np.maximum(np.asarray(cols["hist_start"][idx], dtype=np.int64), end - max_len)
    lens = end - start
    offsets = np.concatenate([[0], np.cumsum(lens)])
    ev = np.repeat(start - offsets[:-1], lens) + np.arange(offsets[-1])
    behaviors = np.stack([np.asarray(store.events[f.name][ev], dtype=np.int64) for f in schema.behavior_fields], 1)
    targets = np.stack([np.asarray(cols[f"target.{t}"][idx], dtype=np.int64) for t in schema.target_fields], 1)
    if schema.feature_fields:
        feats = np.stack([np.asarray(cols[f"feat.{f.name}"][idx], dtype=np.int64) for f in schema.feature_fields], 1)
    else:
        feats = np.zeros((idx.size, 0), dtype=np.int64)
    dense = np.asarray(cols["dense"][idx], dtype=np.float32).reshape(idx.size, schema.num_dense)
    B = idx.size
    return Batch(
        behaviors=torch.from_numpy(behaviors.reshape(-1, schema.num_behavior_fields)),
        behavior_ts=torch.from_numpy(np.asarray(store.events["ts"][ev], dtype=np.int64)),
        behavior_offsets=torch.from_numpy(offsets.astype(np.int64)),
        targets=torch.from_numpy(targets),
        target_offsets=torch.arange(B + 1, dtype=torch.int64),
        request_ts=torch.from_numpy(np.asarray(cols["request_ts"][idx], dtype=np.int64)),
        features=torch.from_numpy(feats),
        dense=torch.from_numpy(np.ascontiguousarray(dense)),
        labels=torch.from_numpy(np.asarray(cols["label"][idx], dtype=np.float32)),
        user_ids=torch.from_numpy(np.asarray(cols["user"][idx], dtype=np.int64)),
    )


def subset_indices(num_samples: int, limit: Optional[int]) -> np.ndarray:
    """The first ``limit`` samples of a fixed permutation: subsets of growing size are nested
    (data-size sweeps train on D samples that include every smaller D)."""
    if limit is None or limit >= num_samples:
        return np.arange(num_samples)
    return np.sort(np.random.default_rng(12345).permutation(num_samples)[:limit])


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True, limit: Optional[int] = None) -> np.ndarray:
    base = subset_indices(num_samples, limit)
    if not shuffle:
        return base
    return base[np.random.default_rng([seed, epoch]).permutation(base.size)]


def num_batches(num_samples: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    """Batches of an epoch: a ragged last batch counts unless dropped, or unless several ranks
    must take equal slices of every batch."""
    if drop_last or world_size > 1:
        return num_samples // batch_size
    return -(-num_samples // batch_size)


class BatchDataset(Dataset):
    """Item i = batch i of an epoch (this rank's slice of it)."""

    def __init__(self, store: Store, split: str, batch_size: int, max_len: int, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0, limit: Optional[int] = None):
        if batch_size % world_size:
            raise ValueError(f"batch_size: {batch_size} must be a multiple of the world size {world_size}")
        self.store, self.split = store, store.split(split)
        self.batch_size, self.max_len = batch_size, max_len
        self.rank, self.world_size = rank, world_size
        order = epoch_order(len(self.split), seed, epoch, shuffle, limit)
        n_batches = num_batches(len(order), batch_size, world_size, drop_last)
        self.batches: List[np.ndarray] = [order[b * batch_size:(b + 1) * batch_size]
                                          for b in range(start_batch, n_batches)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        idx = self.batches[i]
        if self.world_size > 1:
            per = len(idx) // self.world_size
            idx = idx[self.rank * per:(self.rank + 1) * per]
        return build_batch(self.store, self.split, idx, self.max_len)


def make_loader(store: Store, split: str, batch_size: int, max_len: int, *, seed: int = 0, epoch: int = 0,
                shuffle: bool = True, num_workers: int = 0, start_batch: int = 0, rank: int = 0,
                world_size: int = 1, drop_last: bool = False, pin_memory: bool = False,
                limit: Optional[int] = None) -> DataLoader:
    ds = BatchDataset(store, split, batch_size, max_len, seed, epoch, shuffle, drop_last, rank, world_size,
                      start_batch, limit)
    # an own generator: creating the iterator must not draw from the global RNG (dropout masks of
    # a resumed run would shift otherwise)
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    return DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None, generator=gen)


def iterate_split(store: Store, split: str, batch_size: int, max_len: int, num_workers: int = 0) -> Iterator[Batch]:
    """All samples of a split in order (evaluation)."""
    yield from make_loader(store, split, batch_size, max_len, shuffle=False, num_workers=num_workers)
