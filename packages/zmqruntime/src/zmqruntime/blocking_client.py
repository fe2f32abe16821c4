"""`BlockingExecutionClient`: the execution client for code without an event loop.

It owns a `LoopThread` for its whole life and runs an `ExecutionClient` on it, so its
sockets stay on one loop. Because the work happens on that thread, it also works when
called from inside an already running loop (a Jupyter cell). `close()` (or leaving the
`with` block) closes the client and joins the thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from zmqruntime.blocking import LoopThread
from zmqruntime.client import ClientEvent, ExecutionClient
from zmqruntime.connection import ConnectionInfo
from zmqruntime.engines import PollOutcome
from zmqruntime.messages import (
    CancelReply,
    Pong,
    ServerStatus,
    ShutdownReply,
    StatusReply,
    SubmitReply,
)

__all__ = ["BlockingExecutionClient"]


class BlockingExecutionClient:
    """Blocking twin of `ExecutionClient`: same methods, same errors, no `await`."""

    def __init__(self, info: ConnectionInfo, **options: Any) -> None:
        self._thread = LoopThread(name="zmqruntime-blocking-client").start()
        try:
            self._client: ExecutionClient = self._thread.run(lambda: _opened(info, options))
        except BaseException:
            self._thread.stop()
            raise

    @classmethod
    def connect(cls, source: ConnectionInfo | str | os.PathLike[str], **options: Any) -> Self:
        """Open a client from a `ConnectionInfo` or the path of a connection file."""
        info = source if isinstance(source, ConnectionInfo) else ConnectionInfo.read(source)
        return cls(info, **options)

    @property
    def info(self) -> ConnectionInfo:
        return self._client.info

    @property
    def server_epoch(self) -> str | None:
        return self._client.server_epoch

    def ping(self, *, timeout: float | None = None) -> Pong:
        return self._thread.run(lambda: self._client.ping(timeout=timeout))

    def submit(
        self,
        handler: str,
        params: Mapping[str, Any] | None = None,
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> SubmitReply:
        return self._thread.run(
            lambda: self._client.submit(
                handler,
                params,
                compile_only=compile_only,
                compile_artifact_id=compile_artifact_id,
                label=label,
                timeout=timeout,
            )
        )

    def status(self, execution_id: str, *, timeout: float | None = None) -> StatusReply:
        return self._thread.run(lambda: self._client.status(execution_id, timeout=timeout))

    def server_status(self, *, timeout: float | None = None) -> ServerStatus:
        """What `status()` without an id returns: running and queued work, workers, uptime."""
        return self._thread.run(lambda: self._client.status(timeout=timeout))

    def cancel(
        self, execution_id: str, *, force: bool = False, timeout: float | None = None
    ) -> CancelReply:
        return self._thread.run(
            lambda: self._client.cancel(execution_id, force=force, timeout=timeout)
        )

    def shutdown(self, *, force: bool = False, timeout: float | None = None) -> ShutdownReply:
        return self._thread.run(lambda: self._client.shutdown(force=force, timeout=timeout))

    def wait(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,
        liveness_timeout: float = 10.0,
        poll_interval: float = 1.0,
    ) -> PollOutcome:
        return self._thread.run(
            lambda: self._client.wait(
                execution_id,
                timeout=timeout,
                liveness_timeout=liveness_timeout,
                poll_interval=poll_interval,
            )
        )

    def events(self, execution_id: str | None = None) -> Iterator[ClientEvent]:
        """Blocking iterator over `ExecutionClient.events()`; close it to unsubscribe."""
        stream = self._client.events(execution_id)
        try:
            while True:
                yield self._thread.run(stream.__anext__)
        finally:
            if self._thread.running:
                self._thread.run(stream.aclose)

    def close(self) -> None:
        """Close the client's sockets, then stop and join its loop thread."""
        if self._thread.running:
            try:
                self._thread.run(self._client.close)
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


async def _opened(info: ConnectionInfo, options: Mapping[str, Any]) -> ExecutionClient:
    client = ExecutionClient(info, **options)
    await client.open()
    return client
