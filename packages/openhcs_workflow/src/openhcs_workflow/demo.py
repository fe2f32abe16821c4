"""The demo: synthetic plates through a real execution server, start to finish.

`python -m openhcs_workflow demo` (argument parsing in `__main__`) calls `main(options)`:

1. `Demo.generate()` writes seeded synthetic plates (`<output>/plates/plate_NN`), with the
   number of cells planted in every field recorded in each plate's `plate.json`.
2. `Demo.run()` starts an `ExecutionServer` with the plate handlers on this process's event
   loop, bound to 127.0.0.1, with a pool of `workers` spawned worker processes (an in-process
   server: nothing to install or clean up, and Ctrl-C is handled here alone: the workers
   ignore SIGINT). It connects a `BatchWorkflowService` through a `ZmqWorkflowBackend`, like
   any other client, and runs every plate (compile all, execute all) while the host draws
   progress. Results go to `<output>/results/<plate>_results/`.
3. `summary_rows` / `format_summary` make the per-plate table: wells processed, objects counted
   against cells planted, time.

Ctrl-C (or SIGTERM) stops the batch: the first asks the service to stop (plates not yet
finished end `cancelled`, their executions are cancelled on the server), a second forces it.
The server is then shut down, gracefully (nothing runs any more) unless Ctrl-C was pressed
again, which ends its workers at once, before `main` returns 130.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from openhcs_workflow.batch import BatchReport, PlateSpec
from openhcs_workflow.config_resolver import PlateConfigSources
from openhcs_workflow.hosts.console import ConsoleHost
from openhcs_workflow.hosts.display import BatchDisplayHost
from openhcs_workflow.local_server import plate_server
from openhcs_workflow.pipeline.plate_format import PlateLayout
from openhcs_workflow.pipeline.steps import default_pipeline
from openhcs_workflow.pipeline.synthetic import generate_plates
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.service import BatchWorkflowService
from openhcs_workflow.workflow_state import WorkflowView
from openhcs_workflow.zmq_backend import ZmqWorkflowBackend
from zmqruntime.server import ExecutionServer, ServerStartError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Demo",
    "DemoOptions",
    "DemoResult",
    "PlateSummary",
    "format_summary",
    "main",
    "missing_requirements",
    "summary_rows",
]

EXIT_OK = 0
#: Some plate failed.
EXIT_FAILED = 1
#: Stopped by Ctrl-C / SIGTERM (128 + SIGINT, the shell convention).
EXIT_INTERRUPTED = 130

#: Each option's (lowest, highest) accepted value.
LIMITS: Mapping[str, tuple[int, int]] = {
    "plates": (1, 32),
    "wells": (1, 384),
    "fields": (1, 16),
    "workers": (1, 64),
    "size": (64, 2048),
    "seed": (0, 2**32 - 1),
}


def _in_range(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    low, high = LIMITS[attribute.name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"{attribute.name}: expected an integer from {low} to {high}, got {value!r}"
        )


def _output_dir(
    instance: object, attribute: attrs.Attribute[Path | None], value: Path | None
) -> None:
    if value is None:
        return
    if value.exists() and (not value.is_dir() or any(value.iterdir())):
        raise ValueError(
            f"output: {str(value)!r} exists and is not an empty directory "
            "(choose a new or empty one, or leave it out for a fresh temporary directory)"
        )


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


@attrs.frozen(kw_only=True)
class DemoOptions:
    """What the demo generates and how it runs it (see `LIMITS` for the accepted ranges).

    `plates` plates of `wells` wells with `fields` fields of `size`×`size` pixels each,
    from `seed`; `workers` server worker processes; `output` a new or empty directory
    (None: a fresh temporary directory, kept afterwards so you can look at the results).
    """

    plates: int = attrs.field(default=4, validator=_in_range)
    wells: int = attrs.field(default=24, validator=_in_range)
    fields: int = attrs.field(default=3, validator=_in_range)
    workers: int = attrs.field(default=2, validator=_in_range)
    size: int = attrs.field(default=256, validator=_in_range)
    seed: int = attrs.field(default=0, validator=_in_range)
    output: Path | None = attrs.field(default=None, converter=_to_path, validator=_output_dir)


@attrs.frozen(kw_only=True)
class PlateSummary:
    """One row of the summary table. Counts are None where the plate has no results."""

    plate: str
    state: PlateState
    wells_processed: int | None
    wells_total: int
    objects: int | None
    planted: int | None
    seconds: float | None
    output_dir: str | None
    reason: str | None

    @property
    def difference(self) -> int | None:
        """Objects counted minus cells planted."""
        if self.objects is None or self.planted is None:
            return None
        return self.objects - self.planted


@attrs.frozen(kw_only=True)
class DemoResult:
    """How the run went: the batch report (None if interrupted before it started)."""

    report: BatchReport | None
    interrupted: bool
    seconds: float
    rows: tuple[PlateSummary, ...]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.report is None or self.report.failed or self.report.cancelled:
            return EXIT_FAILED
        return EXIT_OK


def missing_requirements() -> list[str]:
    """The demo's optional dependencies that are not installed (scipy for the image steps)."""
    return [name for name in ("scipy",) if importlib.util.find_spec(name) is None]


class Demo:
    """One demo run: `generate()`, then `await run(layouts, host)`; `interrupt()` from a signal."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.root = (
            options.output
            if options.output is not None
            else Path(tempfile.mkdtemp(prefix="openhcs-demo-"))
        ).absolute()
        self.plates_dir = self.root / "plates"
        self.results_dir = self.root / "results"
        self._host: BatchDisplayHost | None = None
        self._service: BatchWorkflowService | None = None
        self._server: ExecutionServer | None = None
        self._server_closing = False
        self._interrupts = 0
        self._stops: set[asyncio.Task[None]] = set()

    @property
    def interrupted(self) -> bool:
        return self._interrupts > 0

    def generate(self) -> list[PlateLayout]:
        """Write the synthetic plates."""
        o = self.options
        return generate_plates(
            self.plates_dir,
            o.plates,
            seed=o.seed,
            wells=o.wells,
            fields=o.fields,
            shape=(o.size, o.size),
        )

    def specs(self, layouts: Sequence[PlateLayout]) -> list[PlateSpec]:
        """One run request per plate: the reference pipeline (the plate id is its directory)."""
        return [
            PlateSpec(plate_id=str(layout.root), pipeline=default_pipeline()) for layout in layouts
        ]

    def interrupt(self) -> None:
        """Ctrl-C: stop the batch; again: force it (and the server's shutdown, which ends
        its workers). Call on the event loop `run` runs on."""
        self._interrupts += 1
        force = self._interrupts > 1
        if force and self._server_closing and self._server is not None:
            self._server.request_shutdown(force=True)
            return
        if self._host is not None:
            text = (
                "Interrupted: forcing the batch to stop..."
                if force
                else "Interrupted: stopping the batch (Ctrl-C again to force)..."
            )
            self._host.dispatcher.dispatch(self._host.emit_status, text)
        if self._service is not None:
            task = asyncio.get_running_loop().create_task(self._service.stop(force=force))
            self._stops.add(task)
            task.add_done_callback(self._stops.discard)

    async def run(self, layouts: Sequence[PlateLayout], host: BatchDisplayHost) -> DemoResult:
        """Start the server, run every plate with `host` showing it, shut everything down.

        Whatever happens (an interrupt, an error), the server is shut down before this
        returns or raises, so no worker process outlives it.
        """
        started = time.perf_counter()
        self._host = host
        report: BatchReport | None = None
        server = self._server = plate_server(workers=self.options.workers)
        await server.start()
        try:
            backend = await ZmqWorkflowBackend.connect(server.connection_info)
            try:
                service = BatchWorkflowService(
                    host,
                    backend,
                    configs=PlateConfigSources(default={"output_root": str(self.results_dir)}),
                )
                host.attach(service.view)
                self._service = service
                try:
                    if not self.interrupted:
                        report = await service.run_plates(self.specs(layouts))
                finally:
                    if self._stops:
                        await asyncio.gather(*self._stops, return_exceptions=True)
                    await service.shutdown()
            finally:
                await backend.aclose()
        finally:
            # Graceful: the batch is over, so nothing runs any more (stopped executions were
            # cancelled); a second Ctrl-C forces it (see `interrupt`).
            self._server_closing = True
            await server.shutdown(force=self._interrupts > 1)
        view = self._service.view if self._service is not None else None
        return DemoResult(
            report=report,
            interrupted=self.interrupted,
            seconds=time.perf_counter() - started,
            rows=tuple(summary_rows(layouts, report, view)),
        )


def summary_rows(
    layouts: Sequence[PlateLayout], report: BatchReport | None, view: WorkflowView | None = None
) -> list[PlateSummary]:
    """One row per plate, from its outcome's results summary (or the plate's last progress)."""
    outcomes = report.by_plate if report is not None else {}
    rows = []
    for layout in layouts:
        plate_id = str(layout.root)
        outcome = outcomes.get(plate_id)
        result = _mapping(outcome.result if outcome is not None else None)
        record = view.plate(plate_id) if view is not None else None
        progress = record.progress if record is not None else None
        timings = result.get("timings")
        rows.append(
            PlateSummary(
                plate=layout.name,
                state=outcome.state if outcome is not None else PlateState.CANCELLED,
                wells_processed=_int(result.get("wells_processed"))
                if result
                else (progress.wells_done if progress is not None else None),
                wells_total=len(layout.wells),
                objects=_int(result.get("objects_total")),
                planted=_planted(layout),
                seconds=_float(_mapping(timings).get("total_seconds")),
                output_dir=_str(result.get("output_dir")),
                reason=outcome.reason if outcome is not None else "not run: interrupted",
            )
        )
    return rows


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _planted(layout: PlateLayout) -> int | None:
    counts = [layout.planted(well) for well in layout.wells]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


_HEADER = ("plate", "state", "wells", "objects", "planted", "diff", "time")
_RIGHT_ALIGNED = frozenset({2, 3, 4, 5, 6})


def _cells(row: PlateSummary) -> tuple[str, ...]:
    diff = row.difference
    return (
        row.plate,
        row.state.value,
        f"{_cell(row.wells_processed)}/{row.wells_total}",
        _cell(row.objects),
        _cell(row.planted),
        "-" if diff is None else f"{diff:+d}",
        "-" if row.seconds is None else f"{row.seconds:.2f} s",
    )


def _total_cells(rows: Sequence[PlateSummary]) -> tuple[str, ...]:
    """Totals over the plates that have results (objects and planted compare like for like)."""
    done = [r for r in rows if r.objects is not None]
    objects = sum(r.objects or 0 for r in done)
    planted = sum(r.planted or 0 for r in done)
    wells_processed = sum(r.wells_processed or 0 for r in rows)
    return (
        "total",
        f"{len(done)}/{len(rows)} with results",
        f"{wells_processed}/{sum(r.wells_total for r in rows)}",
        str(objects),
        str(planted),
        f"{objects - planted:+d}",
        "",
    )


def format_summary(rows: Sequence[PlateSummary]) -> str:
    """The per-plate table (wells processed, objects counted vs cells planted, time), with a
    total line."""
    body = [_cells(row) for row in rows]
    total = _total_cells(rows)
    widths = [max(len(line[i]) for line in (_HEADER, *body, total)) for i in range(len(_HEADER))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = (
            cell.rjust(width) if i in _RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(_HEADER), rule, *map(fmt, body), rule, fmt(total)])


def main(options: DemoOptions, *, out: IO[str] | None = None) -> int:
    """Run the demo from blocking code with a `ConsoleHost` on stderr; print the summary to
    `out` (stdout). Returns the exit code."""
    out = out if out is not None else sys.stdout
    missing = missing_requirements()
    if missing:
        print(
            f"error: the demo needs {', '.join(missing)}: "
            "pip install 'openhcs_workflow[images,console]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    demo = Demo(options)
    o = options
    say = functools.partial(print, file=out, flush=True)
    say(
        f"Generating {o.plates} plate(s) of {o.wells} well(s) x {o.fields} field(s) "
        f"({o.size}x{o.size} px, seed {o.seed}) in {demo.plates_dir}"
    )
    try:
        layouts = demo.generate()
    except KeyboardInterrupt:
        say("Interrupted while generating plates; nothing was run.")
        return EXIT_INTERRUPTED
    say(f"Starting an execution server on 127.0.0.1 with {o.workers} worker process(es)")
    try:
        result = asyncio.run(_run_with_signals(demo, layouts))
    except ServerStartError as exc:
        print(f"error: the execution server could not start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    say()
    say(format_summary(result.rows))
    say()
    if result.interrupted:
        say("Interrupted: unfinished plates were cancelled and the server was shut down.")
    say(f"Plates:  {demo.plates_dir}")
    say(
        f"Results: {demo.results_dir}  (per plate: <plate>_results/results.json, wells.csv, "
        "<well>/objects.csv)"
    )
    say(f"Took {result.seconds:.1f} s.")
    return result.exit_code


async def _run_with_signals(demo: Demo, layouts: Sequence[PlateLayout]) -> DemoResult:
    """`demo.run` with a `ConsoleHost`, SIGINT and SIGTERM turned into `demo.interrupt()`."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, demo.interrupt)
    try:
        return await demo.run(layouts, ConsoleHost())
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
