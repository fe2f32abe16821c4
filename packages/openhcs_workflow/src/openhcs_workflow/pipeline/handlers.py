"""The execution server's handlers for plates: `compile` and `execute`.

Register them with `HANDLERS` (`openhcs_workflow.pipeline.handlers:HANDLERS` for the server
CLI). Each runs in a worker process and takes the server's job context (anything satisfying
`HandlerContext`):

- `compile`: params `{"plate_id": "<plate dir>", "pipeline": [...], "config": {...}}`
  (`config` optional, see `RunConfig`). Reports `compile` progress per well as its images are
  checked; returns the compile artifact (`CompiledPlate.to_json()`), which the server keeps
  when the request is `compile_only`.
- `execute`: params `{"plate_id": "<plate dir>"}`, submitted with `compile_artifact_id` so the
  server hands it the artifact. Runs the plate (see `execute`), returns the results summary.

Bad input raises `PipelineError`/`PlateError` with a precise message, which the server records
as that execution's failure (the rest of the batch goes on).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from openhcs_workflow.pipeline.compile_plan import CompiledPlate, compile_plate
from openhcs_workflow.pipeline.config import RunConfig
from openhcs_workflow.pipeline.context import HandlerContext
from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.execute import execute_plate
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader

__all__ = ["HANDLERS", "compile_handler", "execute_handler"]

_READ = JsonReader(PipelineError)


def _compile_progress(
    ctx: HandlerContext, plate_id: str, axis_id: str, *, done: bool, message: str | None = None
) -> None:
    """A `compile` event: plate-level (axis "") at start and end, one per well as it checks."""
    ctx.progress(
        plate_id=plate_id,
        axis_id=axis_id,
        step_name="compile",
        step_index=0,
        total_steps=1,
        phase="compile",
        status="completed" if done else "started",
        completed=int(done),
        total=1,
        percent=100.0 if done else 0.0,
        message=message,
    )


def compile_handler(ctx: HandlerContext) -> JSONObject:
    """Validate a plate's pipeline and config against the plate; return the artifact."""
    params = _READ.obj(
        ctx.params, "params", required=("plate_id", "pipeline"), optional=("config",)
    )
    plate_id = _READ.text(params["plate_id"], "params.plate_id")

    def on_well(_index: int, well: str) -> None:
        ctx.raise_if_cancelled()
        _compile_progress(ctx, plate_id, well, done=True)

    _compile_progress(ctx, plate_id, "", done=False)
    config = RunConfig.from_json(params.get("config"))
    artifact = compile_plate(
        plate_id, params["pipeline"], config, plate_id=plate_id, on_well=on_well
    )
    message = f"{len(artifact.wells)} wells, {len(artifact.steps)} steps"
    _compile_progress(ctx, plate_id, "", done=True, message=message)
    return artifact.to_json()


def execute_handler(ctx: HandlerContext) -> JSONObject:
    """Run the plate the compile artifact describes; return the results summary."""
    params = _READ.obj(ctx.params, "params", required=("plate_id",))
    plate_id = _READ.text(params["plate_id"], "params.plate_id")
    if ctx.artifact is None:
        raise PipelineError(
            f"execute {plate_id!r}: no compile artifact; compile the plate with "
            "compile_only=True and submit execute with its compile_artifact_id"
        )
    artifact = CompiledPlate.from_json(ctx.artifact)
    if artifact.plate_id != plate_id:
        raise PipelineError(
            f"params.plate_id: {plate_id!r} is not the plate the compile artifact was made "
            f"for ({artifact.plate_id!r})"
        )
    return execute_plate(artifact, ctx)


#: Handler name → function, for `ExecutionServer(handlers=...)` or the server CLI.
HANDLERS: Mapping[str, Callable[[HandlerContext], JSONObject]] = {
    "compile": compile_handler,
    "execute": execute_handler,
}


if TYPE_CHECKING:  # mypy checks that the server's context satisfies the handlers' Protocol
    from zmqruntime.server import JobContext

    def _job_context_conforms(ctx: JobContext) -> HandlerContext:
        return ctx
