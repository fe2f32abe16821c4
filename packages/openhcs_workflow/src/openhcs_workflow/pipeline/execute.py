"""Execute a compiled plate: every well, every step, every field; progress and results.

One plate runs in one process, its wells one after another (the server's worker pool runs
several plates at once). Per well the progress is::

    axis_started → (step_started → pattern_group × fields → step_completed) × steps
                 → axis_completed (status completed, or error with the message)

`percent` is always the well's own completion (0 at `axis_started`, 100 at `axis_completed`);
`completed`/`total` count steps for the step and axis phases and fields for `pattern_group`.
A plate-level `init` event (axis "") announces the wells first. Cancellation is checked
before every well and every step. Any error (unreadable image, a step failing) ends the plate
with an exception naming the well, field and step; the results of wells already finished
stay on disk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from openhcs_workflow.pipeline.compile_plan import CompiledPlate, compile_plate
from openhcs_workflow.pipeline.config import RunConfig
from openhcs_workflow.pipeline.context import LocalContext, ProgressSink
from openhcs_workflow.pipeline.definition import BoundStep
from openhcs_workflow.pipeline.errors import PipelineError, PlateError
from openhcs_workflow.pipeline.jsonio import JSONObject
from openhcs_workflow.pipeline.outputs import WellResult, write_plate_outputs, write_well_outputs
from openhcs_workflow.pipeline.plate_format import PlateLayout, read_image
from openhcs_workflow.pipeline.state import FieldState
from openhcs_workflow.pipeline.steps import default_pipeline

__all__ = ["execute_plate", "run_plate"]


@attrs.frozen(slots=True)
class _Reporter:
    """Sends one plate's progress with the fields that do not change filled in."""

    sink: ProgressSink
    plate_id: str
    steps: tuple[BoundStep, ...]

    def emit(
        self,
        well: str,
        phase: str,
        status: str,
        *,
        step: int,
        completed: int,
        total: int,
        percent: float,
        message: str | None = None,
        pattern: str | None = None,
        component: str | None = None,
    ) -> None:
        self.sink.progress(
            plate_id=self.plate_id,
            axis_id=well,
            step_name=self.steps[step].name,
            step_index=step,
            total_steps=len(self.steps),
            phase=phase,
            status=status,
            completed=completed,
            total=total,
            percent=min(100.0, percent),
            message=message,
            pattern=pattern,
            component=component,
        )


def execute_plate(artifact: CompiledPlate, ctx: ProgressSink | None = None) -> JSONObject:
    """Run a compiled plate; write its results and return the results summary (JSON).

    `ctx` receives progress and is asked about cancellation (default: a silent
    `LocalContext`). Raises `PlateError`/`PipelineError` naming the well, field and step
    that failed, or the runner's cancellation exception.
    """
    sink: ProgressSink = LocalContext() if ctx is None else ctx
    layout = artifact.layout()
    if not layout.root.is_dir():
        raise PlateError(f"plate directory {layout.root} no longer exists (it did at compile)")
    reporter = _Reporter(sink, artifact.plate_id, artifact.steps)
    total_wells = len(artifact.wells)
    reporter.emit(
        "",
        "init",
        "started",
        step=0,
        completed=0,
        total=total_wells,
        percent=0.0,
        message=f"{total_wells} wells × {len(artifact.fields)} fields × "
        f"{len(artifact.channels)} channels",
    )
    started = time.perf_counter()
    results = []
    for well in artifact.wells:
        sink.raise_if_cancelled()
        results.append(_run_well(artifact, layout, well, reporter, sink))
    return write_plate_outputs(
        Path(artifact.output_dir),
        results,
        _summary(artifact, results, time.perf_counter() - started),
    )


def _run_well(
    artifact: CompiledPlate,
    layout: PlateLayout,
    well: str,
    reporter: _Reporter,
    sink: ProgressSink,
) -> WellResult:
    started = time.perf_counter()
    steps = artifact.steps
    total = len(steps)
    reporter.emit(well, "axis_started", "started", step=0, completed=0, total=total, percent=0.0)
    index = 0
    try:
        states = [_load_field(artifact, layout, well, field) for field in artifact.fields]
        for index, step in enumerate(steps):
            sink.raise_if_cancelled()
            reporter.emit(
                well,
                "step_started",
                "started",
                step=index,
                completed=index,
                total=total,
                percent=100.0 * index / total,
            )
            for done, state in enumerate(states, start=1):
                states[done - 1] = _apply(step, state)
                reporter.emit(
                    well,
                    "pattern_group",
                    "running",
                    step=index,
                    completed=done,
                    total=len(states),
                    percent=100.0 * (index + done / len(states)) / total,
                    pattern=f"f{state.field}",
                    component="field",
                )
            reporter.emit(
                well,
                "step_completed",
                "completed",
                step=index,
                completed=index + 1,
                total=total,
                percent=100.0 * (index + 1) / total,
            )
        result = write_well_outputs(
            Path(artifact.output_dir),
            states,
            planted=None if artifact.planted is None else artifact.planted.get(well),
            seconds=time.perf_counter() - started,
        )
    except Exception as exc:
        if not sink.cancelled():
            reporter.emit(
                well,
                "axis_completed",
                "error",
                step=index,
                completed=index,
                total=total,
                percent=100.0 * index / total,
                message=str(exc),
            )
        raise
    reporter.emit(
        well,
        "axis_completed",
        "completed",
        step=total - 1,
        completed=total,
        total=total,
        percent=100.0,
        message=f"{result.objects} objects",
    )
    return result


def _load_field(artifact: CompiledPlate, layout: PlateLayout, well: str, field: int) -> FieldState:
    raw = {c: read_image(layout.image_path(well, field, c)) for c in artifact.channels}
    return FieldState.initial(well=well, field=field, raw=raw, channel=artifact.channel)


def _apply(step: BoundStep, state: FieldState) -> FieldState:
    try:
        return step.run(state)
    except (PipelineError, PlateError, ImportError):
        raise
    except Exception as exc:
        raise PipelineError(
            f"{step.where} failed on well {state.well} field {state.field}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _summary(artifact: CompiledPlate, wells: list[WellResult], seconds: float) -> JSONObject:
    per_well: dict[str, Any] = {w.well: w.objects for w in wells}
    planted = artifact.planted
    times = [w.seconds for w in wells]
    return {
        "plate_id": artifact.plate_id,
        "plate_name": artifact.plate_name,
        "plate_dir": artifact.plate_dir,
        "output_dir": artifact.output_dir,
        "signature": artifact.signature,
        "steps": list(artifact.step_names),
        "fields": list(artifact.fields),
        "channels": list(artifact.channels),
        "well_count": len(artifact.wells),
        "wells_processed": len(wells),
        "wells": [w.well for w in wells],
        "objects_per_well": per_well,
        "objects_total": sum(w.objects for w in wells),
        "planted_per_well": None if planted is None else dict(planted),
        "planted_total": None if planted is None else sum(planted.values()),
        "timings": {
            "total_seconds": round(seconds, 6),
            "mean_well_seconds": round(sum(times) / len(times), 6) if times else 0.0,
            "max_well_seconds": round(max(times, default=0.0), 6),
        },
    }


def run_plate(
    plate_dir: str | Path,
    pipeline: object = None,
    config: RunConfig | Mapping[str, Any] | None = None,
    ctx: ProgressSink | None = None,
) -> JSONObject:
    """Compile and execute one plate in this process (no server): a script's or test's path.

    `pipeline` defaults to `default_pipeline()`.
    """
    artifact = compile_plate(
        plate_dir, default_pipeline() if pipeline is None else pipeline, config
    )
    return execute_plate(artifact, ctx)
