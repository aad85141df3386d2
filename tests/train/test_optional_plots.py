"""Without matplotlib (the ``plot`` extra) the jobs say in one line that they skip their plots, and
no report links a plot that was not drawn."""
import json
import os
import shutil
import sys

import pytest

from suan import scaling
from suan.demo import _plot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


def test_scaling_report_without_matplotlib(tmp_path, no_matplotlib, capsys):
    shutil.copy(os.path.join(ROOT, "docs", "scaling-smoke", "scaling.json"), tmp_path / "scaling.json")
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert scaling.plot_scaling(result, str(tmp_path)) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scaling plots: skipped, matplotlib is not installed" in err
    assert "pip install 'suan[plot]'" in err
    md = scaling.render_report(str(tmp_path))
    assert "scaling.png" not in md and "distillation.png" not in md and "suan[plot]" in md
    assert not list(tmp_path.glob("*.png"))


def test_demo_plot_without_matplotlib(tmp_path, no_matplotlib, capsys):
    assert _plot({"lightsuan": {"train": [], "valid": []}}, str(tmp_path / "c.png")) is None
    assert "learning curves plot: skipped" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
