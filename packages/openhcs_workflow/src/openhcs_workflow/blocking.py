"""`BlockingBatchWorkflowService`: the service for code without an event loop (a Qt GUI, a script).

The service runs on a `zmqruntime.blocking.LoopThread` of its own; each method hands its
coroutine to that loop. Host callbacks still arrive through `host.dispatcher` (a
`QtDispatcher` puts them on the GUI thread). `start_run` / `start_compile` return a
`concurrent.futures.Future` so a GUI can start a batch without blocking, and call `stop()`
while it runs.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from openhcs_workflow.backend import WorkflowBackend
from openhcs_workflow.batch import BatchReport, PlateSpec
from openhcs_workflow.host import Host
from openhcs_workflow.service import BatchWorkflowService
from openhcs_workflow.workflow_state import WorkflowView
from zmqruntime.blocking import LoopThread

__all__ = ["BlockingBatchWorkflowService"]

T = TypeVar("T")


class BlockingBatchWorkflowService:
    """A `BatchWorkflowService` on a private loop thread, with blocking methods.

    `backend_factory` is called on that loop (sockets belong to the loop that uses them);
    `options` are `BatchWorkflowService` keyword arguments. Use as a context manager or call
    `close()`.
    """

    def __init__(
        self,
        host: Host,
        backend_factory: Callable[[], WorkflowBackend | Awaitable[WorkflowBackend]],
        **options: Any,
    ) -> None:
        if not isinstance(host, Host):
            raise TypeError(
                f"host: expected a subclass of openhcs_workflow.Host, got {type(host).__qualname__}"
            )
        self._thread = LoopThread(name="openhcs-workflow").start()

        async def create() -> BatchWorkflowService:
            made = backend_factory()
            backend = made if isinstance(made, WorkflowBackend) else await made
            return BatchWorkflowService(host, backend, **options)

        try:
            self.service = self._thread.run(create)
        except BaseException:
            self._thread.stop()
            raise

    @property
    def view(self) -> WorkflowView:
        """The service's read-only view (safe from any thread)."""
        return self.service.view

    def _run(self, factory: Callable[[], Awaitable[T]]) -> T:
        return self._thread.run(factory)

    def run_on_loop(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `await factory()` on the service's loop (e.g. a backend call) and return it."""
        return self._thread.run(factory)

    def compile_plates(self, plates: Iterable[PlateSpec]) -> BatchReport:
        specs = list(plates)
        return self._run(lambda: self.service.compile_plates(specs))

    def run_plates(self, plates: Iterable[PlateSpec]) -> BatchReport:
        specs = list(plates)
        return self._run(lambda: self.service.run_plates(specs))

    def start_compile(self, plates: Iterable[PlateSpec]) -> concurrent.futures.Future[BatchReport]:
        """Start a compile-only batch; the future ends with its report (or BatchBusyError)."""
        specs = list(plates)
        return self._thread.submit(lambda: self.service.compile_plates(specs))

    def start_run(self, plates: Iterable[PlateSpec]) -> concurrent.futures.Future[BatchReport]:
        """Start a run batch; the future ends with its report (or BatchBusyError)."""
        specs = list(plates)
        return self._thread.submit(lambda: self.service.run_plates(specs))

    def stop(self, force: bool = False) -> None:
        self._run(lambda: self.service.stop(force))

    def begin_init(self, plate_ids: Iterable[str]) -> None:
        ids = list(plate_ids)
        self._run(lambda: self.service.begin_init(ids))

    def end_init(self, plate_id: str, *, error: str | None = None) -> None:
        self._run(lambda: self.service.end_init(plate_id, error=error))

    def invalidate_compiled(self, plate_id: str) -> None:
        self._run(lambda: self.service.invalidate_compiled(plate_id))

    def close(self) -> None:
        """Shut the service down, close the backend it was made with, stop the thread."""
        if not self._thread.running:
            return

        async def finish() -> None:
            try:
                await self.service.shutdown()
            finally:
                await self.service.backend.aclose()

        try:
            self._run(finish)
        finally:
            self._thread.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
