"""The notebook host and the example notebook (`nox -s notebook`).

`examples/plate_batch.ipynb` is executed headlessly by nbclient in a real IPython kernel: it
must finish with every plate of every run completed, and the progress it drew must be in the
cells that ran the batches. Skipped where nbclient, nbformat or ipykernel are not installed
(the default `tests` session stays lean).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openhcs_workflow import (
    BatchWorkflowService,
    BlockingBatchWorkflowService,
    Host,
    PlateConfigSources,
    PlateSpec,
)
from openhcs_workflow.local_server import LocalServer
from openhcs_workflow.pipeline import default_pipeline, generate_plates
from openhcs_workflow.zmq_backend import ZmqWorkflowBackend
from zmqruntime.connection import ConnectionInfo

pytest.importorskip("scipy", reason="the reference pipeline's steps need scipy")
pytest.importorskip("tqdm", reason="NotebookHost's bars need tqdm (the `notebook` extra)")
pytest.importorskip("IPython", reason="NotebookHost needs IPython (the `notebook` extra)")

NOTEBOOK = Path(__file__).resolve().parents[3] / "examples" / "plate_batch.ipynb"
KERNEL_MODULES = ("nbclient", "nbformat", "ipykernel")


def _missing_kernel_modules() -> list[str]:
    return [name for name in KERNEL_MODULES if importlib.util.find_spec(name) is None]


@pytest.mark.skipif(
    bool(_missing_kernel_modules()),
    reason=f"executing the notebook needs {', '.join(KERNEL_MODULES)} (`nox -s notebook`)",
)
def test_example_notebook_runs_headlessly_and_completes_every_plate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    output = tmp_path / "out"
    monkeypatch.setenv("OPENHCS_NOTEBOOK_OUTPUT", str(output))  # the kernel inherits it
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # this environment's python3 kernel
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError if any cell fails

    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    texts = [_text(cell) for cell in cells]
    assert "every plate completed in every run" in texts[-2]
    run_cells = [
        i
        for i, cell in enumerate(cells)
        if "run_plates(specs)" in cell.source or "start_run(specs)" in cell.source
    ]
    assert len(run_cells) == 3  # awaited, blocking with host.wait, plain blocking
    for i in run_cells:
        # the bars (one per plate + overall) and the final status were drawn in this cell
        widgets = [o for o in cells[i].outputs if _widget(o)]
        assert len(widgets) == 4, cells[i].outputs
        assert "All done: 3 completed, 0 failed, 0 cancelled" in texts[i]
    for plate in ("plate_01", "plate_02", "plate_03"):
        results = json.loads((output / "results" / f"{plate}_results" / "results.json").read_text())
        assert results["wells_processed"] == 8
        assert results["objects_total"] == results["planted_total"]


def _text(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/plain" in output.data:
            parts.append(output.data["text/plain"])
    return "\n".join(parts)


def _widget(output: Any) -> bool:
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


# -- NotebookHost without a kernel: the callbacks' thread ------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ConnectionInfo]:
    with LocalServer(workers=2) as local:
        yield local.connection_info


def _recorded_host(**options: Any) -> Any:
    from openhcs_workflow.hosts import NotebookHost

    names = sorted(Host.__abstractmethods__ - {"dispatcher"})

    class Recording(NotebookHost):
        def __init__(self) -> None:
            super().__init__(**options)
            self.threads: list[tuple[str, int]] = []

    def wrap(name: str) -> Any:
        def callback(self: Any, *args: Any) -> None:
            self.threads.append((name, threading.get_ident()))
            getattr(NotebookHost, name)(self, *args)

        return callback

    for name in names:
        setattr(Recording, name, wrap(name))
    return Recording()


def test_notebook_host_draws_from_the_kernel_thread_in_both_apis(
    server: ConnectionInfo, tmp_path: Path
) -> None:
    """The test's main thread plays the kernel: its loop runs the awaited service, then blocks
    in `host.wait` while a `BlockingBatchWorkflowService` runs on its own thread."""
    from tqdm.std import tqdm

    layouts = generate_plates(tmp_path / "plates", 2, wells=2, shape=(96, 96))
    specs = [PlateSpec(plate_id=str(p.root), pipeline=default_pipeline()) for p in layouts]
    configs = PlateConfigSources(default={"output_root": str(tmp_path / "results")})
    bars = io.StringIO()

    async def kernel() -> None:
        kernel_thread = threading.get_ident()
        awaited = _recorded_host(tqdm_class=tqdm, file=bars)
        backend = await ZmqWorkflowBackend.connect(server)
        service = BatchWorkflowService(awaited, backend, configs=configs)
        awaited.attach(service.view)
        report = await service.run_plates(specs)
        await service.shutdown()
        await backend.aclose()
        await asyncio.sleep(0)
        assert report.completed == 2
        assert awaited.totals == (2, 0, 0)

        blocking = _recorded_host(tqdm_class=tqdm, file=bars)
        with BlockingBatchWorkflowService(
            blocking, lambda: ZmqWorkflowBackend.connect(server), configs=configs
        ) as workflow:
            blocking.attach(workflow.view)
            blocking_report = blocking.wait(workflow.start_run(specs), timeout=120)
        blocking.drain()
        assert blocking_report.completed == 2
        assert blocking.totals == (2, 0, 0)
        for host in (awaited, blocking):
            assert {thread for _, thread in host.threads} == {kernel_thread}
            assert "on_all_plates_completed" in {name for name, _ in host.threads}

    asyncio.run(kernel())
    assert bars.getvalue().count("| 2/2 plates") >= 2  # both hosts drew their overall bar
