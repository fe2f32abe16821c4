"""The server handlers `compile` and `execute`: in-process contexts, then a real server.

The unit tests call the handlers with two real context objects: `LocalContext` (this
package's in-process context) and the server's own `JobContext` over a recording report
channel, which validates every report against the wire schema as the worker would. The last
test runs a small batch through a real `ExecutionServer` (spawned worker process, loopback
ZeroMQ sockets) and a real `ExecutionClient`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from openhcs_workflow.pipeline import (
    LocalContext,
    PipelineError,
    PlateError,
    PlateRunCancelled,
    ProgressEvent,
    default_pipeline,
    generate_plate,
)
from openhcs_workflow.pipeline.handlers import HANDLERS, compile_handler, execute_handler
from zmqruntime.client import ExecutionClient
from zmqruntime.engines.poll_outcome import PollOutcomeKind
from zmqruntime.progress import Phase, ProgressUpdate
from zmqruntime.server import ExecutionCancelled, ExecutionServer, JobContext


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    generate_plate(tmp_path / "plate", wells=2, fields=1, shape=(128, 128), seed=21)
    return tmp_path / "plate"


def compile_params(plate: Path, **config: Any) -> dict[str, Any]:
    return {"plate_id": str(plate), "pipeline": default_pipeline(), "config": config}


class RecordingChannel:
    """A `ReportChannel` that keeps what the job context sends and can be cancelled."""

    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []
        self.cancel_after: int | None = None

    def send_progress(self, update: ProgressUpdate) -> bool:
        self.updates.append(update)
        return True

    def is_cancelled(self, execution_id: str) -> bool:
        return self.cancel_after is not None and len(self.updates) >= self.cancel_after


def job_context(channel: RecordingChannel, handler: str, params: Any, artifact: Any) -> JobContext:
    return JobContext(
        execution_id="e" * 32,
        handler=handler,
        params=params,
        artifact=artifact,
        compile_only=handler == "compile",
        channel=channel,
    )


def test_handlers_compile_then_execute_with_a_local_context(plate: Path) -> None:
    events: list[ProgressEvent] = []
    compile_ctx = LocalContext(events.append, params=compile_params(plate))
    artifact = compile_handler(compile_ctx)
    wire = json.loads(json.dumps(artifact, allow_nan=False))  # what the server stores
    compile_events = [(e.phase, e.axis_id, e.status) for e in events]
    assert compile_events == [
        ("compile", "", "started"),
        ("compile", "A01", "completed"),
        ("compile", "A02", "completed"),
        ("compile", "", "completed"),
    ]
    events.clear()
    summary = execute_handler(
        LocalContext(events.append, params={"plate_id": str(plate)}, artifact=wire)
    )
    assert summary["wells_processed"] == 2
    assert summary["objects_total"] == summary["planted_total"]
    assert Path(summary["outputs"]["results_json"]).exists()
    assert {e.axis_id for e in events if e.phase == "axis_completed"} == {"A01", "A02"}


def test_handlers_run_on_the_servers_job_context(plate: Path) -> None:
    channel = RecordingChannel()
    artifact = compile_handler(job_context(channel, "compile", compile_params(plate), None))
    compile_updates = list(channel.updates)
    assert [u.phase for u in compile_updates] == [Phase.COMPILE] * 4
    channel.updates.clear()
    summary = execute_handler(job_context(channel, "execute", {"plate_id": str(plate)}, artifact))
    assert summary["objects_per_well"] == summary["planted_per_well"]
    phases = [u.phase for u in channel.updates]
    assert phases[0] == Phase.INIT
    assert phases.count(Phase.AXIS_STARTED) == phases.count(Phase.AXIS_COMPLETED) == 2
    assert phases.count(Phase.PATTERN_GROUP) == 2 * len(default_pipeline())
    # the worker-side counter of this execution's context rises by one per report
    assert [u.seq for u in channel.updates] == list(range(1, len(channel.updates) + 1))


def test_cancellation_through_the_job_context_stops_between_steps(plate: Path) -> None:
    channel = RecordingChannel()
    artifact = compile_handler(job_context(channel, "compile", compile_params(plate), None))
    channel.updates.clear()
    channel.cancel_after = 5  # init, axis_started, step_started, pattern_group, step_completed
    with pytest.raises(ExecutionCancelled):
        execute_handler(job_context(channel, "execute", {"plate_id": str(plate)}, artifact))
    assert [u.phase for u in channel.updates][-1] == Phase.STEP_COMPLETED
    assert len(channel.updates) == 5
    assert all(u.status.value != "error" for u in channel.updates)


def test_compile_can_be_cancelled_between_wells(plate: Path) -> None:
    ctx = LocalContext(params=compile_params(plate))
    ctx.cancel()
    with pytest.raises(PlateRunCancelled):
        compile_handler(ctx)


@pytest.mark.parametrize(
    ("params", "artifact", "error", "message"),
    [
        ({"plate_id": "p"}, None, PipelineError, "execute 'p': no compile artifact"),
        ({}, None, PipelineError, "params: missing required field 'plate_id'"),
        ({"plate_id": "p", "wells": []}, None, PipelineError, "params: unknown field 'wells'"),
        ({"plate_id": 3}, None, PipelineError, "params.plate_id: expected a string, got integer"),
        ({"plate_id": "p"}, {"kind": "x"}, PipelineError, "artifact: missing required field"),
    ],
)
def test_execute_refuses_bad_params_and_a_missing_artifact(
    params: dict[str, Any], artifact: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        execute_handler(LocalContext(params=params, artifact=artifact))
    assert str(caught.value).startswith(message), str(caught.value)


def test_execute_refuses_an_artifact_made_for_another_plate(plate: Path) -> None:
    artifact = compile_handler(LocalContext(params=compile_params(plate)))
    with pytest.raises(PipelineError, match=r"params.plate_id: '/elsewhere' is not the plate"):
        execute_handler(LocalContext(params={"plate_id": "/elsewhere"}, artifact=artifact))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda p: p.pop("pipeline"), PipelineError, "params: missing required field 'pipeline'"),
        (lambda p: p.update(pipeline={}), PipelineError, "pipeline: expected a list, got object"),
        (lambda p: p.update(config=[]), PipelineError, "config: expected an object, got list"),
        (lambda p: p.update(plate_id="/no/plate"), PlateError, "plate directory /no/plate does"),
    ],
)
def test_compile_refuses_bad_params(
    plate: Path, change: Any, error: type[Exception], message: str
) -> None:
    params = compile_params(plate)
    change(params)
    with pytest.raises(error) as caught:
        compile_handler(LocalContext(params=params))
    assert str(caught.value).startswith(message), str(caught.value)


def test_compile_and_execute_plates_through_a_real_server(tmp_path: Path) -> None:
    """One good plate and one missing plate in one batch: the good one completes with the
    planted counts, the bad one fails with the plate error, and neither affects the other."""
    good = tmp_path / "good"
    generate_plate(good, wells=2, fields=1, shape=(128, 128), seed=8)
    missing = tmp_path / "missing"

    async def batch() -> None:
        async with (
            ExecutionServer(HANDLERS, workers=1) as server,
            ExecutionClient(server.connection_info, request_timeout=30.0) as client,
        ):
            compiled = {
                plate: await client.submit(
                    "compile",
                    compile_params(plate, output_root=str(tmp_path / "out")),
                    compile_only=True,
                    label=str(plate),
                )
                for plate in (missing, good)
            }
            waits = {
                plate: await client.wait(reply.execution_id, timeout=60.0, liveness_timeout=30.0)
                for plate, reply in compiled.items()
            }
            assert waits[missing].kind is PollOutcomeKind.FAILED
            error = waits[missing].payload["error"]
            assert error["code"] == "handler_error"
            assert error["message"] == (
                f"handler 'compile' raised PlateError: plate directory {missing} does not exist"
            )
            assert waits[good].kind is PollOutcomeKind.COMPLETE
            run = await client.submit(
                "execute",
                {"plate_id": str(good)},
                compile_artifact_id=compiled[good].execution_id,
            )
            done = await client.wait(run.execution_id, timeout=60.0, liveness_timeout=30.0)
            assert done.kind is PollOutcomeKind.COMPLETE, done
            result = done.payload["result"]
            assert result["wells_processed"] == 2
            assert result["objects_per_well"] == result["planted_per_well"]
            assert result["output_dir"] == str(tmp_path / "out" / "good_results")
            status = await client.status(run.execution_id)
            last = {u.axis_id: (u.phase, u.status.value) for u in status.axes}
            assert last["A01"] == last["A02"] == (Phase.AXIS_COMPLETED, "completed")

    asyncio.run(batch())
    assert (tmp_path / "out" / "good_results" / "results.json").exists()
