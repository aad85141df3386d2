import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from jagged import make_inputs  # noqa: E402,F401  (re-exported for tests)


def pytest_report_header(config):
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"torch {torch.__version__}, CUDA device: {cuda}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


@pytest.fixture
def poison_empty():
    """Fill every torch.empty / empty_like with NaN (ints with their max) during the test, so that
    a kernel that leaves an output element unwritten, or reads memory nobody wrote, fails."""
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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
