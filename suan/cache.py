"""Behavior cache for serving: encode a user's history once, score many candidate batches.

Behaviors never attend to candidates and the gate pools behaviors only, so every layer's
behavior keys/values and gate weights are the same whatever the candidates (SPEC section 5).
``EncodedHistory`` holds them; ``BehaviorCache`` keeps encoded histories in an LRU bounded in
bytes.

The cache key is what determines the cached values: a digest of the history's contents
(behavior fields, behavior timestamps, request time, feature ids, dense features) and the
model's version (a counter over its parameters' and buffers' in-place versions and identities:
an optimizer step or ``load_state_dict`` bumps it, and the cache then drops everything). A
caller's own key (a user id, say) only scopes entries; it never stands for the contents, so two
requests of one user with different histories never share an entry.
"""
from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass
from typing import Hashable, List

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


HISTORY_FIELDS = ("behaviors", "behavior_ts", "request_ts", "features", "dense")


def history_digest(history: dict) -> str:
    """A digest of everything an encoded history depends on (dtype, shape and bytes of each of
    ``HISTORY_FIELDS``)."""
    h = hashlib.blake2b(digest_size=20)
    for name in HISTORY_FIELDS:
        value = history.get(name)
        t = torch.as_tensor(0 if value is None else value).detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def model_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place or replaced."""
    tensors = list(model.parameters()) + list(model.buffers())
    return (sum(t._version for t in tensors), hash(tuple(id(t) for t in tensors)))


class BehaviorCache:
    """LRU of ``EncodedHistory`` keyed by (scope, history digest, model version), bounded by
    ``max_bytes``."""

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

    def key_of(self, history: dict, scope: Hashable = None) -> tuple:
        """The entry key of ``history``: (scope, content digest, model version)."""
        return (scope, history_digest(history), self._version)

    def get(self, history: dict, scope: Hashable = None) -> EncodedHistory:
        """The encoded history, encoded now on a miss. ``scope`` (optional, e.g. a user id) only
        namespaces entries; the contents' digest decides whether an entry matches."""
        if not isinstance(history, dict):
            raise ValueError(f"history: expected the history dict of one request, got {type(history).__name__}")
        with self._lock:
            self._check_version()
            key = self.key_of(history, scope)
            enc = self._items.get(key)
            if enc is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return enc
        enc = self.model.encode_history(history)
        with self._lock:
            self.misses += 1
            size = enc.nbytes()
            if size <= self.max_bytes and enc.version == self._version:
                self._items[key] = enc
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes()
                    self.evictions += 1
        return enc

    def contains(self, history: dict, scope: Hashable = None) -> bool:
        with self._lock:
            self._check_version()
            return self.key_of(history, scope) in self._items

    def score(self, history: dict, candidates: torch.Tensor, scope: Hashable = None) -> torch.Tensor:
        """Logits ``[K]`` of the candidates against ``history`` (encoded once, then reused)."""
        return self.model.score_encoded(self.get(history, scope), candidates)
