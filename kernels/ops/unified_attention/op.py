"""The public attention op ``unified_attention`` (SPEC section 7) and its backend dispatch."""
from __future__ import annotations

from typing import Optional

import torch

from .call import AttentionCall, new_call
from .reference import unified_attention_reference
from .validation import TRITON_DTYPES, check_metadata, check_timestamps, check_values


def unified_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: Optional[torch.Tensor] = None,
    num_targets: Optional[torch.Tensor] = None,
    w_pos: Optional[torch.Tensor] = None,
    w_time: Optional[torch.Tensor] = None,
    *,
    num_buckets: int = 128,
    window: Optional[int] = None,
    dilation: Optional[int] = None,
    num_global: int = 0,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Jagged self-attention with relative position/time bias, causal + target-isolation masks.

    Args:
        q, k: ``[T, H, dh]``; v: ``[T, H, dv]``. float16, bfloat16, float32 or float64, one device.
            T is the total token count of B sequences laid end to end.
        offsets: int64 ``[B+1]``; sequence b is rows ``offsets[b]:offsets[b+1]``.
        timestamps: ``[T]`` integer (or float) timestamps; needed for the time bias.
        num_targets: int ``[B]``; the last ``num_targets[b]`` rows of sequence b are targets
            (default: none). Targets sit at position n_b (the behavior count) and see every
            behavior of their sequence and themselves, never another target.
        w_pos: ``[2P-1]`` relative-position bias, indexed by ``clamp(pos_i - pos_j) + P - 1``.
        w_time: ``[num_buckets + 1]`` time bias, indexed by
            ``min(floor(log2(max(|ts_i - ts_j|, 1))), num_buckets)``.
        window, dilation, num_global: optional sparse pattern of behavior rows: behavior i sees
            j <= i with ``i - j < window`` or ``(i - j) % dilation == 0`` or ``j < num_global``.
        scale: score scale, default ``dh ** -0.5``.
        backend: ``"auto"`` (Triton on CUDA tensors, reference elsewhere), ``"triton"`` (on CPU
            tensors it runs the kernels under the Triton interpreter), ``"reference"``.

    Returns:
        ``[T, H, dv]`` in q's dtype. Differentiable in q, k, v, w_pos and w_time.

    Raises:
        ValueError: naming the argument, for shapes, dtypes, devices, offsets, num_targets,
            window or dilation that break the contract; timestamps that are not finite or span
            2**31 units or more within one sequence (when the time term is used); float64 with
            ``backend="triton"`` (``"auto"`` runs float64 on the reference).

    Strided inputs: any strides are accepted on both backends (the Triton path copies what its
    kernels read as dense arrays; its kernels are compiled per token and head stride of q, k and
    v, e.g. once for views of a packed qkv projection and once for separate tensors). No tokens:
    an empty output whose gradients are zeros.

    Non-finite values in q, k, v or the bias tables never reach another sequence. Within a
    sequence a non-finite q_i reaches row i only, a non-finite table entry only the rows whose
    pairs use it; a non-finite k_j reaches the rows that attend to j on the Triton path and may
    reach every row of its sequence on the reference, and a non-finite v_j may reach every row of
    its sequence on both (masked weights are exactly 0, but 0 x inf is NaN inside a matmul, as in
    SDPA and FlashAttention). Backward: a non-finite gradient row makes the bias-table gradients
    entirely NaN on the Triton path in its default deterministic mode (their int64 fixed-point
    accumulators cannot hold a NaN), and NaN in the entries it reaches on the reference and with
    ``set_bias_grad_mode("float")``; never a finite wrong value.
    """
    call = new_call(q, k, v, offsets, timestamps, num_targets, w_pos, w_time, num_buckets=num_buckets,
                    window=window, dilation=dilation, num_global=num_global, scale=scale)
    return run(call, backend)


# The Triton interpreter runs the kernels on CPU tensors; triton 3.6's cannot iterate over loop
# bounds loaded from memory (``range(e_lo, e_hi)``: "only 0-dimensional arrays can be converted to
# Python scalars"); 3.7, 3.8 and 3.9 were checked. Compiled kernels ran with 3.6 on an H200.
INTERPRETER_MIN_TRITON = (3, 7)


def check_interpreter_version(version: Optional[str] = None) -> None:
    """ValueError (naming ``backend``) when the installed triton's interpreter cannot run the kernels."""
    import triton

    version = version or triton.__version__
    parts = tuple(int(x) for x in version.split("+")[0].split(".")[:2] if x.isdigit())
    if parts < INTERPRETER_MIN_TRITON:
        need = ".".join(map(str, INTERPRETER_MIN_TRITON))
        raise ValueError(f"backend: 'triton' on CPU tensors runs the Triton interpreter, which needs triton >= {need} "
                         f"(installed: {version}); use backend='reference', CUDA tensors, or a newer triton")


def run(call: AttentionCall, backend: str = "auto") -> torch.Tensor:
    """``unified_attention`` of an ``AttentionCall``: checks, then the chosen backend."""
    check_metadata(call, backend)
    if call.q.shape[0] == 0:
        check_values(call)
        return _empty_output(call)
    if backend == "auto":  # float64 has no Triton kernel: the reference keeps its precision
        backend = "triton" if call.q.is_cuda and call.q.dtype in TRITON_DTYPES else "reference"
    if backend == "triton":
        if call.q.dtype not in TRITON_DTYPES:
            raise ValueError(f"q: {call.q.dtype} is not supported by the Triton kernels (they compute in float32, "
                             "which would silently lose float64 precision); use backend='reference' or float32")
        if not call.q.is_cuda:
            check_interpreter_version()
        from .function import unified_attention_triton

        return unified_attention_triton(call)
    lengths, nts = check_values(call)
    check_timestamps(call, lengths)
    return unified_attention_reference(call, lengths, nts)


def _empty_output(call: AttentionCall) -> torch.Tensor:
    """The ``[0, H, dv]`` output of a call without tokens, still in the autograd graph of every
    input it depends on (their gradients are zeros, as the backends give for unused rows)."""
    out = call.q.new_zeros((0, call.q.shape[1], call.v.shape[2]))
    used = [call.q, call.k, call.v, call.w_pos, call.w_time if call.has_time else None]
    links = [x.sum() * 0 for x in used if x is not None and x.requires_grad]
    return out + sum(links) if links else out
