"""Where units of work run, passed in rather than imported (lhotse's ``executor=`` pattern).

The stages cut their work into units that need nothing but their arguments (a shard of a stream, a fold,
a group of inputs to predict) and hand them to an *executor*:

* :class:`Serial`: one after the other in this process;
* :class:`Local`: a pool of worker processes on this machine, each with its share of the cores as torch
  threads and ending with its parent (what ``prepare --workers N`` and batch prediction's read-ahead use);
* ``mmfer.cluster.RayExecutor``: Ray tasks on a cluster (``--ray``), same contract.

An executor's ``map(fn, jobs)`` yields ``(index, result)`` as units finish; ``fn`` must be a module-level
function (it may run in another process). ``shared_storage`` says whether the workers see this machine's
files, so a unit may write its own output there (a store shard, a fold folder) instead of sending it back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol


class Executor(Protocol):
    shared_storage: bool

    def map(self, fn: Callable, jobs: Sequence[tuple], cpus: int = 1, gpus: int = 0
            ) -> Iterator[tuple[int, Any]]: ...

    def has_gpus(self) -> bool: ...

    def cpus(self) -> int: ...


class Serial:
    """Every unit in this process, in order."""

    name = "this process"
    shared_storage = True

    def map(self, fn: Callable, jobs: Sequence[tuple], cpus: int = 1, gpus: int = 0) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(jobs):
            yield i, fn(*args)

    def has_gpus(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def cpus(self) -> int:
        return 1


class Local(Serial):
    """A process pool of ``workers`` on this machine (one unit, or one worker: in this process)."""

    name = "local worker processes"

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1

    def cpus(self) -> int:
        return self.workers

    def map(self, fn: Callable, jobs: Sequence[tuple], cpus: int = 1, gpus: int = 0) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1 or len(jobs) <= 1:
            yield from super().map(fn, jobs)
            return
        with self.pool(min(self.workers, len(jobs))) as pool:
            futures = {pool.submit(fn, *args): i for i, args in enumerate(jobs)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()

    @staticmethod
    @contextlib.contextmanager
    def pool(processes: int) -> Iterator[ProcessPoolExecutor]:
        """A process pool whose workers share the cores and end with this process."""
        pool = ProcessPoolExecutor(processes, initializer=init_worker, initargs=(processes,))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def executor_for(ray: str | None = None, workers: int = 0, transfer: bool = False) -> Executor:
    """The executor a command asks for: Ray tasks with ``ray`` (mmfer.cluster; only then is it imported),
    else a local pool of ``workers`` processes (0 = one per core)."""
    if ray:
        from mmfer.cluster import RayExecutor

        return RayExecutor(ray, transfer)
    return Local(workers)


def init_worker(processes: int) -> None:
    """Each worker process: ends with its parent, and shares the cores with the other workers (torch would
    otherwise start one thread per core in every worker)."""
    _die_with_parent()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(processes, 1)))


def _die_with_parent() -> None:
    """Worker processes end when their parent is killed (Linux: the parent-death signal)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
