"""The layering the project keeps: the kernels package never imports the models (``suan``), and
the op tests do not either (they run with the kernels alone)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUAN_IMPORT = re.compile(r"^\s*(from\s+suan(\.|\s)|import\s+suan(\.|\s|$))", re.M)


def _python_files(folder):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(base, name)


def test_kernels_never_import_suan():
    offenders = [p for p in _python_files("kernels") if SUAN_IMPORT.search(open(p).read())]
    assert not offenders, offenders
    code = ("import sys, suan_kernels, suan_kernels.ops.unified_attention.launch; "
            "bad = [m for m in sys.modules if m == 'suan' or m.startswith('suan.')]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_op_tests_never_import_suan():
    offenders = [p for p in _python_files(os.path.join("tests", "ops")) if SUAN_IMPORT.search(open(p).read())]
    assert not offenders, offenders
