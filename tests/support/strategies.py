"""Hypothesis strategies for the op tests: jagged batches, targets, patterns, heads, head dims,
dtypes and the bias terms, as one ``OpCase`` value that builds fresh random tensors.

Shared by the parity tests (tests/ops/test_triton_parity.py, test_reference.py) and the
fuzz test of bad and unusual inputs (tests/ops/test_fuzz.py). Budgets: ``examples(n)`` scales a
test's ``max_examples`` by the profile (``--slow`` gives 10x); CI runs the default profile,
derandomized so a run is reproducible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
from hypothesis import strategies as st

from suan_kernels.ops.unified_attention import DENSE, AttentionPattern

from .jagged import make_inputs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# lengths around the interpreter's block (16) and its multiples, plus anything up to 48
LENGTHS = st.one_of(st.sampled_from([0, 1, 2, 15, 16, 17, 31, 32, 33]), st.integers(0, 48))
_SCALE = {"value": 1}


def set_budget_scale(scale: int) -> None:
    _SCALE["value"] = max(1, int(scale))


def examples(n: int) -> int:
    """A test's example budget under the active profile (``--slow`` or SUAN_TEST_SCALE)."""
    return n * int(os.environ.get("SUAN_TEST_SCALE", _SCALE["value"]))


@dataclass(frozen=True)
class OpCase:
    """One generated call of the op (tensors are built from ``seed`` by ``inputs``)."""

    lengths: Tuple[int, ...]
    targets: Tuple[int, ...]
    heads: int = 2
    head_dim: int = 16
    value_dim: int = 16
    dtype: torch.dtype = torch.float32
    pattern: AttentionPattern = DENSE
    with_pos: bool = True
    with_time: bool = True
    with_timestamps: bool = True
    ts_float: bool = False
    num_positions: int = 16
    num_buckets: int = 16
    scale: Optional[float] = None
    seed: int = 0

    def inputs(self, device="cpu", requires_grad: bool = True) -> dict:
        inputs = make_inputs(self.lengths, self.targets, heads=self.heads, head_dim=self.head_dim,
                             value_dim=self.value_dim, num_positions=self.num_positions,
                             num_buckets=self.num_buckets, dtype=self.dtype, device=device,
                             requires_grad=requires_grad, ts_float=self.ts_float, seed=self.seed)
        if not self.with_pos:
            inputs["w_pos"] = None
        if not self.with_time:
            inputs["w_time"] = None
        if not self.with_timestamps:
            inputs["timestamps"] = None
        return inputs

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def with_(self, **changes) -> "OpCase":
        return replace(self, **changes)


patterns = st.one_of(
    st.just(DENSE),
    st.builds(AttentionPattern,
              window=st.one_of(st.none(), st.integers(1, 24)),
              dilation=st.one_of(st.none(), st.integers(1, 9)),
              num_global=st.integers(0, 4)),
)


@st.composite
def op_cases(draw, max_seqs: int = 4, lengths=LENGTHS, dtypes=DTYPES, max_heads: int = 4,
             head_dims=(8, 16, 24, 32, 64), pattern=patterns, bias: bool = True) -> OpCase:
    """Jagged batches (lengths 0 and 1 included), targets anywhere in 0..length, any pattern,
    1..max_heads heads, head dims (dv may differ from dh), dtypes, and each bias term present
    or absent (integer or float timestamps)."""
    lens = tuple(draw(st.lists(lengths, min_size=1, max_size=max_seqs)))
    targets = tuple(draw(st.integers(0, n)) for n in lens)
    dh = draw(st.sampled_from(head_dims))
    dv = draw(st.one_of(st.just(dh), st.sampled_from(head_dims)))
    return OpCase(
        lengths=lens, targets=targets,
        heads=draw(st.integers(1, max_heads)), head_dim=dh, value_dim=dv,
        dtype=draw(st.sampled_from(dtypes)), pattern=draw(pattern),
        with_pos=draw(st.booleans()) if bias else True,
        with_time=draw(st.booleans()) if bias else True,
        with_timestamps=draw(st.sampled_from([True, True, False])) if bias else True,
        ts_float=draw(st.booleans()) if bias else False,
        num_positions=draw(st.integers(1, 20)),
        num_buckets=draw(st.integers(0, 24)),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 1.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
