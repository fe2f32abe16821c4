"""BatchWorkflowService against a real server process, real workers and real plates.

Each scenario checks the batch invariants of DESIGN.md: every plate terminal once,
`on_all_plates_completed` once with counts that add up, every callback on the dispatcher's
thread. Scripted server behaviour (a compile that waits for its cancel, an execution that
ignores graceful cancels) comes from `zmqruntime.testing.handlers`, run by real workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest

from openhcs_workflow import (
    BatchReport,
    BatchWorkflowService,
    PipelineHandlers,
    PlateConfigSources,
    PlateSpec,
    PlateState,
    ZmqWorkflowBackend,
)
from openhcs_workflow.pipeline import default_pipeline, generate_plates
from openhcs_workflow.testing import RecordingHost, executing_count, until
from reactive_services import AsyncioDispatcher
from zmqruntime.client import ExecutionClient
from zmqruntime.engines import PollOutcomeKind
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS

PLATE_HANDLERS = "openhcs_workflow.pipeline.handlers:HANDLERS"


@pytest.fixture(scope="module")
def plate_server() -> Iterator[ServerProcess]:
    with start_server_process(PLATE_HANDLERS, workers=2, heartbeat_interval=0.2) as process:
        yield process


@pytest.fixture(scope="module")
def sample_server() -> Iterator[ServerProcess]:
    with start_server_process(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.2) as process:
        yield process


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("plates")
    layouts = generate_plates(root, 4, seed=7, wells=3, fields=1, shape=(64, 64))
    return [str(layout.root) for layout in layouts]


@asynccontextmanager
async def workflow(
    server: ServerProcess, output: Path | None = None, **options: object
) -> AsyncIterator[tuple[BatchWorkflowService, RecordingHost]]:
    host = RecordingHost(AsyncioDispatcher(asyncio.get_running_loop()))
    backend = await ZmqWorkflowBackend.connect(server.info)
    configs = PlateConfigSources(default={"output_root": str(output)} if output else {})
    service = BatchWorkflowService(host, backend, configs=configs, **options)  # type: ignore[arg-type]
    try:
        yield service, host
    finally:
        await service.shutdown()
        await backend.aclose()


def check_batch(host: RecordingHost, report: BatchReport, expected: Sequence[int]) -> None:
    """Invariant 1 and the dispatcher rule, for a host that saw exactly one run batch."""
    assert (report.completed, report.failed, report.cancelled) == tuple(expected)
    finished = host.named("on_all_plates_completed")
    assert [c.args for c in finished] == [tuple(expected)]
    per_plate = [c.args[0] for c in host.named("on_plate_completed")]
    assert sorted(per_plate) == sorted(o.plate_id for o in report.outcomes)
    assert host.off_thread == []


def specs(plates: Sequence[str], broken: str | None = None) -> list[PlateSpec]:
    """The reference pipeline for each plate; `broken` gets a parameter compile refuses."""
    bad = [*default_pipeline(), {"name": "gaussian_smooth", "params": {"sigma": -1.0}}]
    return [
        PlateSpec(plate_id=p, pipeline=bad if p == broken else default_pipeline()) for p in plates
    ]


def test_four_plates_compile_run_and_complete(
    plate_server: ServerProcess, plates: list[str], tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with workflow(plate_server, tmp_path) as (service, host):
            report = await service.run_plates(specs(plates))
            check_batch(host, report, (4, 0, 0))
            for outcome in report.outcomes:
                assert outcome.state is PlateState.COMPLETED
                assert isinstance(outcome.result, dict)
                # The pipeline's stated accuracy: within one object per field (3 wells x 1 field).
                counted, planted = outcome.result["objects_total"], outcome.result["planted_total"]
                assert abs(counted - planted) <= 3, (counted, planted)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("policy", "expected"), [("abort", (0, 1, 3)), ("run_compiled", (3, 1, 0))]
)
def test_one_compile_failure_under_each_policy(
    plate_server: ServerProcess,
    plates: list[str],
    tmp_path: Path,
    policy: str,
    expected: tuple[int, int, int],
) -> None:
    async def scenario() -> None:
        async with workflow(plate_server, tmp_path, compile_failure_policy=policy) as (
            service,
            host,
        ):
            report = await service.run_plates(specs(plates, broken=plates[1]))
            check_batch(host, report, expected)
            broken = next(o for o in report.outcomes if o.plate_id == plates[1])
            assert broken.state is PlateState.FAILED
            assert broken.reason is not None
            assert "sigma" in broken.reason

    asyncio.run(scenario())


def test_stop_during_compile_ends_plates_cancelled(
    sample_server: ServerProcess, plates: list[str]
) -> None:
    handlers = PipelineHandlers(compile="wait_for_cancel", execute="sleep")

    async def scenario() -> None:
        async with (
            ExecutionClient(sample_server.info) as observer,
            workflow(sample_server, handlers=handlers) as (service, host),
        ):
            running = asyncio.create_task(service.run_plates(specs(plates[:2])))

            async def both_compiling() -> bool:  # compiles that end only when cancelled
                return len((await observer.status()).running) == 2

            await until(observer, both_compiling)
            await service.stop()
            report = await running
            check_batch(host, report, (0, 0, 2))
            assert all(o.execution_id is None for o in report.outcomes)  # never got to run

    asyncio.run(scenario())


def test_stop_then_force_during_execution_spares_other_clients(
    sample_server: ServerProcess, plates: list[str]
) -> None:
    handlers = PipelineHandlers(compile="compile", execute="uncooperative")

    async def scenario() -> None:
        async with (
            ExecutionClient(sample_server.info) as other,
            workflow(sample_server, handlers=handlers) as (service, host),
        ):
            running = asyncio.create_task(service.run_plates(specs(plates[:2])))
            pids: list[int] = []

            async def both_on_workers() -> bool:  # executing, with their worker pids known
                ids = [r.execution_id for r in service.view.plates().values() if r.execution_id]
                records = [(await other.status(eid)).execution for eid in ids]
                pids[:] = [r.worker_pid for r in records if r.worker_pid is not None]
                return len(pids) == 2

            await until(other, both_on_workers)
            bystander = await other.submit("sleep", {"seconds": 0.3})
            await service.stop()
            # The server marks both cancelled at once, so the batch ends while the
            # uncooperative handlers still hold their workers: Force must still reach them.
            report = await running
            check_batch(host, report, (0, 0, 2))
            await service.stop(force=True)
            # The other client's execution ran to its end untouched by this batch's stop.
            outcome = await other.wait(bystander.execution_id, poll_interval=60.0)
            assert outcome.kind is PollOutcomeKind.COMPLETE
            # Graceful cancel left the uncooperative handlers running; force ended their workers.
            workers = [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
            _, alive = await asyncio.to_thread(psutil.wait_procs, workers, timeout=10)
            assert alive == []

    asyncio.run(scenario())


def test_server_killed_mid_run_fails_every_plate_once() -> None:
    handlers = PipelineHandlers(compile="compile", execute="wait_for_cancel")

    async def scenario(process: ServerProcess, plate_ids: list[str]) -> None:
        async with (
            ExecutionClient(process.info) as observer,
            workflow(process, handlers=handlers, liveness_timeout=1.0) as (service, host),
        ):
            running = asyncio.create_task(service.run_plates(specs(plate_ids)))
            await until(observer, lambda: executing_count(host) == 2)
            os.kill(process.pid, signal.SIGKILL)
            report = await running
            check_batch(host, report, (0, 3, 0))
            for outcome in report.outcomes:
                assert outcome.reason is not None
                assert "server lost" in outcome.reason

    with start_server_process(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.2) as process:
        asyncio.run(scenario(process, ["/plates/a", "/plates/b", "/plates/c"]))
        process.wait(10)
