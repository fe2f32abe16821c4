"""CompletionInbox: items put from other threads reach the loop once each, in put order,
with one loop wake-up for everything that was put while a wake-up was on its way."""

from __future__ import annotations

import asyncio
import threading

from zmqruntime.server.completions import CompletionInbox
from zmqruntime.testing import asyncio_test


@asyncio_test
async def test_items_from_threads_arrive_once_in_order_batched() -> None:
    loop = asyncio.get_running_loop()
    batches: list[list[tuple[int, int]]] = []
    threads, per_thread = 4, 2_000
    done = asyncio.Event()

    def on_batch(batch: list[tuple[int, int]]) -> None:
        batches.append(batch)
        if sum(map(len, batches)) == threads * per_thread:
            done.set()

    inbox: CompletionInbox[tuple[int, int]] = CompletionInbox(loop, on_batch)
    start = threading.Barrier(threads)

    def producer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            inbox.put((t, i))

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    await asyncio.wait_for(done.wait(), 20)
    for worker in workers:
        worker.join()
    delivered = [item for batch in batches for item in batch]
    assert sorted(delivered) == [(t, i) for t in range(threads) for i in range(per_thread)]
    for t in range(threads):  # each thread's items in the order it put them
        assert [i for (u, i) in delivered if u == t] == list(range(per_thread))
    assert len(batches) < threads * per_thread  # wake-ups were shared by many items
    assert all(batches)  # no empty delivery


@asyncio_test
async def test_a_put_after_a_delivery_wakes_the_loop_again() -> None:
    loop = asyncio.get_running_loop()
    seen: list[list[str]] = []
    arrived = asyncio.Event()

    def on_batch(batch: list[str]) -> None:
        seen.append(batch)
        arrived.set()

    inbox: CompletionInbox[str] = CompletionInbox(loop, on_batch)
    for item in ("a", "b"):
        arrived.clear()
        threading.Thread(target=inbox.put, args=(item,)).start()
        await asyncio.wait_for(arrived.wait(), 10)
    assert seen == [["a"], ["b"]]


def test_a_put_after_the_loop_closed_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    inbox: CompletionInbox[int] = CompletionInbox(loop, lambda batch: None)
    loop.close()
    inbox.put(1)  # no exception in the executor's thread
