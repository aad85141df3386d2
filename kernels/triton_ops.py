"""Triton backend of ``unified_attention`` (lands with the fused-kernel issue)."""


def unified_attention_triton(*args, **kwargs):
    raise NotImplementedError("backend='triton': the Triton kernels are not implemented yet; use backend='reference'")
