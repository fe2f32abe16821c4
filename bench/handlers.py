"""Handlers the benchmark servers run, and how to start such a server as a separate process.

Worker processes import handlers by reference (`bench.handlers:HANDLERS`), so the server
process must be able to import `bench`: `start_bench_server` puts the repository root on
its PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from zmqruntime.server import JobContext, ServerProcess, start_server_process
from zmqruntime.testing.handlers import report_progress

__all__ = ["HANDLERS", "start_bench_server"]

ROOT = Path(__file__).resolve().parent.parent
#: The handlers below as a `--handlers` reference.
BENCH_HANDLERS = "bench.handlers:HANDLERS"


def compile_plate(ctx: JobContext) -> Any:
    """The plate workflow's compile step, reduced to nothing: the plan is the params."""
    return {"plan": dict(ctx.params)}


def execute_plate(ctx: JobContext) -> Any:
    """The plate workflow's execute step, reduced to its last instruction: the wall-clock
    time (`time.time()`, comparable across processes on one machine) it ended at."""
    return {"finished_at": time.time()}


def finished_at(ctx: JobContext) -> Any:
    """A bare job that returns the wall-clock time it ended at."""
    return {"finished_at": time.time()}


def paced_report(ctx: JobContext) -> Any:
    """Report `params.n` progress updates over `params.axes` wells at `params.rate` per
    second (a flood the server can follow, so updates go through rather than being dropped
    at the source); returns how many the transport accepted."""
    n = int(ctx.params["n"])
    rate = float(ctx.params["rate"])
    axes = [str(a) for a in ctx.params["axes"]]
    start = time.monotonic()
    for i in range(n):
        if i % 50 == 0:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        report_progress(ctx, i, n, axes)
    return {"sent": ctx.reports_sent}


def flood_report(ctx: JobContext) -> Any:
    """Report `params.n` progress updates over `params.axes` wells as fast as the worker
    can; returns how many the transport accepted (the rest were dropped at the source)."""
    n = int(ctx.params["n"])
    axes = [str(a) for a in ctx.params["axes"]]
    for i in range(n):
        report_progress(ctx, i, n, axes)
    return {"sent": ctx.reports_sent}


HANDLERS = {
    "compile": compile_plate,
    "execute": execute_plate,
    "finished_at": finished_at,
    "flood_report": flood_report,
    "paced_report": paced_report,
}


def start_bench_server(handlers: str = BENCH_HANDLERS, **options: Any) -> ServerProcess:
    """`start_server_process` with the repository root importable by the server and its
    workers (so `bench.handlers` resolves whatever the caller's working directory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return start_server_process(handlers, env=env, **options)
