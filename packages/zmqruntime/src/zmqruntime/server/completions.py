"""`CompletionInbox`: executor results finishing in other threads, handed to the loop in batches.

`asyncio.wrap_future` costs, per job, a loop future, a task to await it and one wake-up of
the loop through its self-pipe from the executor's thread; under a stream of short jobs those
wake-ups (a syscall each, and a fight for the GIL with the loop) were a large share of the
server's time. Here a finished future is appended to a queue from whatever thread finished it,
and the loop is woken only when the queue goes from empty to non-empty: one wake-up hands over
every result that finished meanwhile, in the order they finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["CompletionInbox"]

T = TypeVar("T")


class CompletionInbox(Generic[T]):
    """Items `put` from any thread reach `on_batch` on `loop`, as lists, in `put` order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_batch: Callable[[list[T]], None]):
        self._loop = loop
        self._on_batch = on_batch
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def put(self, item: T) -> None:
        """Queue `item` (any thread); wakes the loop unless a wake-up is already on its way.
        Once the loop is closed, items are dropped (nothing would run them)."""
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False  # a put from now on wakes the loop again
            batch = list(self._items)
            self._items.clear()
        if batch:
            self._on_batch(batch)
