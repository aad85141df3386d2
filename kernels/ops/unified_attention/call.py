"""One call of ``unified_attention``: its tensors and settings in one value.

Validation, the reference, the launchers and the autograd Function all take an
``AttentionCall``; the argument list is unpacked only at the ``torch.library`` boundary
(``flat`` / ``from_flat``: a list of optional tensors plus plain numbers), so adding an input
means adding a field here, not editing every signature.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import Tensor

from .pattern import DENSE, AttentionPattern

TENSOR_FIELDS = ("q", "k", "v", "offsets", "timestamps", "num_targets", "w_pos", "w_time")
# the inputs the op is differentiable in, in the order the autograd Function receives them
DIFFERENTIABLE = ("q", "k", "v", "w_pos", "w_time")


@dataclass(frozen=True)
class AttentionCall:
    """Inputs of one call (SPEC section 7).

    Attributes:
        q, k: ``[T, H, dh]``; v: ``[T, H, dv]`` (float16, bfloat16, float32 or float64).
        offsets: integer ``[B+1]``; sequence b is rows ``offsets[b]:offsets[b+1]``.
        timestamps: ``[T]`` integer or float, for the time bias.
        num_targets: integer ``[B]``; the last ``num_targets[b]`` rows of sequence b are targets.
        w_pos: ``[2P-1]`` relative-position bias; w_time: ``[num_buckets+1]`` time-bucket bias.
        num_buckets: the top time bucket.
        pattern: the behavior rows' attention pattern.
        scale: score scale, None for ``dh ** -0.5``.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    offsets: Tensor
    timestamps: Optional[Tensor] = None
    num_targets: Optional[Tensor] = None
    w_pos: Optional[Tensor] = None
    w_time: Optional[Tensor] = None
    num_buckets: int = 128
    pattern: AttentionPattern = DENSE
    scale: Optional[float] = None

    def replace(self, **changes) -> "AttentionCall":
        return dataclasses.replace(self, **changes)

    @property
    def resolved_scale(self) -> float:
        return float(self.q.shape[-1] ** -0.5 if self.scale is None else self.scale)

    @property
    def has_time(self) -> bool:
        """The time term is present (both the table and the timestamps)."""
        return self.w_time is not None and self.timestamps is not None

    def differentiable(self) -> Tuple[Optional[Tensor], ...]:
        return tuple(getattr(self, name) for name in DIFFERENTIABLE)

    # -- the torch.library boundary --------------------------------------------------------------
    def flat(self) -> Tuple[List[Optional[Tensor]], int, List[int], float]:
        """(tensors in ``TENSOR_FIELDS`` order, num_buckets, pattern as ints, scale)."""
        return ([getattr(self, name) for name in TENSOR_FIELDS], int(self.num_buckets), self.pattern.to_list(),
                self.resolved_scale)

    @staticmethod
    def from_flat(tensors: List[Optional[Tensor]], num_buckets: int, pattern: List[int],
                  scale: float) -> "AttentionCall":
        return AttentionCall(**dict(zip(TENSOR_FIELDS, tensors)), num_buckets=num_buckets,
                             pattern=AttentionPattern.from_list(pattern), scale=scale)


def new_call(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None,
             num_targets: Optional[Tensor] = None, w_pos: Optional[Tensor] = None, w_time: Optional[Tensor] = None,
             *, num_buckets: int = 128, window: Optional[int] = None, dilation: Optional[int] = None,
             num_global: int = 0, scale: Optional[float] = None) -> AttentionCall:
    """An ``AttentionCall`` from the op's public arguments (SPEC section 7)."""
    return AttentionCall(q, k, v, offsets, timestamps, num_targets, w_pos, w_time, num_buckets,
                         AttentionPattern(window, dilation, num_global), scale)
