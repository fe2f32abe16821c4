"""`LoopSocket`: a plain (blocking-API) ZeroMQ socket driven by an asyncio loop's reader.

`zmq.asyncio` gives every receive its own future and walks an enum-flag state machine for it:
on a two-core machine that overhead, per small message, was as large as decoding and checking
the message itself. Here the socket's `ZMQ_FD` is watched with `loop.add_reader`, and each
wake-up drains every message waiting (non-blocking receives) into a synchronous callback, up to
`batch` messages in a row before yielding to the loop (at most `2 * batch - 1` when a wake-up
and a scheduled drain fall in one turn) so a flood never starves the loop's other
work. Sends are non-blocking calls made directly from the loop thread.

`ZMQ_FD` is edge-triggered and shared by sends and receives: a send can consume the edge that
announced an incoming message. So after a send made outside a drain, the socket's `EVENTS` are
read (which re-arms the edge) and a drain is scheduled if a message waits; a drain ends the
same way, and one that stops early schedules the next. Writability (a DEALER
with no connected peer) is awaited with `wait_writable`. Everything runs on the loop's thread;
no thread is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from zmqruntime.codec import recv_frames, send_frames

__all__ = ["LoopSocket"]

#: Messages handled in a row before the loop gets a turn.
DEFAULT_BATCH = 64

#: Receives a message's frames (bytes for the first `copy_head`, or all with `copy=True`;
#: `zmq.Frame`s for the rest).
MessageCallback = Callable[[list[Any]], None]
#: Told when the socket failed for good (closed under the reader, context terminated).
ErrorCallback = Callable[[BaseException], None]


class LoopSocket:
    """Feeds every message of `sock` to `on_message` from the running loop (see module doc).

    `on_message` runs synchronously and should not raise (an exception it lets through goes
    to the loop's exception handler, and receiving goes on). `on_error` is told once when
    the socket itself fails (receiving stops). With `on_message=None` nothing is received.
    `after_batch`, if given, runs once after each run of messages handed to `on_message`, so
    work that can wait for the end of a batch is done once per batch. The first `copy_head`
    frames of each message arrive as bytes even without `copy`: a message's small leading
    frames (routing id, topic, signature, envelope) cost less copied than wrapped as
    `zmq.Frame`s, and only its array frames, which can be large, stay zero-copy.
    """

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_message: MessageCallback | None,
        *,
        on_error: ErrorCallback | None = None,
        copy: bool = False,
        copy_head: int = 0,
        batch: int = DEFAULT_BATCH,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch!r}")
        self.sock = sock
        self._on_message = on_message
        self._on_error = on_error
        self._copy_head = sys.maxsize if copy else copy_head  # copy: every frame
        self._batch = batch
        self._after_batch = after_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._scheduled = False
        self._draining = False
        self._writable: list[asyncio.Future[None]] = []
        self._stopped = False

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the socket on the running loop and drain what already waits."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        fd = self.sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self._fd = fd
        self._loop.add_reader(fd, self._readable)
        self._schedule()

    def stop(self) -> None:
        """Stop watching (before the socket is closed); `wait_writable` returns False."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop is not None and self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        for waiter in self._writable:
            if not waiter.done():
                waiter.set_result(None)
        self._writable.clear()

    def close(self, linger: int = 0) -> None:
        """Stop watching and close the socket."""
        self.stop()
        self.sock.close(linger=linger)

    @property
    def stopped(self) -> bool:
        """True once `stop()` or `close()` was called, or the socket failed."""
        return self._stopped

    # -- sending --------------------------------------------------------------------------

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message without blocking (`zmq.Again` if the socket cannot take it)."""
        send_frames(self.sock, frames)
        if self._draining or self._on_message is None:
            return  # the drain under way reads EVENTS when it ends
        self._events()  # the send may have taken the edge that announced a message

    async def wait_writable(self, timeout: float) -> bool:
        """Wait until a send would not block (a peer is connected and has room); False on
        timeout or once the socket is stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._stopped and not self._events() & zmq.POLLOUT:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._writable.append(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, remaining)
            finally:
                with contextlib.suppress(ValueError):
                    self._writable.remove(waiter)
        return not self._stopped

    def _events(self) -> int:
        """The socket's `EVENTS`. Reading them re-arms the edge-triggered FD, so a message
        found waiting is drained on the next turn (no new edge would announce it)."""
        events = self.sock.getsockopt(zmq.EVENTS)
        assert isinstance(events, int)
        if events & zmq.POLLIN and self._on_message is not None and not self._draining:
            self._schedule()
        return events

    # -- receiving ------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self._stopped and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _readable(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._drain()

    def _drain(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        self._draining = True
        try:
            exhausted = self._receive_batch()
            if self.stopped:  # the callback stopped or closed the socket
                return
            # Reading EVENTS re-arms the edge-triggered FD (a message that slipped in after
            # the last receive is drained on the next turn).
            events = self.sock.getsockopt(zmq.EVENTS)
        except zmq.ZMQError as exc:
            self.stop()
            if self._on_error is not None:
                self._on_error(exc)
            else:
                self._loop_error("a LoopSocket's socket failed", exc)
            return
        finally:
            self._draining = False
        assert isinstance(events, int)
        if self._on_message is not None and (not exhausted or events & zmq.POLLIN):
            self._schedule()  # more may wait: the loop runs its other work first
        if events & zmq.POLLOUT and self._writable:
            for waiter in self._writable:
                if not waiter.done():
                    waiter.set_result(None)

    def _receive_batch(self) -> bool:
        """Hand up to `batch` waiting messages to the callback; True once none is left."""
        if self._on_message is None:
            return True
        handled = 0
        try:
            for _ in range(self._batch):
                try:
                    frames = recv_frames(self.sock, self._copy_head)
                except zmq.Again:
                    return True
                handled += 1
                try:
                    self._on_message(frames)
                except Exception as exc:  # the callback's own failure; keep receiving
                    self._loop_error("a LoopSocket message callback failed", exc)
                if self.stopped:  # the callback stopped or closed the socket
                    return True
            return False
        finally:
            if handled and self._after_batch is not None:
                try:
                    self._after_batch()
                except Exception as exc:
                    self._loop_error("a LoopSocket after_batch callback failed", exc)

    def _loop_error(self, message: str, exc: BaseException) -> None:
        if self._loop is not None:
            self._loop.call_exception_handler({"message": message, "exception": exc})
