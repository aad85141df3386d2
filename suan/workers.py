"""Independent training runs on several processes (``suan compare --jobs``, ``suan scaling --jobs``).

Each run is a task for a fresh ("spawn") worker process with one thread; the parent keeps the
results in task order. A SIGTERM to the parent alone (a scheduler, ``kill``) reaches the workers
too: each saves its run's checkpoint and stops, queued runs are not started, and the parent waits
for the running ones and raises ``Interrupted`` instead of leaving them running on their own.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

from .errors import Interrupted


def run_in_processes(worker: Callable, tasks: Sequence, jobs: int, out_dir: str,
                     on_result: Optional[Callable[[int, object], None]] = None) -> List:
    """``[worker(t) for t in tasks]`` on ``jobs`` worker processes (``worker`` a module-level
    function, ``tasks`` picklable), in task order; ``on_result(i, result)`` as each finishes (in
    the order they finish, on the pool's result thread: keep it short, e.g. a line printed)."""
    import multiprocessing
    import signal
    import threading
    from concurrent.futures import CancelledError, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs: must be an int >= 1, got {jobs!r}")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(worker, t) for t in tasks]
        if on_result is not None:
            for i, f in enumerate(futures):
                f.add_done_callback(lambda f, i=i: _report(on_result, i, f))
        stopped = []

        def forward(signum, frame):
            stopped.append(signum)
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    os.kill(proc.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass

        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, forward) if main else None
        try:
            # in task order: a future cancelled by the SIGTERM handler ends this wait at once
            # (as_completed would wait for ever on futures the shutdown cancelled)
            return [f.result() for f in futures]
        except (CancelledError, BrokenProcessPool, Interrupted):
            if not stopped:
                raise
            raise Interrupted("stopped by SIGTERM: the runs in progress saved their checkpoints (a worker outside "
                              f"training stopped at once), finished runs are in {out_dir}; run the same "
                              "command again to resume") from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)


def _report(on_result: Callable, i: int, future) -> None:
    if not future.cancelled() and future.exception() is None:
        on_result(i, future.result())
