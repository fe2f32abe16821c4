"""Where `IntervalSnapshotPoller.tick()` runs a blocking fetch, so a GUI timer never blocks.

The default, `ThreadPerFetchRunner`, starts one named, non-daemon thread per fetch. The poller
allows at most one fetch in flight, so at most one such thread does work at a time; it ends
when the fetch ends (an idle poller holds no thread) and `close()` joins it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["FetchRunner", "InlineFetchRunner", "ThreadPerFetchRunner"]


class FetchRunner(Protocol):
    """Runs the poller's fetch jobs somewhere; owned and closed by the poller."""

    def start(self, job: Callable[[], None]) -> None:
        """Begin running `job` (it never raises; it reports its own errors)."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs and wait for started ones; raise `TimeoutError` if they outlive it.

        Called from inside a job (a hook closing its own poller), it skips the calling thread.
        """
        ...


class ThreadPerFetchRunner:
    """Runs each job on its own non-daemon thread; `close()` joins every thread it started."""

    __slots__ = ("_closed", "_lock", "_name", "_threads")

    def __init__(self, *, name: str = "reactive-services-fetch") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def start(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("ThreadPerFetchRunner is closed")
            self._threads = {t for t in self._threads if t.is_alive()}
            thread = threading.Thread(target=job, name=self._name)
            self._threads.add(thread)
            thread.start()

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"fetch thread {thread.name!r} still running after {timeout} s")


class InlineFetchRunner:
    """Runs each job at once on the thread that called `tick()` (consoles, scripts)."""

    __slots__ = ()

    def start(self, job: Callable[[], None]) -> None:
        job()

    def close(self, timeout: float | None = None) -> None:
        return None
