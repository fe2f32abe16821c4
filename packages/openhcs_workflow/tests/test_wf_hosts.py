"""The ready-made hosts against a real execution server running the reference pipeline.

One loopback server (`LocalServer`, spawned worker processes) serves the whole module; every
test connects its own client, service and host to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from openhcs_workflow import (
    BatchReport,
    BatchWorkflowService,
    BlockingBatchWorkflowService,
    Host,
    PlateConfigSources,
    PlateSpec,
    PlateState,
)
from openhcs_workflow.hosts import (
    BatchDisplayHost,
    ConsoleHost,
    NotebookDispatcher,
    PlateRow,
    batch_progress,
)
from openhcs_workflow.local_server import LocalServer
from openhcs_workflow.pipeline import default_pipeline, generate_plates
from openhcs_workflow.zmq_backend import ZmqWorkflowBackend
from reactive_services.dispatch import AsyncioDispatcher
from zmqruntime.connection import ConnectionInfo

pytest.importorskip("scipy", reason="the reference pipeline's steps need scipy")
pytest.importorskip("tqdm", reason="ConsoleHost's bars need tqdm (the `console` extra)")

#: Every `Host` callback (the abstract methods, less the `dispatcher` property).
CALLBACKS = sorted(Host.__abstractmethods__ - {"dispatcher"})


@pytest.fixture(scope="module")
def server() -> Iterator[ConnectionInfo]:
    with LocalServer(workers=2) as local:
        yield local.connection_info


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("plates")
    return [str(p.root) for p in generate_plates(root, 2, wells=2, shape=(96, 96))]


def _specs(plate_ids: list[str]) -> list[PlateSpec]:
    return [PlateSpec(plate_id=p, pipeline=default_pipeline()) for p in plate_ids]


def _configs(output: Path) -> PlateConfigSources:
    return PlateConfigSources(default={"output_root": str(output)})


async def _run(
    host: BatchDisplayHost, info: ConnectionInfo, specs: list[PlateSpec], output: Path, **kw: Any
) -> BatchReport:
    """One run batch on this loop; returns once every host callback has run too."""
    backend = await ZmqWorkflowBackend.connect(info)
    try:
        service = BatchWorkflowService(host, backend, configs=_configs(output), **kw)
        host.attach(service.view)
        try:
            report = await service.run_plates(specs)
        finally:
            await service.shutdown()
    finally:
        await backend.aclose()
    await asyncio.sleep(0)  # AsyncioDispatcher callbacks are queued behind this point
    return report


def test_console_lines_follow_a_real_batch(
    server: ConnectionInfo, plates: list[str], tmp_path: Path
) -> None:
    out = io.StringIO()

    async def main() -> BatchReport:
        host = ConsoleHost(file=out, bars=False)
        report = await _run(host, server, _specs(plates), tmp_path)
        assert host.totals == (2, 0, 0)
        assert host.plate_ids == tuple(plates)
        assert set(host.results) == set(plates)
        assert [row.state for row in host.progress().rows] == [PlateState.COMPLETED] * 2
        return report

    report = asyncio.run(main())
    assert report.completed == 2
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "Batch of 2 plate(s): plate_01, plate_02"
    for name in ("plate_01", "plate_02"):
        executing = lines.index(f"{name}: ⚙️ Executing")
        assert lines.index(f"{name}: 2/2 wells · ✅ Complete") > executing
    assert "All done: 2 completed, 0 failed, 0 cancelled" in lines
    assert not any(line.startswith("error:") for line in lines), text


def test_console_bars_reach_100_percent_and_keep_the_final_status(
    server: ConnectionInfo, plates: list[str], tmp_path: Path
) -> None:
    out = io.StringIO()
    host_seen: list[ConsoleHost] = []

    async def main() -> BatchReport:
        host = ConsoleHost(file=out, bars=True)
        host_seen.append(host)
        return await _run(host, server, _specs(plates), tmp_path)

    assert asyncio.run(main()).completed == 2
    assert host_seen[0].bars
    text = out.getvalue()
    assert "plate_01 100.0%|" in text
    assert "plate_02 100.0%|" in text
    assert "| 2/2 wells · ✅ Complete" in text
    assert "overall  100.0%|" in text
    assert "| 2/2 plates [" in text
    assert "All done: 2 completed, 0 failed, 0 cancelled" in text
    assert "\ufe0f" not in text  # no emoji variation selector in redrawn terminal lines


def test_console_names_a_plate_that_failed_and_why(
    server: ConnectionInfo, plates: list[str], tmp_path: Path
) -> None:
    out = io.StringIO()
    missing = str(tmp_path / "no_such_plate")

    async def main() -> BatchReport:
        host = ConsoleHost(file=out, bars=False)
        specs = _specs([plates[0], missing])
        report = await _run(host, server, specs, tmp_path, compile_failure_policy="run_compiled")
        assert host.totals == (1, 1, 0)
        return report

    report = asyncio.run(main())
    assert report.by_plate[missing].state is PlateState.FAILED
    lines = out.getvalue().splitlines()
    failed = [line for line in lines if line.startswith("no_such_plate: ")]
    assert len(failed) == 1
    assert "❌ Failed" in failed[0]
    assert "does not exist" in failed[0]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert "no_such_plate" in errors[0]
    assert "All done: 1 completed, 1 failed, 0 cancelled" in lines


def _recording(host_class: type[BatchDisplayHost]) -> type[BatchDisplayHost]:
    """`host_class` that also records (callback, thread, on the dispatcher's thread)."""

    def wrap(name: str) -> Callable[..., None]:
        def callback(self: Any, *args: Any) -> None:
            self.calls.append((name, threading.get_ident(), self.dispatcher.is_dispatch_thread()))
            getattr(super(recording, self), name)(*args)

        return callback

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.calls = []
        super(recording, self).__init__(*args, **kwargs)

    namespace: dict[str, Any] = {name: wrap(name) for name in CALLBACKS}
    namespace["__init__"] = init
    recording = type(f"Recording{host_class.__name__}", (host_class,), namespace)
    return recording


@pytest.fixture
def gui_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A stand-in GUI thread: an event loop running on a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gui")
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_console_host_callbacks_all_run_on_its_dispatcher_thread(
    server: ConnectionInfo, plates: list[str], tmp_path: Path, gui_thread: asyncio.AbstractEventLoop
) -> None:
    """The service runs on its own loop thread (the blocking API); the host's callbacks must
    all arrive on the GUI thread, never on the service's or a ZeroMQ thread."""
    host = _recording(ConsoleHost)(
        file=io.StringIO(), bars=True, dispatcher=AsyncioDispatcher(gui_thread)
    )
    with BlockingBatchWorkflowService(
        host, lambda: ZmqWorkflowBackend.connect(server), configs=_configs(tmp_path)
    ) as workflow:
        host.attach(workflow.view)
        report = workflow.run_plates(_specs(plates))
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), gui_thread).result(10)  # drain
    assert report.completed == 2
    calls: list[tuple[str, int, bool]] = host.calls  # type: ignore[attr-defined]
    gui_ident = asyncio.run_coroutine_threadsafe(_ident(), gui_thread).result(10)
    assert {name for name, _, _ in calls} >= {
        "emit_progress_started",
        "on_plate_completed",
        "on_all_plates_completed",
        "update_item_list",
    }
    assert {thread for _, thread, _ in calls} == {gui_ident}
    assert all(on_dispatch for _, _, on_dispatch in calls)
    assert host.totals == (2, 0, 0)


async def _ident() -> int:
    return threading.get_ident()


# -- NotebookDispatcher (the kernel's thread), without a kernel --------------------------------


def test_notebook_dispatcher_runs_calls_on_the_loop_thread_in_order() -> None:
    ran: list[tuple[int, int]] = []

    async def main() -> None:
        dispatcher = NotebookDispatcher()
        loop_thread = threading.get_ident()
        assert dispatcher.is_dispatch_thread()
        worker = threading.Thread(
            target=lambda: [
                dispatcher.dispatch(lambda i=i: ran.append((i, threading.get_ident())))
                for i in range(50)
            ]
        )
        worker.start()
        worker.join()
        done = asyncio.Event()
        dispatcher.dispatch(done.set)
        await asyncio.wait_for(done.wait(), 10)
        assert ran == [(i, loop_thread) for i in range(50)]

    asyncio.run(main())


def test_notebook_dispatcher_wait_runs_callbacks_while_the_cell_blocks() -> None:
    """A blocking cell: the kernel's loop cannot run, yet callbacks run on its thread."""

    async def cell() -> None:
        dispatcher = NotebookDispatcher()
        kernel_thread = threading.get_ident()
        seen: list[int] = []
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def service_side() -> None:  # another thread produces callbacks, then finishes
            for _ in range(20):
                dispatcher.dispatch(lambda: seen.append(threading.get_ident()))
            dispatcher.dispatch(lambda: future.set_result("report"))

        producer = threading.Thread(target=service_side)
        producer.start()
        assert dispatcher.wait(future, timeout=10) == "report"  # blocks this loop's thread
        producer.join()
        assert seen == [kernel_thread] * 20

    asyncio.run(cell())


def test_notebook_dispatcher_wait_refuses_other_threads_and_times_out() -> None:
    async def cell() -> None:
        dispatcher = NotebookDispatcher()
        pending: concurrent.futures.Future[None] = concurrent.futures.Future()
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.05 s"):
            dispatcher.wait(pending, timeout=0.05)
        errors: list[BaseException] = []

        def elsewhere() -> None:
            try:
                dispatcher.wait(pending, timeout=1)
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert "must be called on the kernel's thread" in str(errors[0])

    asyncio.run(cell())


def test_notebook_dispatcher_needs_a_loop() -> None:
    with pytest.raises(RuntimeError, match="create it in a notebook cell"):
        NotebookDispatcher()


# -- rows -----------------------------------------------------------------------------------


def test_rows_read_the_batch_from_the_view(
    server: ConnectionInfo, plates: list[str], tmp_path: Path
) -> None:
    class Rows(BatchDisplayHost):
        def __init__(self) -> None:
            super().__init__()
            self.percents: list[float] = []

        def show_progress(self, progress: Any) -> None:
            self.percents.append(progress.percent)

        def show_plate_finished(
            self, plate_id: str, state: PlateState, result: Mapping[str, Any]
        ) -> None:
            row = next(r for r in self.progress().rows if r.plate_id == plate_id)
            assert row.finished
            assert row.percent == 100.0
            assert row.wells_done == row.wells_total == 2

    async def main() -> None:
        host = Rows()
        await _run(host, server, _specs(plates), tmp_path)
        rows = batch_progress(host.view, plates).rows
        assert [(r.name, r.state, r.percent) for r in rows] == [
            ("plate_01", PlateState.COMPLETED, 100.0),
            ("plate_02", PlateState.COMPLETED, 100.0),
        ]
        assert host.percents[-1] == 100.0
        assert host.percents == sorted(host.percents)  # the overall bar never goes back
        assert isinstance(rows[0], PlateRow)
        assert rows[0].state_text == "✅ Complete"

    asyncio.run(main())
