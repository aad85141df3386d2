"""The one closeness check of the op tests: tolerances by dtype.

float64: rtol 1e-8, float32: rtol 1e-5 (atol 2e-5 for values near zero); float16 / bfloat16:
a relative (Frobenius) error below 1e-2 and no element off by more than 4e-2 of the largest
reference value. The kernels keep float32 accumulators but, like FlashAttention, round P and dS
to the input dtype before their matmuls, so values whose exact result cancels (dq of a row that
sees one key, bias-table gradients: sums of dS whose row sums vanish) can miss a relative
tolerance while being as exact as the dtype allows, and so can float32 elements where a sharp
softmax cancels: for them ``assert_close_or_as_pytorch`` applies FlashAttention's criterion
(against a float64 expected value, for float32). Every check also
refuses non-finite values (an unwritten, NaN-poisoned output).
"""
import torch

TOL = {torch.float64: 1e-8, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, with an absolute floor of 1e-3 per element for (near) zero references."""
    if b.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    floor = 1e-3 * b.numel() ** 0.5
    return ((a - b).norm() / max(b.norm().item(), floor)).item()


EPS = {torch.float64: 2.0 ** -52, torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "value") -> None:
    """``actual`` (any dtype) against ``expected`` with the tolerance of ``dtype``."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (an unwritten output?)"
    tol = TOL[dtype]
    if dtype == torch.float64:
        torch.testing.assert_close(actual.double(), expected.double(), atol=1e-10, rtol=tol, msg=what)
    elif dtype == torch.float32:
        torch.testing.assert_close(actual.double(), expected.double(), atol=2e-5, rtol=tol, msg=what)
    else:
        err = rel_err(actual, expected)
        assert err < tol, f"{what}: relative error {err:.2e} >= {tol}"
        scale = expected.double().abs().max().item() if expected.numel() else 0.0
        worst = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
        assert worst <= 4 * tol * max(scale, 1.0), f"{what}: max abs error {worst:.2e}"


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if b.numel() else 0.0


def assert_close_or_as_pytorch(actual: torch.Tensor, expected: torch.Tensor, lowp: torch.Tensor,
                               dtype: torch.dtype, what: str = "value") -> None:
    """Half precisions and float32, the FlashAttention criterion as a fallback: where the dtype
    tolerance of ``assert_close`` fails (values whose exact result cancels), ``actual`` must be at
    most twice as far from ``expected`` (float32 arithmetic for half precisions, float64 for
    float32) as ``lowp`` (the same function computed by PyTorch in ``dtype``), plus one unit in the
    last place of the largest expected value."""
    try:
        assert_close(actual, expected, dtype, what)
        return
    except AssertionError:
        if dtype == torch.float64:
            raise
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err, err_lp = max_abs(actual, expected), max_abs(lowp, expected)
    ulp = EPS[dtype] * (expected.double().abs().max().item() if expected.numel() else 0.0)
    assert err <= 2 * err_lp + ulp, (f"{what}: max abs error {err:.3e} > 2 x PyTorch-in-{dtype} error "
                                     f"{err_lp:.3e} + {ulp:.1e}")
