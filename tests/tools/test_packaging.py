"""The installed wheel holds this project's import names only (``suan``, ``suan_kernels``: no
top-level ``kernels`` to shadow the package of that name that ships beside transformers), and
every module of both source folders."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sources(folder, package):
    out = set()
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, name), os.path.join(ROOT, folder))
                out.add(f"{package}/{rel}")
    return out


def test_wheel_top_level_modules_are_only_ours(tmp_path):
    src = tmp_path / "src"
    # a copy of the project files the build reads, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "docs", "build", "*.egg-info",
                                                                "__pycache__", ".hypothesis", "bench", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = list((tmp_path / "dist").glob("suan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"suan", "suan_kernels"}
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        listed = zipfile.ZipFile(wheel).read(top_level[0]).decode().split()
        assert sorted(listed) == ["suan", "suan_kernels"]
    expected = _sources("kernels", "suan_kernels") | _sources("suan", "suan")
    assert expected <= set(names), sorted(expected - set(names))
