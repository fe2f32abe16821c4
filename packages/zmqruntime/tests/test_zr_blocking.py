"""run_blocking and LoopThread: results, exceptions, Ctrl-C, timeouts, no threads left."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from zmqruntime.blocking import LoopThread, run_blocking


class Boom(Exception):
    pass


async def answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def fail() -> None:
    await asyncio.sleep(0)
    raise Boom("from the coroutine")


@pytest.fixture
def no_thread_left():  # type: ignore[no-untyped-def]
    before = threading.enumerate()
    yield
    assert threading.enumerate() == before


@pytest.mark.usefixtures("no_thread_left")
def test_run_blocking_without_a_loop() -> None:
    assert run_blocking(lambda: answer(7)) == 7
    with pytest.raises(Boom, match="from the coroutine"):
        run_blocking(fail)


@pytest.mark.usefixtures("no_thread_left")
def test_run_blocking_inside_a_running_loop() -> None:
    async def notebook_cell() -> tuple[int, bool]:
        outer = asyncio.get_running_loop()

        async def elsewhere() -> int:
            assert asyncio.get_running_loop() is not outer  # the cell's loop is blocked
            return await answer(8)

        value = run_blocking(elsewhere)
        with pytest.raises(Boom):
            run_blocking(fail)
        return value, True

    assert asyncio.run(notebook_cell()) == (8, True)


@pytest.mark.usefixtures("no_thread_left")
def test_loop_thread_runs_on_one_loop_and_is_joined_on_stop() -> None:
    with LoopThread(name="zr-test-loop") as runner:
        assert runner.running
        loops = {runner.run(lambda: _current_loop()) for _ in range(3)}
        assert loops == {runner.loop}
        assert runner.run(lambda: answer(1)) == 1
        with pytest.raises(Boom):
            runner.run(fail)
        assert [t.name for t in threading.enumerate()].count("zr-test-loop") == 1
    assert not runner.running
    assert runner.loop.is_closed()
    runner.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        runner.run(lambda: answer(1))
    with pytest.raises(RuntimeError, match="only once"):
        runner.start()


async def _current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class Hanging:
    """A coroutine that waits forever and records how it ended."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.mark.usefixtures("no_thread_left")
def test_a_timeout_cancels_the_operation_before_raising() -> None:
    hanging = Hanging()
    with LoopThread() as runner:
        with pytest.raises(TimeoutError):
            runner.run(hanging, timeout=0.05)
        assert hanging.cancelled.is_set()  # no await needed: run() waited for the unwind


@pytest.mark.usefixtures("no_thread_left")
def test_cancelling_a_submitted_future_cancels_the_task() -> None:
    hanging = Hanging()
    with LoopThread() as runner:
        future = runner.submit(hanging)
        assert hanging.started.wait(5)
        assert future.cancel()
        assert hanging.cancelled.wait(5)


@pytest.mark.usefixtures("no_thread_left")
def test_stop_cancels_what_still_runs() -> None:
    hanging = Hanging()
    runner = LoopThread().start()
    future = runner.submit(hanging)
    assert hanging.started.wait(5)
    runner.stop(timeout=5)
    assert hanging.cancelled.is_set()
    assert future.cancelled()


def _interrupt_main_thread() -> None:
    """Ctrl-C as a terminal sends it: to the process, so the kernel picks the main thread
    (`raise_signal` would target the calling thread and leave the main one blocked)."""
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.usefixtures("no_thread_left")
def test_ctrl_c_while_blocked_on_a_loop_thread_cancels_the_operation() -> None:
    assert threading.current_thread() is threading.main_thread()
    hanging = Hanging()

    async def interrupted() -> None:
        asyncio.get_running_loop().call_soon(_interrupt_main_thread)
        await hanging()

    with LoopThread() as runner, pytest.raises(KeyboardInterrupt):
        runner.run(interrupted)
    assert hanging.cancelled.is_set()


@pytest.mark.usefixtures("no_thread_left")
def test_ctrl_c_on_the_private_loop_cancels_the_operation() -> None:
    hanging = Hanging()

    async def interrupted() -> None:
        asyncio.get_running_loop().call_soon(_interrupt_main_thread)
        await hanging()

    with pytest.raises(KeyboardInterrupt):
        run_blocking(interrupted)
    assert hanging.cancelled.is_set()


def test_run_from_the_loop_thread_itself_is_refused() -> None:
    with LoopThread() as runner:

        async def reenter() -> None:
            runner.run(lambda: answer(1))

        with pytest.raises(RuntimeError, match="loop's own thread"):
            runner.run(reenter)
