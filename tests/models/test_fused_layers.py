"""The drop-in layers inside a real model: swapping the reference attention for the fused
kernels (the Triton interpreter on CPU) keeps the parameters, the outputs and the gradients."""
import torch

import suan_kernels as kernels


def test_swap_helpers_keep_outputs_and_gradients():
    from suan import SUAN, config_for_grade, random_batch

    torch.manual_seed(0)
    cfg = config_for_grade("g0", max_len=20, dropout=0.0)
    model = SUAN(cfg).eval()
    batch = random_batch(cfg.schema, 3, 20, 2, seed=4)
    ref_out = model(batch)
    ref_grads = torch.autograd.grad(ref_out.sum(), list(model.parameters()))
    params_before = [id(p) for p in model.parameters()]
    assert kernels.swap_to_fused(model) == cfg.num_layers
    assert all(isinstance(b.attn, kernels.FusedUnifiedAttention) for b in model.blocks)
    assert [id(p) for p in model.parameters()] == params_before
    fused_out = model(batch)
    fused_grads = torch.autograd.grad(fused_out.sum(), list(model.parameters()))
    torch.testing.assert_close(fused_out, ref_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert kernels.swap_to_reference(model) == cfg.num_layers
    assert all(isinstance(b.attn, kernels.ReferenceUnifiedAttention) for b in model.blocks)
    torch.testing.assert_close(model(batch), ref_out)
