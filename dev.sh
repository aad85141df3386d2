#!/usr/bin/env bash
# One entry point for a fresh machine: set up the environment (idempotent), then run a job.
#
#   bash dev.sh demo --out runs/demo     # the main job
#   bash dev.sh test                     # the test suite (what CI runs)
#   bash dev.sh bench                    # pytest-benchmark suites
#   bash dev.sh <suan subcommand> ...    # any `suan` command, e.g. `bash dev.sh grades`
#
# torch is installed as the 2.13.0 CPU build unless the venv already has a torch (GPU users:
# create the venv with your CUDA torch first, or set SUAN_TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SUAN_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.suan-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q "${SUAN_TORCH_SPEC:-torch==2.13.0}"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[dev,plot]"
  touch "$stamp"
fi
job=${1:-test}
[ $# -gt 0 ] && shift
case "$job" in
  test)  exec "$VENV/bin/python" -m pytest -q "$@" ;;
  bench) exec "$VENV/bin/python" -m pytest bench --benchmark-only "$@" ;;
  *)     exec "$VENV/bin/suan" "$job" "$@" ;;
esac
