"""The `suan` command line."""
import json
import subprocess
import sys

from suan.cli import main


def test_grades_json(capsys):
    assert main(["grades", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    grades = data["grades"]
    assert len(grades) >= 6
    for g in grades:
        assert {"name", "layers", "d_model", "heads", "non_embedding_params"} <= set(g)
    params = [g["non_embedding_params"] for g in grades]
    assert max(params) / min(params) >= 1000


def test_grades_table(capsys):
    assert main(["grades"]) == 0
    out = capsys.readouterr().out
    assert "g0-nano" in out and "non-embedding" in out


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "suan.cli", "grades", "--json"], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out)["grades"][0]["name"] == "g0-nano"


def test_distill_study_flags_reach_the_study(monkeypatch):
    import suan.distill_study

    seen = {}
    monkeypatch.setattr(suan.distill_study, "run_distill_study", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["distill-study", "--preset", "ml100k", "--students", "g1", "--teacher-steps", "2",
                 "--references-only", "--jobs", "2", "--threads", "1", "--out", "runs/x"]) == 0
    assert seen["out"] == "runs/x" and seen["references_only"] is True and seen["students"] == ["g1"]
    assert seen["teacher_steps"] == [2] and seen["jobs"] == 2 and seen["threads"] == 1 and seen["preset"] == "ml100k"
    main(["distill-study", "--out", "runs/y"])
    assert seen["references_only"] is False and seen["threads"] is None
