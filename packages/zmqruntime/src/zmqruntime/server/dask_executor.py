"""Run handlers on a Dask `distributed` cluster (the optional `dask` extra).

`dask_executor_factory(address_or_client)` gives an `ExecutorFactory` for
`ExecutionServer(executor_factory=...)`: each job (`run_job(JobSpec)`, plain values) becomes
one Dask task, run with `pure=False` so no two executions are ever merged. Workers send
progress straight to the server's PULL socket over TCP, signed (and CURVE-encrypted when the
server uses Curve), so the server's progress endpoint must be reachable from every Dask worker.

A Dask worker that dies mid-task does not break this executor (unlike a process pool): the
scheduler re-runs the task elsewhere up to `distributed.scheduler.allowed-failures` times
(Dask's default 3; set it to 0 to fail at once), then fails it with `KilledWorker`, which
becomes a `worker_lost` outcome of that execution alone. The server never sees a
`BrokenExecutor`, so it never replaces this executor.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import threading
from collections.abc import Callable
from typing import Any

from zmqruntime.messages import ErrorCode
from zmqruntime.server.worker_pool import ExecutorFactory
from zmqruntime.server.worker_runtime import JobOutcome, JobSpec, failed_outcome

__all__ = ["DaskExecutor", "dask_executor_factory"]

# Imported by name so that type checking does not need the optional `distributed` installed
# (it is untyped anyway); an ImportError here means the `dask` extra is missing.
_distributed: Any = importlib.import_module("distributed")
_KilledWorker: type[BaseException] = _distributed.KilledWorker
_CommClosedError: type[BaseException] = importlib.import_module(
    "distributed.comm.core"
).CommClosedError


def _outcome_of(job: JobSpec, task: Any) -> JobOutcome:
    """The outcome of a finished Dask task: its result, or how Dask lost it."""
    execution_id = job["execution_id"]
    try:
        outcome: JobOutcome = task.result()
    except _KilledWorker as exc:
        return failed_outcome(
            ErrorCode.WORKER_LOST,
            f"dask worker lost while running execution {execution_id}: {exc}",
        )
    except (_CommClosedError, OSError) as exc:
        return failed_outcome(
            ErrorCode.WORKER_LOST,
            f"connection to the Dask cluster lost while running execution {execution_id}: {exc!r}",
        )
    except concurrent.futures.CancelledError:
        return failed_outcome(
            ErrorCode.INTERNAL, f"the Dask task of execution {execution_id} was cancelled"
        )
    return outcome


class DaskExecutor(concurrent.futures.Executor):
    """An executor of `run_job` on a Dask client; a lost worker fails only its job.

    `submit(fn, job)` returns a standard `concurrent.futures.Future` of the job's outcome.
    Dask's failures (`KilledWorker`, a closed connection to the cluster) become `worker_lost`
    outcomes instead of exceptions, so the server never mistakes one death for a broken pool.
    """

    def __init__(self, client: Any, *, owns_client: bool) -> None:
        self.client = client
        self._owns_client = owns_client
        self._lock = threading.Lock()
        self._tasks: set[Any] = set()
        self._shut_down = False

    def submit(  # type: ignore[override]
        self, fn: Callable[[JobSpec], JobOutcome], /, job: JobSpec
    ) -> concurrent.futures.Future[JobOutcome]:
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot submit after shutdown")
            task = self.client.submit(
                fn, job, pure=False, key=f"zmqruntime-{job['execution_id']}-{job['attempt']}"
            )
            self._tasks.add(task)
        future: concurrent.futures.Future[JobOutcome] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def done(finished: Any) -> None:  # runs in a thread of the Dask client
            with self._lock:
                self._tasks.discard(finished)
            try:
                future.set_result(_outcome_of(job, finished))
            except BaseException as exc:  # never leave the future pending
                future.set_exception(exc)

        task.add_done_callback(done)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; cancel the unfinished tasks if asked; close an owned client."""
        with self._lock:
            self._shut_down = True
            tasks = list(self._tasks)
        if cancel_futures and tasks:
            self.client.cancel(tasks)
        if self._owns_client:
            self.client.close()


def dask_executor_factory(address_or_client: Any) -> ExecutorFactory:
    """An `ExecutorFactory` running jobs on the Dask cluster at that scheduler address (a
    string: a client is created, and closed at shutdown) or through an existing
    `distributed.Client` (left open).

    The server's `workers` argument bounds how many executions it hands to Dask at once; set
    it to the cluster's number of worker threads.
    """

    def factory(workers: int) -> concurrent.futures.Executor:
        if isinstance(address_or_client, _distributed.Client):
            return DaskExecutor(address_or_client, owns_client=False)
        client = _distributed.Client(str(address_or_client), set_as_default=False)
        return DaskExecutor(client, owns_client=True)

    return factory
