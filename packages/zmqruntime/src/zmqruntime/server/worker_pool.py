"""The executor a server is given to run handlers on, one generation at a time.

By default the server runs handlers on worker processes of its own (`process_workers`). Given
an `executor_factory`, it runs them on any `concurrent.futures.Executor` instead (a Dask
`Client.get_executor()`, a thread pool for tests of handlers that need no isolation, or the
process pool of `default_executor_factory`), because the job and its outcome are plain values.
A process pool uses the `spawn` start method: the server holds ZeroMQ sockets and an event
loop, which a forked child must never inherit.

When a worker process dies, a process pool breaks: every future still in it fails with
`BrokenProcessPool` and the pool ends its other workers. `WorkerPool` records, at the moment
the first future breaks (before the pool ends the others), which of its processes were already
dead and how they died, so the server can tell the execution whose worker was lost from the
ones that were only caught in the breakage (those are started again on a fresh pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from typing import Any

from zmqruntime.server.worker_runtime import JobOutcome, JobSpec, run_job, worker_initializer

__all__ = [
    "ExecutorFactory",
    "WorkerPool",
    "default_executor_factory",
    "describe_exit",
    "exit_description",
    "sigint_blocked",
]

log = logging.getLogger(__name__)

#: Longest wait for a dying worker's exit status to become readable.
_EXIT_STATUS_WAIT = 2.0

#: Builds an executor for at most the given number of concurrent jobs.
ExecutorFactory = Callable[[int], Executor]


def default_executor_factory(workers: int) -> Executor:
    """A process pool of `workers` spawned processes that die with the server."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_initializer,
        initargs=(os.getpid(),),
    )


def describe_exit(exitcode: int) -> str:
    """`killed by signal SIGKILL (9)` / `exited with code 3` for a process exit code."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-exitcode})"
    return f"exited with code {exitcode}"


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while it may start worker processes.

    A child inherits the signal mask across fork and exec, so a worker is born with SIGINT
    blocked and a Ctrl-C sent to the whole process group (a terminal's) cannot kill it before
    `worker_initializer` has made it ignore SIGINT. The server's own SIGINT stays pending for
    the moment of the submit and is handled right after.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pool_processes(executor: Executor) -> list[Any]:
    """The `multiprocessing.Process` objects of a process pool (empty for other executors).

    `ProcessPoolExecutor._processes` is private but has existed unchanged since Python 3.2;
    it is the only way to know which processes belong to *this* pool, which is needed to end
    them on a forced shutdown and to learn how a dead worker died.
    """
    processes = getattr(executor, "_processes", None)
    if not isinstance(executor, ProcessPoolExecutor) or not isinstance(processes, Mapping):
        return []
    return list(processes.values())


class _Generation:
    """One executor and what was learned when it broke."""

    def __init__(self, number: int, executor: Executor) -> None:
        self.number = number
        self.executor = executor
        self._lock = threading.Lock()
        self.dead: dict[int, str] | None = None

    def snapshot_dead(self) -> None:
        """Record which pool processes are dead now (called once, when the pool breaks).

        Runs in the pool's manager thread, inside `Future.set_exception`, before the pool
        terminates its remaining workers, so only processes that died on their own are found.
        """
        with self._lock:
            if self.dead is not None:
                return
            dead: dict[int, str] = {}
            for process in _pool_processes(self.executor):
                if process.pid is None:
                    continue
                how = exit_description(process)
                if how is not None:
                    dead[process.pid] = how
            self.dead = dead


def exit_description(process: Any) -> str | None:
    """How a worker process ended, or None while it runs; never reaps it (its owner does).

    A dead worker's sentinel pipe reads as closed slightly before the kernel makes its exit
    status available, so a process whose sentinel is closed is given a moment to become
    waitable. `waitid(WNOWAIT)` reads the status and leaves the child to be reaped as usual.
    """
    if process.exitcode is not None:
        return describe_exit(process.exitcode)
    if not multiprocessing.connection.wait([process.sentinel], timeout=0):
        return None
    deadline = time.monotonic() + _EXIT_STATUS_WAIT
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped by someone else
            code = process.exitcode
            return describe_exit(code) if code is not None else "exited (status unknown)"
        if info is not None and info.si_pid == process.pid:
            if info.si_code == os.CLD_EXITED:
                return describe_exit(info.si_status)
            return describe_exit(-info.si_status)
        if time.monotonic() >= deadline:
            return "closed its pipe to the pool (exit status not available)"
        time.sleep(0.001)


class WorkerPool:
    """Submits jobs to the current executor generation; replaces it when it breaks."""

    def __init__(self, factory: ExecutorFactory, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}")
        self._factory = factory
        self.workers = workers
        self._current = _Generation(1, factory(workers))
        self._retired: list[_Generation] = []

    @property
    def generation(self) -> int:
        """Number of the current executor (rises by one at each replacement)."""
        return self._current.number

    def submit(self, job: JobSpec) -> tuple[int, Future[JobOutcome]]:
        """Start `run_job(job)` on the current executor; returns its generation and future."""
        generation = self._current
        with sigint_blocked():  # a process pool may start a worker inside submit()
            future: Future[JobOutcome] = generation.executor.submit(run_job, job)

        def on_done(done: Future[JobOutcome]) -> None:
            if not done.cancelled() and isinstance(done.exception(), BrokenExecutor):
                generation.snapshot_dead()

        future.add_done_callback(on_done)
        return generation.number, future

    def dead_workers(self, generation: int) -> Mapping[int, str]:
        """Pids found dead when generation `generation` broke, with how each died."""
        for gen in (self._current, *self._retired):
            if gen.number == generation:
                return dict(gen.dead or {})
        return {}

    def replace(self, broken_generation: int) -> bool:
        """Start a fresh executor if `broken_generation` is still current; True if replaced."""
        if broken_generation != self._current.number:
            return False
        old = self._current
        self._current = _Generation(old.number + 1, self._factory(self.workers))
        self._retired.append(old)
        del self._retired[:-4]  # a few old generations suffice to answer late questions
        with contextlib.suppress(Exception):
            old.executor.shutdown(wait=False, cancel_futures=True)
        log.warning("worker pool %d broke; started pool %d", old.number, self._current.number)
        return True

    def process_pids(self) -> set[int]:
        """Pids of the current pool's processes (empty for non-process executors).

        Liveness is not checked here: `Process.is_alive()` reaps, and must stay the pool's job.
        """
        return {p.pid for p in _pool_processes(self._current.executor) if p.pid}

    def kill_all(self) -> None:
        """SIGKILL every process of the current pool (forced shutdown)."""
        for process in _pool_processes(self._current.executor):
            with contextlib.suppress(Exception):
                process.kill()

    async def close(self, *, kill: bool, wait: bool = True) -> None:
        """End the executors; with `wait`, also wait for their processes to exit (joining
        blocks, so it runs in a worker thread of the loop)."""
        if kill:
            self.kill_all()
        executors = [gen.executor for gen in (*self._retired, self._current)]

        def shutdown_all() -> None:
            for executor in executors:
                executor.shutdown(wait=wait, cancel_futures=True)

        await asyncio.to_thread(shutdown_all)
