"""An execution server with the reference pipeline's handlers, inside this process.

- `plate_server()`: an `ExecutionServer` for the `compile`/`execute` plate handlers, bound to
  loopback, with a spawned worker process pool; start it on your own event loop
  (`async with plate_server() as server:`). The demo does this.
- `LocalServer`: the same server on a loop thread of its own, with a blocking `start`/`stop`,
  for code whose own thread must stay free while the server works: a Qt GUI, or a notebook
  cell that blocks on `BlockingBatchWorkflowService` (a server on the kernel's loop would
  wait for the blocked cell).

Either way the workers are child processes of this one; shutting the server down ends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from openhcs_workflow.pipeline.handlers import HANDLERS
from zmqruntime.blocking import LoopThread
from zmqruntime.connection import ConnectionInfo
from zmqruntime.server import ExecutionServer

__all__ = ["LocalServer", "plate_server"]


def plate_server(
    *, workers: int = 2, handlers: Mapping[str, Any] | str = HANDLERS, **options: Any
) -> ExecutionServer:
    """A (not yet started) loopback `ExecutionServer` running the plate handlers.

    `options` are further `ExecutionServer` keyword arguments.
    """
    return ExecutionServer(handlers, workers=workers, **options)


class LocalServer:
    """A `plate_server()` on a `LoopThread` of its own, driven by blocking calls.

    `start()` returns the `ConnectionInfo` to connect clients with; `stop()` shuts the server
    down (graceful by default: running executions finish; `force=True` ends the workers now)
    and joins the thread. Use as a context manager (a forced stop when leaving on an error).
    """

    def __init__(self, *, workers: int = 2, **options: Any) -> None:
        self._workers = workers
        self._options = options
        self._thread: LoopThread | None = None
        self._server: ExecutionServer | None = None

    @property
    def connection_info(self) -> ConnectionInfo:
        if self._server is None:
            raise RuntimeError("LocalServer is not started; call start() first")
        return self._server.connection_info

    def start(self) -> ConnectionInfo:
        """Start the thread and the server; returns the connection info."""
        if self._thread is not None:
            raise RuntimeError("LocalServer can be started only once")
        thread = self._thread = LoopThread(name="openhcs-local-server").start()

        async def start() -> ExecutionServer:
            server = plate_server(workers=self._workers, **self._options)
            await server.start()
            return server

        try:
            self._server = thread.run(start)
        except BaseException:
            thread.stop()
            raise
        return self._server.connection_info

    def stop(self, *, force: bool = False) -> None:
        """Shut the server down and stop its thread. Idempotent."""
        thread, server = self._thread, self._server
        if thread is None or not thread.running:
            return
        try:
            if server is not None and not server.closed:
                thread.run(lambda: server.shutdown(force=force))
        finally:
            thread.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(force=exc_type is not None)
