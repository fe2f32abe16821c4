"""`python -m openhcs_workflow demo`, run as a user runs it: a subprocess, a real loopback
server, real worker processes, real plates on disk.

Counting tolerance: every well's measured object count must be within max(1, 5 %) of the cells
the generator planted in it (the reference pipeline finds exactly the planted cells on the
generator's default settings; the tolerance leaves room for a merged or split pair).
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from openhcs_workflow.__main__ import cli
from openhcs_workflow.demo import (
    EXIT_INTERRUPTED,
    DemoOptions,
    PlateSummary,
    format_summary,
)
from openhcs_workflow.plate_state import PlateState

pytest.importorskip("scipy", reason="the demo's image steps need scipy (the `images` extra)")

DEMO = [sys.executable, "-m", "openhcs_workflow", "demo"]
_STATES = frozenset(state.value for state in PlateState)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def _within_tolerance(counted: int, planted: int) -> bool:
    return abs(counted - planted) <= max(1, round(0.05 * planted))


def _summary_states(stdout: str) -> dict[str, str]:
    """plate name -> state, from the summary table the demo prints."""
    states = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("plate_") and parts[1] in _STATES:
            states[parts[0]] = parts[1]
    return states


def test_demo_runs_plates_end_to_end_and_counts_what_was_planted(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            *DEMO,
            "--plates",
            "2",
            "--wells",
            "4",
            "--fields",
            "2",
            "--workers",
            "2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary_states(done.stdout) == {"plate_01": "completed", "plate_02": "completed"}
    assert "All done: 2 completed, 0 failed, 0 cancelled" in done.stderr
    assert str(out / "results") in done.stdout

    for plate in ("plate_01", "plate_02"):
        manifest = json.loads((out / "plates" / plate / "plate.json").read_text())
        planted = {w: sum(per_field.values()) for w, per_field in manifest["planted"].items()}
        results_dir = out / "results" / f"{plate}_results"
        results = json.loads((results_dir / "results.json").read_text())
        assert results["wells_processed"] == 4
        assert set(results["objects_per_well"]) == set(planted) == {"A01", "A02", "A03", "A04"}
        for well, counted in results["objects_per_well"].items():
            assert _within_tolerance(counted, planted[well]), (plate, well, counted, planted)
            rows = list(csv.DictReader((results_dir / well / "objects.csv").open()))
            assert len(rows) == counted  # one measurement row per object
        with (results_dir / "wells.csv").open() as f:
            assert [r["well"] for r in csv.DictReader(f)] == ["A01", "A02", "A03", "A04"]


class _Lines:
    """A subprocess's stream read line by line on a thread, awaited with deadlines."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, *patterns: str, timeout: float) -> None:
        """Read lines until each regular expression of `patterns` matched one (in any order)."""
        deadline = time.monotonic() + timeout
        missing = set(patterns)
        while missing:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"stream ended before {missing}:\n{''.join(self.lines)}")
            self.lines.append(line)
            missing = {pattern for pattern in missing if not re.search(pattern, line)}

    def rest(self, timeout: float) -> str:
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def test_ctrl_c_cancels_the_batch_and_leaves_no_process(tmp_path: Path) -> None:
    """SIGINT to the whole process group, like a terminal's Ctrl-C: the batch ends with its
    plates cancelled (none failed), the server shuts down, and no child process survives."""
    process = subprocess.Popen(
        [
            *DEMO,
            "--plates",
            "3",
            "--wells",
            "48",
            "--fields",
            "3",
            "--workers",
            "2",
            "--output",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=ENV,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stdout, stderr = _Lines(process.stdout), _Lines(process.stderr)
    try:
        # Mid-run: both workers report progress on a plate. (Progress, not the `Executing`
        # line, which the server's dispatch triggers: a worker process still starting then,
        # before it ignores SIGINT, would be killed by the Ctrl-C; see docs/demo.md.)
        stderr.wait_for(r"^plate_01: \d+% ", r"^plate_02: \d+% ", timeout=90)
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the demo's server should have worker processes"
        os.killpg(process.pid, signal.SIGINT)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    out, err = stdout.rest(10), stderr.rest(10)
    assert returncode == EXIT_INTERRUPTED, out + err
    assert "Traceback" not in err, err
    states = _summary_states(out)
    assert set(states) == {"plate_01", "plate_02", "plate_03"}, out
    assert "failed" not in states.values(), out + err
    assert "cancelled" in states.values(), out + err
    assert "Interrupted: unfinished plates were cancelled" in out
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"processes outlived the demo: {alive}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plates", "0"], "argument --plates: must be from 1 to 32, got 0"),
        (["--wells", "many"], "argument --wells: expected an integer, got 'many'"),
        (["--workers", "65"], "argument --workers: must be from 1 to 64, got 65"),
        (["--size", "16"], "argument --size: must be from 64 to 2048, got 16"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
    ],
)
def test_bad_arguments_are_named_and_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["demo", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_output_directory_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "something.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        cli(["demo", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"argument --output: {str(tmp_path)!r} exists and is not an empty directory" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "something.txt").read_text() == "keep me"


def test_the_command_line_refuses_bad_arguments_with_a_message() -> None:
    done = subprocess.run(
        [*DEMO, "--plates", "-3"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert done.returncode == 2
    assert "argument --plates: must be from 1 to 32, got -3" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "openhcs_workflow"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "COMMAND" in missing.stderr


def test_demo_options_are_validated_like_the_command_line() -> None:
    with pytest.raises(ValueError, match=r"plates: expected an integer from 1 to 32, got True"):
        DemoOptions(plates=True)
    with pytest.raises(ValueError, match=r"fields: expected an integer from 1 to 16, got 17"):
        DemoOptions(fields=17)


def test_summary_table_compares_objects_with_planted_cells() -> None:
    rows = [
        PlateSummary(
            plate="plate_01",
            state=PlateState.COMPLETED,
            wells_processed=4,
            wells_total=4,
            objects=101,
            planted=100,
            seconds=1.25,
            output_dir="/x",
            reason=None,
        ),
        PlateSummary(
            plate="plate_02",
            state=PlateState.CANCELLED,
            wells_processed=1,
            wells_total=4,
            objects=None,
            planted=90,
            seconds=None,
            output_dir=None,
            reason="stopped",
        ),
    ]
    lines = format_summary(rows).splitlines()
    assert lines[0].split() == ["plate", "state", "wells", "objects", "planted", "diff", "time"]
    assert lines[2].split() == ["plate_01", "completed", "4/4", "101", "100", "+1", "1.25", "s"]
    assert lines[3].split() == ["plate_02", "cancelled", "1/4", "-", "90", "-", "-"]
    # totals compare like for like: only plates with results
    assert lines[5].split() == ["total", "1/2", "with", "results", "5/8", "101", "100", "+1"]
