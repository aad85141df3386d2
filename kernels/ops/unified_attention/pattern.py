"""The attention pattern of behavior rows (SPEC section 7): one value for the op, the reference,
the block layout, model configs and the tools.

A behavior row i sees behavior j iff ``j <= i`` and, when the pattern is sparse (``window`` or
``dilation`` set), ``i - j < window`` or ``(i - j) % dilation == 0`` or ``j < num_global`` (a term
whose parameter is None is false). Targets are not governed by the pattern: a target sees every
behavior of its sequence and itself.

To add a pattern option: a field here (checked in ``__post_init__``, carried by ``to_list`` /
``from_list``, used in ``allows`` and ``effective``), then the kernel side (``layout.py`` and the
element-wise mask of ``triton_kernels._score_tile``) and the reference's pieces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch


def _none_like(rel):
    return torch.zeros_like(rel, dtype=torch.bool) if isinstance(rel, torch.Tensor) else False


def _check_int(name: str, value, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        kind = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name}: must be {kind}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class AttentionPattern:
    """``window`` (W most recent behaviors up to the row itself), ``dilation`` (every r-th earlier
    behavior, distances 0, r, 2r, ...) and ``num_global`` (the G leading behaviors). All unset:
    dense causal attention. Invalid values raise ``ValueError`` naming the field."""

    window: Optional[int] = None
    dilation: Optional[int] = None
    num_global: int = 0

    def __post_init__(self):
        _check_int("window", self.window, 1, optional=True)
        _check_int("dilation", self.dilation, 1, optional=True)
        _check_int("num_global", self.num_global, 0, optional=False)

    @property
    def sparse(self) -> bool:
        """True when the pattern removes causal pairs (window or dilation set)."""
        return self.window is not None or self.dilation is not None

    @property
    def name(self) -> str:
        """``dense`` or ``w<W>-r<r>-g<G>`` (file names, table rows)."""
        if not self.sparse:
            return "dense"
        return f"w{self.window}-r{self.dilation}-g{self.num_global}"

    # -- element-wise rules (Python ints or broadcasting integer tensors) -----------------------
    def in_window(self, rel):
        """``rel < window`` (False everywhere without a window)."""
        if self.window is None:
            return _none_like(rel)
        return rel < self.window

    def in_dilation(self, rel):
        """``rel % dilation == 0`` (False everywhere without a dilation)."""
        if self.dilation is None:
            return _none_like(rel)
        return rel % self.dilation == 0

    def allows(self, i, j):
        """Behavior i may see behavior j (local positions; both must be behaviors)."""
        rel = i - j
        causal = rel >= 0
        if not self.sparse:
            return causal
        return causal & (self.in_window(rel) | self.in_dilation(rel) | (j < self.num_global))

    def effective(self, max_behaviors: int) -> "AttentionPattern":
        """The same allowed pairs for sequences of at most ``max_behaviors`` behaviors, written
        dense when every causal pair is allowed (the dense path is then exact and faster)."""
        if not self.sparse:
            return DENSE
        n = max_behaviors
        if self.dilation == 1 or (self.window is not None and self.window >= n) or self.num_global >= n:
            return DENSE
        return self

    # -- the torch.library boundary: a list of ints ----------------------------------------------
    def to_list(self) -> List[int]:
        """``[window or 0, dilation or 0, num_global]`` (0 cannot be a valid window/dilation)."""
        return [self.window or 0, self.dilation or 0, self.num_global]

    @staticmethod
    def from_list(values: Sequence[int]) -> "AttentionPattern":
        w, r, g = (int(x) for x in values)
        return AttentionPattern(w or None, r or None, g)


DENSE = AttentionPattern()
