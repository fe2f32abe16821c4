"""ImmediateDispatcher and AsyncioDispatcher: where and when dispatched calls run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reactive_services import (
    AsyncioDispatcher,
    Dispatcher,
    DispatcherClosedError,
    ImmediateDispatcher,
)

WAIT_S = 5.0


def test_immediate_runs_in_place_and_propagates_errors() -> None:
    seen: list[tuple[int, int]] = []
    dispatcher = ImmediateDispatcher()
    assert isinstance(dispatcher, Dispatcher)
    dispatcher.dispatch(lambda a, b: seen.append((a, b)), 1, 2)
    assert seen == [(1, 2)]
    assert dispatcher.is_dispatch_thread()

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dispatcher.dispatch(boom)


def test_asyncio_dispatch_from_worker_runs_on_loop_thread(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    dispatcher = AsyncioDispatcher(loop_thread)
    assert isinstance(dispatcher, Dispatcher)
    done = threading.Event()
    ran_on: list[tuple[int, bool]] = []

    def callback(tag: str) -> None:
        assert tag == "x"
        ran_on.append((threading.get_ident(), dispatcher.is_dispatch_thread()))
        done.set()

    loop_ident: list[int] = []
    loop_thread.call_soon_threadsafe(lambda: loop_ident.append(threading.get_ident()))
    worker = threading.Thread(target=dispatcher.dispatch, args=(callback, "x"))
    worker.start()
    worker.join(WAIT_S)
    assert done.wait(WAIT_S)
    assert ran_on == [(loop_ident[0], True)]
    assert not dispatcher.is_dispatch_thread()  # the test thread is not the loop's


def test_asyncio_dispatch_keeps_per_thread_order(loop_thread: asyncio.AbstractEventLoop) -> None:
    dispatcher = AsyncioDispatcher(loop_thread)
    seen: list[tuple[int, int]] = []
    done = threading.Event()
    per_thread = 300

    def produce(worker: int) -> None:
        for i in range(per_thread):
            dispatcher.dispatch(seen.append, (worker, i))

    workers = [threading.Thread(target=produce, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_S)
    dispatcher.dispatch(done.set)
    assert done.wait(WAIT_S)
    assert len(seen) == 3 * per_thread
    for worker in range(3):
        assert [i for w, i in seen if w == worker] == list(range(per_thread))


def test_asyncio_dispatch_from_loop_thread_is_deferred() -> None:
    loop = asyncio.new_event_loop()
    try:
        dispatcher = AsyncioDispatcher(loop)
        order: list[str] = []

        async def main() -> None:
            assert dispatcher.is_dispatch_thread()
            dispatcher.dispatch(order.append, "dispatched")
            order.append("caller continues")
            await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert order == ["caller continues", "dispatched"]
    finally:
        loop.close()


def test_asyncio_dispatch_to_closed_loop_is_refused() -> None:
    loop = asyncio.new_event_loop()
    dispatcher = AsyncioDispatcher(loop)
    loop.close()
    with pytest.raises(DispatcherClosedError, match="closed"):
        dispatcher.dispatch(print, "never")
