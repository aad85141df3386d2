"""``unified_attention``: jagged self-attention with an in-kernel relative position / time-bucket
bias, causal + target-isolation masks and block-sparse behavior patterns (SPEC section 7).

Where each part lives:

| file | what |
|---|---|
| ``op.py`` | the public op and its backend dispatch |
| ``call.py`` | ``AttentionCall``: the op's inputs as one value (unpacked only at ``torch.library``) |
| ``pattern.py`` | ``AttentionPattern``: window / dilation / global tokens |
| ``validation.py`` | the contract's checks (``ValueError`` naming the argument) |
| ``bias.py`` | time bucket, position index, table look-ups, allowed pairs and bias in tensor form |
| ``reference.py`` | the pure-PyTorch reference (the CPU path of the models) |
| ``naive.py`` | an explicit loop oracle, independent of the reference (tests) |
| ``layout.py`` | block lists of the kernels |
| ``triton_kernels.py`` | the Triton kernels: forward, dq (+ bias-table grads), dk/dv |
| ``launch.py`` | launchers (compiled on CUDA, interpreted on CPU) |
| ``function.py`` | ``torch.library`` custom ops + fake impls, the autograd Function |
"""
from .bias import padded_mask_and_bias, pair_allowed, pair_bias, position_index, time_bucket
from .call import AttentionCall, new_call
from .launch import set_bias_grad_mode
from .op import run, unified_attention
from .pattern import DENSE, AttentionPattern
from .reference import reuse_bias

__all__ = ["unified_attention", "run", "AttentionCall", "new_call", "AttentionPattern", "DENSE", "reuse_bias",
           "time_bucket", "position_index", "pair_allowed", "pair_bias", "padded_mask_and_bias",
           "set_bias_grad_mode"]
