"""Behavior cache for serving: encode a user's history once, score many candidate batches.

Behaviors never attend to candidates and the gate pools behaviors only, so every layer's
behavior keys/values and gate weights are the same whatever the candidates (SPEC section 5).
``EncodedHistory`` holds them; ``BehaviorCache`` keeps encoded histories in an LRU bounded in
bytes, and drops everything when the model's parameters or buffers change (a version counter
over their in-place versions and identities: an optimizer step or ``load_state_dict`` bumps it).
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Hashable, List, Optional

import torch

from .uab import LayerCache


@dataclass
class EncodedHistory:
    """Per-layer state of one user's history, on the model's device."""

    layers: List[LayerCache]
    feats: torch.Tensor  # [1, F, d] feature tokens
    dense: torch.Tensor  # [1, D] normalized dense features
    behavior_ts: torch.Tensor  # [n]
    request_ts: torch.Tensor  # scalar
    num_behaviors: int
    version: tuple

    def nbytes(self) -> int:
        tensors = [self.feats, self.dense, self.behavior_ts]
        return sum(layer.nbytes() for layer in self.layers) + sum(t.numel() * t.element_size() for t in tensors)


def model_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place or replaced."""
    tensors = list(model.parameters()) + list(model.buffers())
    return (sum(t._version for t in tensors), hash(tuple(id(t) for t in tensors)))


class BehaviorCache:
    """LRU of ``EncodedHistory`` keyed by a user key, bounded by ``max_bytes``."""

    def __init__(self, model, max_bytes: int = 256 << 20):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: must be positive, got {max_bytes}")
        self.model = model
        self.max_bytes = max_bytes
        self._items: "collections.OrderedDict[Hashable, EncodedHistory]" = collections.OrderedDict()
        self._bytes = 0
        self._version = model_version(model)
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.invalidations = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _check_version(self) -> None:
        version = model_version(self.model)
        if version != self._version:
            self.invalidations += 1
            self._items.clear()
            self._bytes = 0
            self._version = version

    def get(self, key: Hashable, history: Optional[dict] = None) -> EncodedHistory:
        """The encoded history of ``key``; encodes ``history`` on a miss (needs it then)."""
        with self._lock:
            self._check_version()
            enc = self._items.get(key)
            if enc is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return enc
        if history is None:
            raise KeyError(f"key: {key!r} is not cached and no history was given to encode")
        enc = self.model.encode_history(history)
        with self._lock:
            self.misses += 1
            size = enc.nbytes()
            if size <= self.max_bytes:
                self._items[key] = enc
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes()
                    self.evictions += 1
        return enc

    def score(self, key: Hashable, candidates: torch.Tensor, history: Optional[dict] = None) -> torch.Tensor:
        """Logits ``[K]`` of the candidates of ``key``'s history (encoded once, then reused)."""
        return self.model.score_encoded(self.get(key, history), candidates)
