"""CUDA only: the compiled kernels at realistic sizes (B=64, L up to 4096, H=4, dh=64, bf16).

Attention never crosses sequences, so the reference runs on a few sequences sliced out of the
batch and is compared with the fused kernel's rows of those sequences (outputs, dq, dk, dv);
the bias-table gradients, sums over the whole batch, are compared on a batch of 8."""
import pytest
import torch

import suan_kernels as kernels
from support.jagged import make_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12)).item()


@pytest.mark.parametrize("L", [256, 1024, 4096])
@pytest.mark.parametrize("pattern", [{}, {"window": 128}, {"window": 32, "dilation": 8, "num_global": 4}],
                         ids=["dense", "w128", "w32-r8-g4"])
def test_realistic_bf16_parity(L, pattern):
    torch.manual_seed(0)
    B, H, dh = 64, 4, 64
    inp = make_inputs([L] * B, [8] * B, heads=H, head_dim=dh, num_positions=L + 1, num_buckets=64,
                      dtype=torch.bfloat16, device="cuda", requires_grad=True)
    out = kernels.unified_attention(inp["q"], inp["k"], inp["v"], inp["offsets"], inp["timestamps"],
                                    inp["num_targets"], inp["w_pos"], inp["w_time"], num_buckets=64,
                                    backend="triton", **pattern)
    g = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, [inp["q"], inp["k"], inp["v"]], g)
    for b in (0, 17, 63):
        rows = slice(b * L, (b + 1) * L)
        sub = {k: (v[rows].detach().requires_grad_() if k in ("q", "k", "v") else v)
               for k, v in inp.items() if k in ("q", "k", "v")}
        ref = kernels.unified_attention(sub["q"], sub["k"], sub["v"], torch.tensor([0, L], device="cuda"),
                                        inp["timestamps"][rows], inp["num_targets"][:1], inp["w_pos"],
                                        inp["w_time"], num_buckets=64, backend="reference", **pattern)
        rq, rk, rv = torch.autograd.grad(ref, [sub["q"], sub["k"], sub["v"]], g[rows])
        assert torch.isfinite(out[rows]).all()
        assert _rel(out[rows], ref) < 1e-2
        for a, r in ((dq[rows], rq), (dk[rows], rk), (dv[rows], rv)):
            assert _rel(a, r) < 2e-2


@pytest.mark.parametrize("pattern", [{}, {"window": 64, "dilation": 4}])
def test_bias_grads_cuda(pattern):
    torch.manual_seed(1)
    inp = make_inputs([512] * 8, [4] * 8, heads=4, head_dim=64, num_positions=513, num_buckets=64,
                      dtype=torch.bfloat16, device="cuda", requires_grad=True)
    args = lambda d: (d["q"], d["k"], d["v"], d["offsets"], d["timestamps"], d["num_targets"], d["w_pos"], d["w_time"])  # noqa
    out = kernels.unified_attention(*args(inp), num_buckets=64, backend="triton", **pattern)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [inp["w_pos"], inp["w_time"]], g)
    ref = kernels.unified_attention(*args(inp), num_buckets=64, backend="reference", **pattern)
    exp = torch.autograd.grad(ref, [inp["w_pos"], inp["w_time"]], g)
    for a, b in zip(got, exp):
        assert _rel(a, b) < 2e-2
