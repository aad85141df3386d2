"""The main job's structure on a small preset (the full demo is run by the README command)."""
import json
import os

import pytest

from suan.demo import run_demo


@pytest.mark.slow
def test_demo_writes_report_and_curves(tmp_path):
    report = run_demo(str(tmp_path / "demo"), preset="tiny", epochs=1, progress=False,
                      data_dir=str(tmp_path / "data"))
    with open(tmp_path / "demo" / "report.json") as f:
        on_disk = json.load(f)
    assert set(on_disk["models"]) == {"lightsuan", "suan_teacher", "lightsuan_distilled"}
    for m in on_disk["models"].values():
        assert {"auc", "gauc", "logloss", "non_embedding_params", "ms_k1", "ms_k100"} <= set(m)
        assert 0.0 <= m["auc"] <= 1.0
    assert "teacher_minus_lightsuan_auc" in on_disk["margins"]
    assert os.path.exists(tmp_path / "demo" / "learning_curves.png")
    assert report["wall_time_s"] > 0
