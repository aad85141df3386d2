"""A run directory belongs to one run at a time: ``RunLock`` holds ``OUT/run.lock`` (process id,
host, start time). A second run into the folder refuses with a clear message while the owner
lives; a lock left by a process that no longer exists (a crash, a killed job) is taken over with
a notice. The lock is released when the run ends, whatever the reason."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Optional

from .errors import UserError

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def prepare_out_dir(path: str, what: str = "out-dir") -> str:
    """Create ``path`` (and parents) or explain why it cannot be a run folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what}: {path} is a file; choose a folder for the run's outputs")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what}: cannot create {path} ({e.strerror}); choose a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {path} is not writable; choose a writable folder")
    return path


class RunLock:
    """``with RunLock(out_dir): ...`` -- exclusive ownership of a run folder by this process."""

    def __init__(self, out_dir: str, what: str = "out-dir"):
        self.out_dir, self.what = out_dir, what
        self.path = os.path.join(out_dir, LOCK_NAME)
        self.held = False

    def _owner(self) -> Optional[dict]:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        prepare_out_dir(self.out_dir, self.what)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "argv": sys.argv}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written this instant, or damaged: look again
                    time.sleep(0.05)
                    owner = self._owner()
                pid = int(owner.get("pid", -1)) if owner else -1
                same_host = owner is not None and owner.get("host") == me["host"]
                if owner is not None and (not same_host or _alive(pid)) and pid != os.getpid():
                    raise UserError(f"{self.what}: {self.out_dir} is in use by another run (pid {pid} on "
                                    f"{owner.get('host')}, started {owner.get('started')}); wait for it to finish "
                                    f"or choose another --out-dir (remove {self.path} if that run is gone)")
                print(f"{self.what}: taking over {self.path} left by a run that is no longer running "
                      f"(pid {pid})", file=sys.stderr)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(f"{self.what}: could not take {self.path}; another run keeps creating it")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
