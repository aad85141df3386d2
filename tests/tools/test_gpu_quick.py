"""bench/gpu_quick.py and bench/common.py's baselines: every row a lent GPU will time computes the
function it claims, checked here on small CPU cases (the fused rows under the interpreter)."""
import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


@pytest.fixture(scope="module")
def quick():
    sys.path.insert(0, BENCH)
    try:
        import common
        import gpu_quick

        yield gpu_quick, common
    finally:
        sys.path.remove(BENCH)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")
def test_rows_compute_their_functions(quick):
    gpu_quick, common = quick
    case = common.make_case(40, B=2, H=2, dh=16, dtype=torch.float32, device="cpu", requires_grad=True)
    ref = common.impl_fn("reference", case)()
    assert torch.allclose(common.impl_fn("triton", case)(), ref, atol=1e-4)
    assert torch.allclose(common.impl_fn("sdpa", case)(), ref, atol=1e-4)
    # FlexAttention has no CPU backward (it refuses inputs that require grad); eager forward here
    plain = common.make_case(40, B=2, H=2, dh=16, dtype=torch.float32, device="cpu")
    assert torch.allclose(common.FlexRunner(compiled=False)(plain), ref.detach(), atol=1e-4)
    # the bias-free row: the same op without tables or timestamps
    bare = common.impl_fn("triton-nobias", case)()
    expected = common.run_op(common.without_bias(case), "reference")
    assert torch.allclose(bare, expected, atol=1e-4) and not torch.allclose(bare, ref, atol=1e-3)
    # FlashAttention-2's row: causal, no bias, no targets (not the same function, by design)
    q, k, v = (x.detach().view(2, 40, 2, 16).transpose(1, 2) for x in (case.q, case.k, case.v))
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(80, 2, 16)
    assert torch.allclose(common.impl_fn("flash", case)(), causal, atol=1e-5)
    # forward + backward: every parameter the row uses gets a gradient call
    gpu_quick._with_backward(common.impl_fn("triton-nobias", case), case)()


def test_time_bucket_int_matches_the_reference_bucket(quick):
    _, common = quick
    from suan_kernels.ops.unified_attention.bias import time_bucket

    k = torch.arange(0, 53)
    dt = torch.cat([(1 << k) - 1, 1 << k, (1 << k) + 1, torch.randint(0, 2 ** 53, (5000,)), torch.arange(-5, 5000)])
    for nb in (64, 20, 0):
        assert torch.equal(common.time_bucket_int(dt, nb), time_bucket(dt, nb))


def test_needs_a_gpu(quick):
    gpu_quick, _ = quick
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        gpu_quick.main(["--lengths", "64"])
