"""The Triton backend behind autograd and ``torch.compile``.

* ``torch.ops.suan.unified_attention_fwd`` / ``unified_attention_bwd`` are ``torch.library``
  custom ops with fake (meta) implementations, so a model using the op compiles under
  ``torch.compile`` without graph breaks; all data-dependent work (value checks, block layouts,
  host syncs) happens inside them. Their arguments are an ``AttentionCall`` unpacked
  (``AttentionCall.flat``): the tensors as one list, then plain numbers.
* ``UnifiedAttentionFunction`` (``torch.autograd.Function``) calls the two ops; it receives the
  differentiable inputs (``call.DIFFERENTIABLE``) as its tensor arguments.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .call import DIFFERENTIABLE, AttentionCall
from .launch import _Run


@torch.library.custom_op("suan::unified_attention_fwd", mutates_args=())
def unified_attention_fwd(tensors: List[Optional[Tensor]], num_buckets: int, pattern: List[int],
                          scale: float) -> Tuple[Tensor, Tensor]:
    """Returns ``out [T, H, dv]`` (q's dtype) and the log-sum-exp ``[H, T]`` (float32)."""
    return _Run(AttentionCall.from_flat(tensors, num_buckets, pattern, scale)).forward()


@unified_attention_fwd.register_fake
def _(tensors, num_buckets, pattern, scale):
    q, v = tensors[0], tensors[2]
    T, H, _ = q.shape
    return q.new_empty((T, H, v.shape[2])), q.new_empty((H, T), dtype=torch.float32)


@torch.library.custom_op("suan::unified_attention_bwd", mutates_args=())
def unified_attention_bwd(grad_out: Tensor, out: Tensor, lse: Tensor, tensors: List[Optional[Tensor]],
                          num_buckets: int, pattern: List[int], scale: float, needs: List[bool]) -> List[Tensor]:
    """Gradients of the ``DIFFERENTIABLE`` inputs in that order (an empty tensor where ``needs``
    is False or the input is absent)."""
    call = AttentionCall.from_flat(tensors, num_buckets, pattern, scale)
    need = dict(zip(DIFFERENTIABLE, needs))
    dq, dk, dv, dwp, dwt = _Run(call).backward(grad_out, out, lse, need["w_pos"], need["w_time"])
    return [dq, dk, dv, dwp, dwt]


@unified_attention_bwd.register_fake
def _(grad_out, out, lse, tensors, num_buckets, pattern, scale, needs):
    call = AttentionCall.from_flat(tensors, num_buckets, pattern, scale)
    grads = []
    for name, need in zip(DIFFERENTIABLE, needs):
        x = getattr(call, name)
        grads.append(torch.empty_like(x) if need and x is not None else call.q.new_empty((0,)))
    return grads


class UnifiedAttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the fused forward and backward kernels: ``apply(call, *call.differentiable())``."""

    @staticmethod
    def forward(ctx, call: AttentionCall, *differentiable):
        call = call.replace(**dict(zip(DIFFERENTIABLE, differentiable)))
        out, lse = torch.ops.suan.unified_attention_fwd(*call.flat())
        tensors, num_buckets, pattern, scale = call.flat()
        ctx.num_tensors = len(tensors)
        ctx.save_for_backward(out, lse, *tensors)
        ctx.params = (num_buckets, pattern, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, lse, *tensors = ctx.saved_tensors
        num_buckets, pattern, scale = ctx.params
        call = AttentionCall.from_flat(tensors, num_buckets, pattern, scale)
        present = [getattr(call, name) is not None for name in DIFFERENTIABLE]
        needs = [bool(ctx.needs_input_grad[1 + i]) and present[i] for i in range(len(DIFFERENTIABLE))]
        # without timestamps the time term is dropped: w_time gets no gradient (as in the reference)
        needs[DIFFERENTIABLE.index("w_time")] &= call.has_time
        grads = torch.ops.suan.unified_attention_bwd(grad_out.contiguous(), out, lse, tensors, num_buckets,
                                                     pattern, scale, needs)
        return (None, *[g if need else None for g, need in zip(grads, needs)])


def unified_attention_triton(call: AttentionCall) -> Tensor:
    """Entry from ``unified_attention`` (metadata already checked)."""
    return UnifiedAttentionFunction.apply(call, *call.differentiable())
