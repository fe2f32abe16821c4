"""Test helpers for code built on reactive_services: a fake clock and scripted hand-offs.

These script *when* things happen (time passing, a queued callback running, a fetch job
running) so a test can drive an exact interleaving; the component under test stays real.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TypeVarTuple

__all__ = ["FakeClock", "ManualDispatcher", "ManualFetchRunner"]

Ts = TypeVarTuple("Ts")


class FakeClock:
    """A monotonic clock that only moves when told to; call it like `time.monotonic`."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back; got advance({seconds!r})")
        self._now += seconds


class ManualDispatcher:
    """Queues dispatched calls until the test runs them with `run_next()` / `run_all()`.

    Stands in for a GUI event loop whose turn comes later; `is_dispatch_thread()` is true on
    the thread that created it.
    """

    __slots__ = ("_lock", "_owner", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Callable[[], object]] = deque()
        self._lock = threading.Lock()
        self._owner = threading.get_ident()

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        with self._lock:
            self._queue.append(lambda: fn(*args))

    def is_dispatch_thread(self) -> bool:
        return threading.get_ident() == self._owner

    def __len__(self) -> int:
        return len(self._queue)

    def run_next(self) -> bool:
        """Run the oldest queued call; False if the queue was empty."""
        with self._lock:
            if not self._queue:
                return False
            call = self._queue.popleft()
        call()
        return True

    def run_all(self) -> int:
        """Run queued calls (including ones queued meanwhile) until empty; returns how many."""
        count = 0
        while self.run_next():
            count += 1
        return count


class ManualFetchRunner:
    """Holds the poller's fetch jobs until the test runs them with `run_next()`."""

    __slots__ = ("_closed", "_jobs")

    def __init__(self) -> None:
        self._jobs: deque[Callable[[], None]] = deque()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._jobs)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self, job: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError("ManualFetchRunner is closed")
        self._jobs.append(job)

    def run_next(self) -> None:
        """Run the oldest held job (raises IndexError if none is held)."""
        self._jobs.popleft()()

    def close(self, timeout: float | None = None) -> None:
        self._closed = True
