"""Shared test setup: the support package on the path, seeds, hypothesis profiles, --slow."""
import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)  # the support package
sys.path.insert(1, os.path.dirname(TESTS))  # the repository root: bench's tools (bench/compile_check.py)

from hypothesis import HealthCheck, settings  # noqa: E402

from support.strategies import set_budget_scale  # noqa: E402

# CI: derandomized (the same examples every run, so a failure reproduces), no deadline (the
# Triton interpreter is slow and its speed varies with the machine).
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])
settings.register_profile("ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("SUAN_HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="10x the generated cases of the property-based tests, random seeds (profile 'dev')")


def pytest_configure(config):
    if config.getoption("--slow"):
        set_budget_scale(10)
        settings.load_profile("dev")


def pytest_report_header(config):
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"torch {torch.__version__}, CUDA device: {cuda}, TRITON_INTERPRET="
            f"{os.environ.get('TRITON_INTERPRET', '')}, hypothesis profile {settings._current_profile}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield
