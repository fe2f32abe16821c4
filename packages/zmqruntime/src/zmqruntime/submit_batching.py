"""Submissions made in one turn of the event loop travel together, as one request.

A program that submits many executions at once (`asyncio.gather`, the batch engine's window
of submissions) would otherwise pay a signed request and a signed reply per execution, on
both ends. `SubmitBatcher` holds each `submit` until the loop finishes its current turn, then
sends what was collected as one `submit_batch` request (docs/protocol.md §5): in call order,
each accepted or refused on its own, so every caller still gets its own reply or error. A
lone submission goes as a plain `submit`. A batch is split when its encoded size passes
`MAX_BATCH_BYTES`, so it stays far below any server's message size limit, and where the
calls' timeouts differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import attrs

from zmqruntime.client_errors import ClientClosed, ServerError
from zmqruntime.codec import Envelope
from zmqruntime.messages import (
    MAX_BATCH_SUBMITS,
    ErrorReply,
    Message,
    Submit,
    SubmitBatch,
    SubmitBatchReply,
    SubmitReply,
)
from zmqruntime.signing import frame_length

__all__ = ["MAX_BATCH_BYTES", "SubmitBatcher"]

#: A batch whose encoded request is larger than this is split in two (a submission larger
#: than this on its own is sent alone).
MAX_BATCH_BYTES: Final = 256 * 1024

#: Encodes a request: its request id and frames.
Encode = Callable[[Message], tuple[str, list[Any]]]
#: Sends encoded frames and returns the reply's envelope (error replies raise `ServerError`):
#: (request type, request id, frames, deadline in seconds).
Exchange = Callable[[str, str, list[Any], float], Awaitable[Envelope]]
#: Runs a coroutine as a task the client owns (cancelled when it closes).
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


@attrs.define
class _Pending:
    message: Submit
    deadline: float
    future: asyncio.Future[SubmitReply]


class SubmitBatcher:
    """Sends the `submit` calls of each loop turn as one request; see the module docstring."""

    def __init__(self, *, encode: Encode, exchange: Exchange, spawn: Spawn) -> None:
        self._encode = encode
        self._exchange = exchange
        self._spawn = spawn
        self._waiting: list[_Pending] = []

    async def submit(self, message: Submit, deadline: float) -> SubmitReply:
        """Send `message` with the others of this loop turn; its reply, or what a lone
        `submit` would raise."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        pending = _Pending(message, deadline, loop.create_future())
        self._waiting.append(pending)
        return await pending.future

    def _flush(self) -> None:
        """Cut the waiting calls (callers still waiting) into requests, in call order: a new
        request starts where the timeout changes, or when one is full."""
        waiting, self._waiting = self._waiting, []
        run: list[_Pending] = []
        for item in waiting:
            if item.future.done():
                continue  # its caller was cancelled before anything was sent
            if run and (item.deadline != run[0].deadline or len(run) == MAX_BATCH_SUBMITS):
                self._start(run)
                run = []
            run.append(item)
        if run:
            self._start(run)

    def _start(self, items: list[_Pending]) -> None:
        """Encode `items` as one request (halved while too large) and start sending it. Tasks
        start in the order they are made, and each sends before it first waits (or queues at
        the client's FIFO send gate), so requests leave in call order."""
        try:
            if len(items) == 1:
                what = Submit.TYPE
                request_id, frames = self._encode(items[0].message)
            else:
                what = SubmitBatch.TYPE
                batch = SubmitBatch(submits=tuple(item.message for item in items))
                request_id, frames = self._encode(batch)
                if sum(map(frame_length, frames)) > MAX_BATCH_BYTES:
                    half = len(items) // 2
                    self._start(items[:half])
                    self._start(items[half:])
                    return
        except Exception as exc:  # a submission the codec refuses (too large on its own)
            _fail(items, exc)
            return
        self._spawn(self._send(items, what, request_id, frames), what)

    async def _send(
        self, items: list[_Pending], what: str, request_id: str, frames: list[Any]
    ) -> None:
        try:
            envelope = await self._exchange(what, request_id, frames, items[0].deadline)
        except asyncio.CancelledError:
            _fail(items, ClientClosed("client closed while submitting"))
            raise
        except Exception as exc:  # the request as a whole failed: so did each submission
            _fail(items, exc)
            return
        _answer(items, envelope.message)


def _fail(items: list[_Pending], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


def _answer(items: list[_Pending], reply: Any) -> None:
    """Hand each caller its part of the reply (a mismatched reply fails them all)."""
    if len(items) == 1 and isinstance(reply, SubmitReply):
        outcomes: list[SubmitReply | ErrorReply | None] = [reply]
    elif isinstance(reply, SubmitBatchReply) and len(reply.outcomes) == len(items):
        outcomes = [outcome.reply or outcome.error for outcome in reply.outcomes]
    else:
        got = type(reply).__name__
        _fail(items, ServerError("invalid_request", f"unexpected {got} reply to submitting"))
        return
    for item, outcome in zip(items, outcomes, strict=True):
        if item.future.done():
            continue
        if isinstance(outcome, SubmitReply):
            item.future.set_result(outcome)
        elif isinstance(outcome, ErrorReply):
            item.future.set_exception(
                ServerError(str(outcome.code), outcome.message, outcome.details)
            )
