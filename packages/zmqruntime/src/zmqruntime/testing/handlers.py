"""Sample handlers for tests, benchmarks and demos (importable by worker processes).

`HANDLERS` registers them all: `python -m zmqruntime serve --handlers
zmqruntime.testing.handlers:HANDLERS`. Handlers that block first report one `started`
progress update, so a test can wait for that event instead of sleeping: by then the server
knows the worker's pid too (worker_started travels before it on the same socket).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zmqruntime.progress import Phase, ProgressStatus
from zmqruntime.server.job_context import JobContext

__all__ = ["HANDLERS", "report_progress"]

#: How often blocking handlers look for a cancellation (their own pace, not a test's).
_CHECK_EVERY = 0.005


def _started(ctx: JobContext) -> None:
    ctx.progress(
        plate_id=str(ctx.params.get("plate_id", "plate")),
        axis_id="",
        step_name="start",
        step_index=0,
        total_steps=1,
        phase=Phase.INIT,
        status=ProgressStatus.STARTED,
        completed=0,
        total=1,
        message=f"pid {os.getpid()}",
    )


def _wait(ctx: JobContext, seconds: float, *, cooperative: bool) -> bool:
    """Wait up to `seconds`; True if cancelled (raises instead when `cooperative`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cooperative:
            ctx.raise_if_cancelled()
        elif ctx.cancelled():
            return True
        time.sleep(_CHECK_EVERY)
    return False


def echo(ctx: JobContext) -> Any:
    """Return the params unchanged (arrays included)."""
    return dict(ctx.params)


def sleep(ctx: JobContext) -> Any:
    """Sleep `params.seconds` (default 0.2), stopping early when cancelled; reports its
    start as progress unless `params.quiet`."""
    seconds = float(ctx.params.get("seconds", 0.2))
    if not ctx.params.get("quiet", False):
        _started(ctx)
    _wait(ctx, seconds, cooperative=True)
    return {"slept": seconds}


def report_progress(
    ctx: JobContext,
    i: int,
    n: int,
    axes: list[str],
    plate: str = "plate",
    message: str | None = None,
) -> None:
    """Progress update `i` of `n` (0-based), on well `axes[i % len(axes)]`."""
    ctx.progress(
        message=message,
        plate_id=plate,
        axis_id=axes[i % len(axes)],
        step_name="step",
        step_index=0,
        total_steps=1,
        phase=Phase.PATTERN_GROUP,
        status=ProgressStatus.RUNNING,
        completed=i + 1,
        total=n,
    )


def _await_file(path: object) -> None:
    """Wait (up to 60 s) for a file a test creates to let a handler go on."""
    deadline = time.monotonic() + 60.0
    while not os.path.exists(str(path)) and time.monotonic() < deadline:
        time.sleep(0.001)


def report(ctx: JobContext) -> Any:
    """Report `params.n` progress updates over `params.axes` wells (each with
    `params.message`, if given), then return the count.

    With `params.go_file`, waits (up to 60 s) for that file to exist before reporting; with
    `params.done_file`, creates it once every update was handed to the transport. A test
    uses the pair to know when the reports start and when they were all sent. With
    `params.pause_at` and `params.resume_file`, waits likewise for the second file after that
    many updates, to hold the execution between two known points.
    """
    go_file = ctx.params.get("go_file")
    if go_file is not None:
        _await_file(go_file)
    n = int(ctx.params.get("n", 10))
    axes = [str(a) for a in ctx.params.get("axes", ["A01"])]
    plate = str(ctx.params.get("plate_id", "plate"))
    message = ctx.params.get("message")
    pause_at = ctx.params.get("pause_at")
    for i in range(n):
        if i == pause_at:
            _await_file(ctx.params["resume_file"])
        report_progress(ctx, i, n, axes, plate, None if message is None else str(message))
    done_file = ctx.params.get("done_file")
    if done_file is not None:
        with open(str(done_file), "x"):
            pass
    return {"reported": n}


def fail(ctx: JobContext) -> Any:
    """Raise RuntimeError with `params.message`."""
    raise RuntimeError(str(ctx.params.get("message", "handler failed on purpose")))


def wait_for_cancel(ctx: JobContext) -> Any:
    """Block until cancelled (then raise ExecutionCancelled), at most `params.timeout` s."""
    _started(ctx)
    _wait(ctx, float(ctx.params.get("timeout", 60.0)), cooperative=True)
    return {"cancelled": False}


def ignore_cancel(ctx: JobContext) -> Any:
    """Wait until cancelled, then return a result anyway (a late result the server ignores)."""
    _started(ctx)
    seen = _wait(ctx, float(ctx.params.get("timeout", 60.0)), cooperative=False)
    return {"saw_cancel": seen}


def uncooperative(ctx: JobContext) -> Any:
    """Never checks for cancellation: sleeps `params.seconds` (default 60) regardless."""
    _started(ctx)
    time.sleep(float(ctx.params.get("seconds", 60.0)))
    return {"done": True}


def burn_cpu(ctx: JobContext) -> Any:
    """Spin the cpu until cancelled (at most `params.timeout` s), checking now and then."""
    _started(ctx)
    deadline = time.monotonic() + float(ctx.params.get("timeout", 30.0))
    x = 0
    while time.monotonic() < deadline:
        for _ in range(20_000):
            x += 1
        ctx.raise_if_cancelled()
    return {"spins": x}


def array_result(ctx: JobContext) -> Any:
    """Return a numpy array of `params.size` float64 values (0, 1, 2, ...)."""
    size = int(ctx.params.get("size", 16))
    return {"image": np.arange(size, dtype=np.float64), "size": size}


def bad_result(ctx: JobContext) -> Any:
    """Return something that is not JSON (a set)."""
    return {"oops": {1, 2, 3}}


def exit_worker(ctx: JobContext) -> Any:
    """End this worker process abruptly: `params.how` is "kill" (SIGKILL) or "exit" (code 3)."""
    _started(ctx)
    if ctx.params.get("how", "kill") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


def compile_plan(ctx: JobContext) -> Any:
    """A stand-in compile step: returns a plan built from the params."""
    return {"plan": {"steps": list(ctx.params.get("steps", ["a", "b"])), "compiled_by": "test"}}


def execute_plan(ctx: JobContext) -> Any:
    """A stand-in execute step: runs the compile artifact's plan (requires one)."""
    if ctx.artifact is None:
        raise RuntimeError("execute_plan needs a compile artifact")
    steps = ctx.artifact["plan"]["steps"]
    return {"executed": steps, "compile_only": ctx.compile_only}


HANDLERS: dict[str, Callable[[JobContext], Any]] = {
    "echo": echo,
    "sleep": sleep,
    "report": report,
    "fail": fail,
    "wait_for_cancel": wait_for_cancel,
    "ignore_cancel": ignore_cancel,
    "uncooperative": uncooperative,
    "burn_cpu": burn_cpu,
    "array_result": array_result,
    "bad_result": bad_result,
    "exit_worker": exit_worker,
    "compile": compile_plan,
    "execute": execute_plan,
}
