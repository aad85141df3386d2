"""Benchmark plumbing: every benchmark records its median in the session so later ones (the
fused kernels run last in each group) can store their speedup against each baseline measured
in the same run, plus derived figures in ``extra_info``."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

MEDIANS = {}  # (group, seq_len, impl) -> median seconds


def pytest_configure(config):
    # keep the CPU suite under ~10 minutes unless the caller asks for more
    if getattr(config.option, "benchmark_max_time", None) in (None, 1.0):
        config.option.benchmark_max_time = float(os.environ.get("SUAN_BENCH_MAX_TIME", "0.3"))
    if getattr(config.option, "benchmark_min_rounds", None) in (None, 5):
        config.option.benchmark_min_rounds = int(os.environ.get("SUAN_BENCH_MIN_ROUNDS", "3"))
    if getattr(config.option, "benchmark_warmup", None) in (None, False, "auto"):
        config.option.benchmark_warmup = True
        config.option.benchmark_warmup_iterations = 1


@pytest.fixture
def record(benchmark):
    """record(group, seq_len, impl, baselines=[...], **extra): store derived figures."""

    def _record(group, seq_len, impl, baselines=(), **extra):
        median = benchmark.stats.stats.median
        MEDIANS[(group, seq_len, impl)] = median
        benchmark.extra_info.update({k: v for k, v in extra.items() if v is not None})
        benchmark.extra_info["median_ms"] = median * 1e3
        for base in baselines:
            other = MEDIANS.get((group, seq_len, base)) if base != impl else None
            if other:
                benchmark.extra_info[f"speedup_vs_{base}"] = other / median
        return median

    return _record
