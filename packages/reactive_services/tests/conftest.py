"""Fixtures shared by the reactive_services tests: thread-leak guard and a loop-owning thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

THREAD_JOIN_DEADLINE_S = 5.0


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a thread of its own running (joined with a deadline first)."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before]
    deadline = time.monotonic() + THREAD_JOIN_DEADLINE_S
    for thread in leftover:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in leftover if t.is_alive()]
    assert not alive, f"threads left running: {alive}"


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop running on its own thread (a stand-in GUI thread), closed afterwards."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name="test-loop-thread")
    thread.start()
    assert started.wait(THREAD_JOIN_DEADLINE_S)
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(THREAD_JOIN_DEADLINE_S)
        assert not thread.is_alive()
        loop.close()
