"""Independent training runs on several processes (``suan compare --jobs``, ``suan scaling --jobs``).

Each run is a task for a fresh ("spawn") worker process with one thread (``--threads`` changes
it); the parent keeps the results in task order. A SIGTERM to the parent alone (a scheduler,
``kill``) reaches the workers too: each running one saves its run's checkpoint and stops, tasks not
started yet do not start, and the parent waits for them and raises ``Interrupted`` instead of
leaving them running on their own.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, List, Optional, Sequence

from .errors import Interrupted

_STOP = None  # in a worker: the parent's "stop" event (set on SIGTERM)


def _init_worker(stop, threads: Optional[int]) -> None:
    import torch

    global _STOP
    _STOP = stop
    torch.set_num_threads(threads or 1)  # one by default: the jobs share the machine's cores


def _call(worker: Callable, task):
    """A task in a worker: not started once the parent has been stopped (a task already handed to
    the worker's queue would otherwise start after the SIGTERM and run to its end)."""
    if _STOP is not None and _STOP.is_set():
        raise Interrupted("not started: the parent was stopped by SIGTERM")
    return worker(task)


def check_jobs(jobs) -> None:
    """``jobs`` (runs trained at a time) must be an int >= 1."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs: must be an int >= 1, got {jobs!r}")


def check_threads(threads) -> None:
    """``threads`` (torch threads per run) must be None or an int >= 1."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads: must be an int >= 1 (torch threads per run), got {threads!r}")


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside (None: left as it is), restored
    after. CPU float sums depend on the count, so a run repeats bit for bit only under the same
    one: ``threads=1`` makes a one-job run repeat a ``jobs > 1`` one (one thread each)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


def run_in_processes(worker: Callable, tasks: Sequence, jobs: int, out_dir: str,
                     on_result: Optional[Callable[[int, object], None]] = None,
                     threads: Optional[int] = None) -> List:
    """``[worker(t) for t in tasks]`` on ``jobs`` worker processes (``worker`` a module-level
    function, ``tasks`` picklable), in task order, each worker on ``threads`` torch threads
    (default one); ``on_result(i, result)`` as each finishes (in the order they finish, on the
    pool's result thread: keep it short, e.g. a line printed)."""
    import multiprocessing
    import signal
    import threading
    from concurrent.futures import CancelledError, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    check_jobs(jobs)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(stop, threads)) as pool:
        futures = [pool.submit(_call, worker, t) for t in tasks]
        if on_result is not None:
            for i, f in enumerate(futures):
                f.add_done_callback(lambda f, i=i: _report(on_result, i, f))
        stopped = []

        def forward(signum, frame):
            # the workers: a running task saves its checkpoint and raises Interrupted, a waiting one
            # does not start (the event). No pool.shutdown here: shutdown(wait=False) forgets the
            # pool's manager thread, which the interpreter's exit may then wake through a pipe it is
            # closing ("Bad file descriptor" at exit); the pool's own exit waits for the workers.
            stopped.append(signum)
            stop.set()
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    os.kill(proc.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass

        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, forward) if main else None
        try:
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
