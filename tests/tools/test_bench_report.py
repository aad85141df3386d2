"""bench/report.py: a --benchmark-json file becomes Markdown tables per length and log-log plots."""
import json
import os

import pytest


def _load_report():
    from bench import report

    return report


def _bench(group, L, impl, median_s, **info):
    return {"name": f"test_fwd[{L}-{impl}]", "group": group, "params": {"seq_len": L, "impl": impl},
            "stats": {"median": median_s}, "extra_info": info}


def test_report_tables_and_plots(tmp_path):
    report = _load_report()
    data = {"machine_info": {"cpu": {"brand_raw": "test cpu"}, "python_version": "3.x"},
            "commit_info": {"id": "abcdef1234567"},
            "benchmarks": [_bench("fwd L=64", 64, "reference", 0.002, allowed_flops=1e6, speedup_vs_sdpa=None),
                           _bench("fwd L=64", 64, "sdpa", 0.001, allowed_flops=1e6),
                           _bench("fwd L=128", 128, "reference", 0.004, allowed_flops=4e6),
                           _bench("fwd L=128", 128, "sdpa", 0.003, allowed_flops=4e6)]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    md_path = tmp_path / "t.md"
    report.main([str(path), "--markdown", str(md_path), "--plot-dir", str(tmp_path / "plots")])
    md = md_path.read_text()
    assert "test cpu" in md and "abcdef1234" in md
    # one table per length, lengths in numeric order, medians in ms
    assert md.index("### fwd L=64") < md.index("### fwd L=128")
    assert "| reference | 2.000 | 1e+06 |" in md and "| sdpa | 3.000 | 4e+06 |" in md
    pytest.importorskip("matplotlib")
    assert os.path.exists(tmp_path / "plots" / "fwd.png")
