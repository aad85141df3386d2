"""Op tests: every ``torch.empty`` is poisoned (NaN, ints at their max) for the whole module, so a
kernel that leaves an output element unwritten, or reads memory nobody wrote, fails."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _poison_uninitialized_memory():
    import torch.utils.deterministic as det

    old_alg = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_alg, warn_only=old_warn)
        det.fill_uninitialized_memory = old_fill
