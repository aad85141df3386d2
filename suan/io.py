"""Atomic outputs: every file a command writes goes to a temporary file in the same folder and
is renamed into place (``os.replace``), so a crash or a full disk never leaves a half-written
file where a good one was, and readers never see a partial file. Plus the check that an output
is not one of the command's inputs."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Iterator

from .errors import UserError


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """``with atomic_open(path) as f: ...`` writes ``path`` all at once: the content goes to a
    temporary file beside it, fsynced and renamed over ``path`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder; expected a file path to write")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str, obj, **kw) -> None:
    kw.setdefault("indent", 2)
    with atomic_open(path) as f:
        json.dump(obj, f, **kw)


def save_torch(obj, path: str) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_figure(fig, path: str, **kw) -> None:
    ext = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=ext, **kw)


def same_file(a: str, b: str) -> bool:
    """True when the two paths name one file (links and relative paths resolved)."""
    if not (os.path.exists(a) and os.path.exists(b)):
        return os.path.realpath(a) == os.path.realpath(b)
    return os.path.samefile(a, b)


def refuse_overwriting_input(output: str, inputs, what: str = "output") -> None:
    """``UserError`` when ``output`` is one of the command's ``inputs``."""
    for inp in inputs:
        if inp and inp != "-" and output and output != "-" and same_file(output, inp):
            raise UserError(f"{what}: {output} is also the input {inp}; choose another path (no command overwrites "
                            "its own input)")


def cached_json(path: str, compute, expect: dict = None, upgrade=None):
    """``(result, True)`` from ``path`` when a finished run left it there (and its ``expect``
    entries match), else ``(compute(), False)`` with the result written to ``path`` atomically:
    long sweeps resume by skipping what is done. A stored result whose ``expect`` entries differ
    (another configuration under the same name) is refused, never silently reused. ``upgrade``
    maps a stored result to today's form (settings added since, at the value it ran with) before
    the comparison."""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot be read ({e}); remove it to run that step again") from None
        if upgrade is not None:
            stored = upgrade(stored)
        for key, value in (expect or {}).items():
            was = json.loads(json.dumps(stored.get(key)))
            if was != json.loads(json.dumps(value)):
                values = f" ({was}, now {value})" if isinstance(value, str) and isinstance(was, str) else ""
                raise UserError(f"{path}: was written with another {key}{values}; use another output folder "
                                "or remove it")
        return stored, True
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    result = compute()
    write_json(path, result)
    return result, False
