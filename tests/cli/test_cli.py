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
