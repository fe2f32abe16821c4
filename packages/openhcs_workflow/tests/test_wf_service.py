"""BatchWorkflowService flows against a scripted server, on virtual time.

Each test drives the real service; the scripted backend only decides what the server does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openhcs_workflow import (
    BatchBusyError,
    BatchWorkflowService,
    PlateConfigSources,
    PlateSpec,
    PlateState,
    Submission,
)
from openhcs_workflow.testing import RecordingHost, ScriptedBackend
from reactive_services.dispatch import ImmediateDispatcher
from zmqruntime.execution_status import ExecutionStatus

LIVENESS = 5.0

# `harness` / `make_harness` / `specs` fixtures come from conftest.py.


def _names(harness: Any, name: str) -> list[tuple[Any, ...]]:
    return [c.args for c in harness.host.named(name)]


def _statuses(harness: Any) -> list[str]:
    return [args[0] for args in _names(harness, "emit_status")]


def _run_to_end(harness: Any, *plates: str, failing: tuple[str, ...] = ()) -> None:
    harness.compile_all(failing=failing)
    harness.run(2)
    for plate in plates:
        if plate in failing:
            continue
        execution = harness.execution_of(plate, compile_only=False)
        if not execution.status.is_terminal:
            harness.finish(execution, result={"wells": 2})
    harness.run(2)


def test_a_four_plate_run_completes(harness: Any) -> None:
    plates = ("p1", "p2", "p3", "p4")
    task = harness.start_run(*plates)
    assert harness.labels(*plates) == ["⏳ Queued"] * 4  # queued at once, before compiling
    harness.compile_all()
    harness.run(2)
    runs = harness.executions(compile_only=False)
    assert [e.plate_id for e in runs] == list(plates)  # submitted in order
    compiles = {e.plate_id: e.execution_id for e in harness.executions(compile_only=True)}
    assert all(e.compile_artifact_id == compiles[e.plate_id] for e in runs)
    assert harness.labels("p1", "p2") == ["⏳ Queued (q#1)", "⏳ Queued (q#2)"]
    for execution in runs:
        harness.finish(execution, result={"wells": 2})
    harness.run(2)
    report = task.result()
    assert (report.completed, report.failed, report.cancelled) == (4, 0, 0)
    assert harness.labels(*plates) == ["✅ Complete"] * 4
    assert _names(harness, "on_all_plates_completed") == [(4, 0, 0)]
    assert sorted(a[0] for a in _names(harness, "on_plate_completed")) == list(plates)
    assert len(_names(harness, "emit_execution_complete")) == 4
    assert _statuses(harness)[-1] == "All done: 4 completed, 0 failed, 0 cancelled"
    assert not harness.service.view.busy


def test_progress_drives_executing_label_and_status_line(harness: Any) -> None:
    task = harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    run = harness.execution_of("p1", compile_only=False)
    harness.backend.start(run.execution_id)
    for well in ("A01", "A02"):
        harness.backend.progress(
            run.execution_id,
            axis_id=well,
            step_name="Segment",
            step_index=1,
            total_steps=2,
            phase="pattern_group",
            completed=1,
            total=4,
        )
    harness.run(0.5)
    assert harness.labels("p1") == ["⚙️ Executing 62.5% · Segment · A02"]
    assert _statuses(harness)[-1] == "Server: ⚙️ 1 executing | 1 plates | avg 62.5%"
    harness.finish(run)
    harness.run(1)
    assert task.done()
    # Refresh ticks after the batch never bring the summary back over "All done".
    harness.run(5)
    assert _statuses(harness)[-1] == "All done: 1 completed, 0 failed, 0 cancelled"


def test_compile_only_batch_reports_one_summary(harness: Any) -> None:
    plates = ("p1", "p2", "p3", "p4")
    task = harness.start_compile(*plates)
    assert harness.labels(*plates) == ["⏳ Compile"] * 4
    harness.compile_all(failing=("p3",))
    report = task.result()
    assert [o.state for o in report.outcomes] == [
        PlateState.COMPILED,
        PlateState.COMPILED,
        PlateState.COMPILE_FAILED,
        PlateState.COMPILED,
    ]
    summary = "Compiled 3/4 plates; 1 failed: p3: compile error: bad step (handler_error)"
    assert report.summary() == summary
    assert _statuses(harness)[-1] == summary
    assert _names(harness, "emit_error") == [(summary,)]  # one message, not one per plate
    assert harness.labels(*plates) == ["✓ Compiled"] * 2 + ["❌ Compile Failed", "✓ Compiled"]
    assert harness.service.view.compiled("p3") is None
    assert harness.service.view.compiled("p1") is not None
    assert _names(harness, "on_all_plates_completed") == []  # run batches only


def test_run_reuses_compile_only_artifacts_while_unchanged(harness: Any, specs: Any) -> None:
    harness.start_compile("p1", "p2")
    harness.compile_all()
    artifacts = {p: harness.service.view.compiled(p).artifact_id for p in ("p1", "p2")}
    harness.backend.expire_artifact(artifacts["p2"])
    task = harness.start_run("p1", "p2")
    harness.run(2)
    # p1 reused its artifact; p2's expired, so only p2 compiled again.
    assert [e.plate_id for e in harness.executions(compile_only=True)] == ["p1", "p2", "p2"]
    harness.compile_all()
    harness.run(2)
    run1 = harness.execution_of("p1", compile_only=False)
    assert run1.compile_artifact_id == artifacts["p1"]
    _run_to_end(harness, "p1", "p2")
    assert task.result().completed == 2
    # An edited pipeline has another signature: it compiles again.
    edited = [PlateSpec(plate_id="p1", pipeline=[{"name": "other"}])]
    harness.loop.create_task(harness.service.run_plates(edited))
    harness.run(2)
    assert [e.plate_id for e in harness.executions(compile_only=True)][-1] == "p1"
    assert len(harness.executions(compile_only=True)) == 4


def test_compile_failure_abort_cancels_the_rest(harness: Any) -> None:
    task = harness.start_run("p1", "p2", "p3")
    harness.finish(harness.execution_of("p1", compile_only=True))
    harness.finish(harness.execution_of("p2", compile_only=True), ok=False)
    harness.run(2)
    report = task.result()
    states = {o.plate_id: (o.state, o.reason) for o in report.outcomes}
    assert states["p2"][0] is PlateState.FAILED
    assert states["p2"][1].startswith("compile failed: compile error: bad step")
    assert states["p1"] == (PlateState.CANCELLED, "not run: p2 failed to compile")
    assert states["p3"] == (PlateState.CANCELLED, "not run: p2 failed to compile")
    p3_compile = harness.execution_of("p3", compile_only=True)
    assert p3_compile.status is ExecutionStatus.CANCELLED  # cancelled on the server
    assert harness.executions(compile_only=False) == []  # nothing ran
    assert _names(harness, "on_all_plates_completed") == [(0, 1, 2)]


def test_compile_failure_run_compiled_runs_the_rest(make_harness: Any) -> None:
    harness = make_harness(compile_failure_policy="run_compiled")
    task = harness.start_run("p1", "p2", "p3")
    _run_to_end(harness, "p1", "p2", "p3", failing=("p2",))
    report = task.result()
    assert [o.state for o in report.outcomes] == [
        PlateState.COMPLETED,
        PlateState.FAILED,
        PlateState.COMPLETED,
    ]
    assert _names(harness, "on_all_plates_completed") == [(2, 1, 0)]


def test_stop_during_compile_cancels_not_fails(harness: Any) -> None:
    task = harness.start_run("p1", "p2")
    harness.call(lambda: harness.service.stop())
    harness.run(2)
    report = task.result()
    assert [(o.state, o.reason) for o in report.outcomes] == [(PlateState.CANCELLED, "stopped")] * 2
    assert all(e.status is ExecutionStatus.CANCELLED for e in harness.executions(compile_only=True))
    assert _names(harness, "on_all_plates_completed") == [(0, 0, 2)]
    assert harness.labels("p1", "p2") == ["✗ Cancelled"] * 2


def test_stop_then_force_cancels_only_this_batch(make_harness: Any) -> None:
    harness = make_harness(cancel_running_at_once=False)
    other = harness.call(lambda: harness.backend.submit("execute", {"plate_id": "x"}))
    task = harness.start_run("p1", "p2")
    harness.compile_all()
    harness.run(2)
    for execution in harness.executions(compile_only=False):
        if execution.plate_id != "x":
            harness.backend.start(execution.execution_id)
    harness.backend.start(other.execution_id)
    harness.run(2)
    assert harness.labels("p1", "p2") == ["⚙️ Executing 0.0%"] * 2
    harness.call(lambda: harness.service.stop())
    assert harness.service.view.stopping
    harness.run(2)
    assert not task.done()  # graceful: the handlers have not stopped yet
    assert {f for _, f in harness.backend.cancel_calls} == {False}
    harness.call(lambda: harness.service.stop())  # second press: force
    harness.run(2)
    report = task.result()
    assert (report.completed, report.failed, report.cancelled) == (0, 0, 2)
    assert [f for _, f in harness.backend.cancel_calls][-2:] == [True, True]
    cancelled = {eid for eid, _ in harness.backend.cancel_calls}
    assert other.execution_id not in cancelled
    assert harness.backend.executions[other.execution_id].status is ExecutionStatus.RUNNING


def test_an_execution_that_finishes_before_the_cancel_stays_completed(make_harness: Any) -> None:
    harness = make_harness(cancel_running_at_once=False)
    task = harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    run = harness.execution_of("p1", compile_only=False)
    harness.backend.start(run.execution_id)
    harness.call(lambda: harness.service.stop())
    harness.backend.complete(run.execution_id)
    harness.run(2)
    assert task.result().outcomes[0].state is PlateState.COMPLETED


@pytest.mark.parametrize("how", ["offline", "restart"])
def test_server_loss_fails_active_plates_within_liveness(harness: Any, how: str) -> None:
    task = harness.start_run("p1", "p2", "p3")
    harness.compile_all()
    harness.run(2)
    harness.finish(harness.execution_of("p1", compile_only=False))
    harness.backend.start(harness.execution_of("p2", compile_only=False).execution_id)
    harness.run(1)
    lost_at = harness.loop.time()
    if how == "offline":
        harness.backend.go_offline()
    else:
        harness.backend.restart("epoch-2")
    while not task.done() and harness.loop.time() - lost_at < 3 * LIVENESS:
        harness.run(0.25)
    assert task.done()
    assert harness.loop.time() - lost_at <= LIVENESS + 1.0
    outcomes = {o.plate_id: o for o in task.result().outcomes}
    assert outcomes["p1"].state is PlateState.COMPLETED
    for plate in ("p2", "p3"):
        assert outcomes[plate].state is PlateState.FAILED
        assert outcomes[plate].reason.startswith("server lost")
    assert _names(harness, "on_all_plates_completed") == [(1, 2, 0)]


def test_busy_guard_refuses_overlapping_batches(harness: Any, specs: Any) -> None:
    harness.start_run("p1", "p2")
    with pytest.raises(BatchBusyError, match="already in a running batch: p2") as info:
        harness.call(lambda: harness.service.compile_plates(specs("p2", "p3")))
    assert info.value.plates == ("p2",)
    assert _names(harness, "emit_error")[-1][0].startswith("Cannot start compile")
    assert harness.labels("p3") == [""]  # nothing of the refused batch happened
    other = harness.start_compile("p3")  # disjoint plates may run alongside
    harness.compile_all()
    assert other.result().completed == 1
    assert harness.service.view.busy_plates == frozenset({"p1", "p2"})


def test_a_rejected_submission_fails_that_plate_only(harness: Any) -> None:
    task = harness.start_run("p1", "p2")  # both compiles are submitted now
    harness.backend.reject_next("busy", "the queue is full")  # refuses p1's execution
    harness.compile_all()
    harness.run(2)
    harness.finish(harness.execution_of("p2", compile_only=False))
    harness.run(2)
    outcomes = task.result().by_plate
    assert outcomes["p1"].state is PlateState.FAILED
    assert outcomes["p1"].reason == "submission rejected: busy: the queue is full"
    assert outcomes["p2"].state is PlateState.COMPLETED


def test_stale_and_duplicate_events_change_nothing(harness: Any) -> None:
    task = harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    run = harness.execution_of("p1", compile_only=False)
    harness.backend.start(run.execution_id)
    event = harness.backend.progress(run.execution_id, axis_id="A01", step_index=0)
    harness.finish(run)
    harness.run(2)
    assert task.done()
    settled = harness.service.view.plate("p1")
    calls = len(harness.host.calls)
    harness.backend.deliver(event)  # a late duplicate
    harness.backend.progress(run.execution_id, axis_id="A02", step_index=1, total_steps=2)
    harness.run(3)
    assert harness.service.view.plate("p1") == settled
    assert len(harness.host.calls) == calls


def test_a_new_batch_starts_from_a_clean_progress_view(harness: Any) -> None:
    harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    first = harness.execution_of("p1", compile_only=False)
    harness.backend.start(first.execution_id)
    harness.backend.progress(first.execution_id, axis_id="A01", phase="axis_completed")
    harness.finish(first)
    harness.run(2)
    assert harness.service.view.progress("p1") is not None
    harness.start_run("p1")
    record = harness.service.view.plate("p1")
    assert record.state is PlateState.QUEUED
    assert record.execution_id != first.execution_id  # (the reused artifact runs at once)
    assert (record.progress, record.error) == (None, None)
    # Late events of the first execution never show on the new batch's row.
    harness.backend.progress(first.execution_id, axis_id="A09", step_index=0)
    harness.run(2)
    assert harness.service.view.progress("p1") is None


def test_events_before_the_submission_reply_are_kept(make_harness: Any) -> None:
    harness = make_harness()
    backend = harness.backend
    original = backend.submit

    async def eager_submit(handler: str, params: Any, **kw: Any) -> Submission:
        submission = await original(handler, params, **kw)
        if not kw.get("compile_only"):
            backend.start(submission.execution_id)
            backend.progress(submission.execution_id, axis_id="A01", phase="axis_completed")
            await asyncio.sleep(0.01)  # the events are consumed before the reply returns
        return submission

    backend.submit = eager_submit  # type: ignore[method-assign]
    task = harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    progress = harness.service.view.progress("p1")
    assert progress is not None
    assert progress.percent == 100.0
    harness.finish(harness.execution_of("p1", compile_only=False))
    assert task.done()


def test_queue_positions_follow_the_server(make_harness: Any) -> None:
    harness = make_harness(queue_poll_interval=1.0)
    harness.start_run("p1", "p2", "p3")
    harness.compile_all()
    harness.run(2)
    assert harness.labels("p1", "p2", "p3") == [
        "⏳ Queued (q#1)",
        "⏳ Queued (q#2)",
        "⏳ Queued (q#3)",
    ]
    harness.backend.start(harness.execution_of("p1", compile_only=False).execution_id)
    harness.run(2)
    assert harness.labels("p2", "p3") == ["⏳ Queued (q#1)", "⏳ Queued (q#2)"]


def test_cancelling_the_caller_settles_every_plate(harness: Any) -> None:
    task = harness.start_run("p1", "p2")
    harness.compile_all()
    harness.run(2)
    task.cancel()
    harness.run(2)
    assert task.cancelled()
    assert harness.labels("p1", "p2") == ["✗ Cancelled"] * 2
    assert _names(harness, "on_all_plates_completed") == [(0, 0, 2)]
    assert all(
        e.status is ExecutionStatus.CANCELLED for e in harness.executions(compile_only=False)
    )
    assert not harness.service.view.busy


def test_shutdown_ends_running_batches_once(harness: Any, specs: Any) -> None:
    task = harness.start_run("p1")
    harness.compile_all()
    harness.run(2)
    harness.call(lambda: harness.service.shutdown())
    assert task.result().cancelled == 1
    assert harness.execution_of("p1", compile_only=False).status is ExecutionStatus.CANCELLED
    assert _names(harness, "on_all_plates_completed") == [(0, 0, 1)]
    with pytest.raises(RuntimeError, match="shut down"):
        harness.call(lambda: harness.service.run_plates(specs("p1")))


def test_init_and_invalidate(harness: Any) -> None:
    harness.call(lambda: harness.service.begin_init(["p1", "p2"]))
    assert harness.labels("p1", "p2") == ["⏳ Init"] * 2
    harness.call(lambda: harness.service.end_init("p1"))
    harness.call(lambda: harness.service.end_init("p2", error="no images"))
    assert harness.labels("p1", "p2") == ["✓ Init", ""]
    assert harness.service.view.plate("p2").error == "no images"
    harness.start_compile("p1")
    harness.compile_all()
    assert harness.labels("p1") == ["✓ Compiled"]
    harness.call(lambda: harness.service.invalidate_compiled("p1"))
    assert harness.labels("p1") == ["✓ Init"]
    assert harness.service.view.compiled("p1") is None


def test_config_resolution_reaches_the_handler(make_harness: Any) -> None:
    sources = PlateConfigSources(default={"workers": 4, "sigma": 1.0}).with_saved(
        "p1", {"workers": 2}
    )
    harness = make_harness(configs=sources)
    spec = PlateSpec(plate_id="p1", pipeline=[{"name": "blur"}], config_override={"sigma": 3.0})
    harness.loop.create_task(harness.service.compile_plates([spec]))
    harness.run()
    params = harness.execution_of("p1", compile_only=True).params
    assert params == {
        "plate_id": "p1",
        "pipeline": [{"name": "blur", "params": {}}],
        "config": {"workers": 2, "sigma": 3.0},
    }


def test_a_bad_config_fails_that_plate_with_the_field(make_harness: Any) -> None:
    harness = make_harness(configs=PlateConfigSources(default={"workers": 4}))
    spec = PlateSpec(plate_id="p1", pipeline=[{"name": "blur"}], config_override={"wrkrs": 1})
    task = harness.loop.create_task(harness.service.compile_plates([spec]))
    harness.run()
    outcome = task.result().outcomes[0]
    assert outcome.state is PlateState.COMPILE_FAILED
    assert "config.wrkrs: unknown config field" in (outcome.reason or "")


def test_host_must_subclass_host() -> None:
    class DuckHost:
        dispatcher = ImmediateDispatcher()

        def emit_status(self, msg: str) -> None: ...

    with pytest.raises(TypeError, match=r"subclass of openhcs_workflow\.Host"):
        BatchWorkflowService(DuckHost(), ScriptedBackend())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("compile_failure_policy", "retry", "compile_failure_policy: expected one of"),
        ("liveness_timeout", 0, "liveness_timeout: expected a number of seconds > 0"),
        ("poll_interval", float("nan"), "poll_interval: expected a finite number"),
    ],
)
def test_bad_options_are_named(option: str, value: object, message: str) -> None:
    host = RecordingHost(ImmediateDispatcher())
    with pytest.raises(ValueError, match=message):
        BatchWorkflowService(host, ScriptedBackend(), **{option: value})  # type: ignore[arg-type]


def test_bad_batch_requests(harness: Any, specs: Any) -> None:
    with pytest.raises(ValueError, match="plates: expected at least one"):
        harness.call(lambda: harness.service.run_plates([]))
    with pytest.raises(ValueError, match=r"plates\[1\].plate_id: duplicate plate 'p1'"):
        harness.call(lambda: harness.service.run_plates(specs("p1", "p1")))
    with pytest.raises(TypeError, match=r"plates\[0\]: expected a PlateSpec"):
        harness.call(lambda: harness.service.run_plates(["p1"]))


def test_the_service_stays_on_its_first_loop(harness: Any, specs: Any) -> None:
    harness.start_compile("p1")
    other = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="bound to the event loop"):
            other.run_until_complete(harness.service.run_plates(specs("p2")))
    finally:
        other.close()
