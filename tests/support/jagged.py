"""Random jagged inputs of the attention op (fresh random values, never zeros)."""
from typing import Optional, Sequence

import torch

from suan_kernels.ops.unified_attention import AttentionCall, AttentionPattern
from suan_kernels.ops.unified_attention.call import TENSOR_FIELDS

TENSOR_ARGS = TENSOR_FIELDS
GRAD_NAMES = ("q", "k", "v", "w_pos", "w_time")
# the op tests run on CPU (the Triton path under the interpreter) and, with a GPU, on CUDA too
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_inputs(lengths: Sequence[int], num_targets: Optional[Sequence[int]] = None, *, heads: int = 2,
                head_dim: int = 8, value_dim: Optional[int] = None, num_positions: int = 16,
                num_buckets: int = 16, dtype=torch.float32, device="cpu", requires_grad: bool = False,
                ts_float: bool = False, seed: Optional[int] = None):
    """A dict of keyword arguments for ``unified_attention`` (tensors + ``num_buckets``)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    T = int(sum(lengths))
    dv = value_dim or head_dim

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    offsets = torch.tensor([0] + list(torch.tensor(list(lengths), dtype=torch.int64).cumsum(0).tolist()),
                           dtype=torch.int64)
    # increasing timestamps per sequence with log-normal gaps; sometimes equal (gap 0)
    gaps = torch.exp(rnd(T) * 3 + 4).long()
    gaps[torch.rand(T, generator=g) < 0.1] = 0
    ts = torch.empty(T, dtype=torch.int64)
    for b in range(len(lengths)):
        s, e = int(offsets[b]), int(offsets[b + 1])
        ts[s:e] = 1_600_000_000 + gaps[s:e].cumsum(0)
    if ts_float:
        ts = ts.double() + torch.rand(T, generator=g, dtype=torch.float64)
    out = dict(
        q=rnd(T, heads, head_dim), k=rnd(T, heads, head_dim), v=rnd(T, heads, dv),
        offsets=offsets, timestamps=ts,
        num_targets=None if num_targets is None else torch.tensor(list(num_targets), dtype=torch.int64),
        w_pos=rnd(2 * num_positions - 1) * 0.5, w_time=rnd(num_buckets + 1) * 0.5,
        num_buckets=num_buckets,
    )
    for name in ("q", "k", "v", "w_pos", "w_time"):
        out[name] = out[name].to(device=device, dtype=dtype if name in ("q", "k", "v") else
                                 (torch.float64 if dtype == torch.float64 else torch.float32))
        if requires_grad:
            out[name].requires_grad_(True)
    for name in ("offsets", "timestamps", "num_targets"):
        if out[name] is not None:
            out[name] = out[name].to(device)
    return out


def call(fn, inputs, **kw):
    """Call ``fn`` with the positional tensor args of ``inputs`` and the rest as keywords."""
    args = [inputs[n] for n in TENSOR_ARGS]
    kwargs = {k: v for k, v in inputs.items() if k not in TENSOR_ARGS}
    kwargs.update(kw)
    return fn(*args, **kwargs)


def as_call(inputs, pattern: AttentionPattern = AttentionPattern(), scale=None) -> AttentionCall:
    """The ``AttentionCall`` of ``inputs`` (a ``make_inputs`` dict)."""
    return AttentionCall(*[inputs[n] for n in TENSOR_ARGS], num_buckets=inputs["num_buckets"], pattern=pattern,
                         scale=scale)


def detached_copy(inputs):
    """The same inputs as fresh leaves (a second graph for the other backend)."""
    return {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
            for k, v in inputs.items()}
