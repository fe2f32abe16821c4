"""Sampling profiles of running processes with py-spy, summarised for a benchmark note.

Scenarios that miss a goal run the slow workload once more under `SpyProfile` and put
`summary()` into the row's notes: for each profiled process, the share of samples spent
waiting (select/poll/wait) and the functions that take the rest, so the table says what is
in the way. Without py-spy (or without permission to attach) the summary says so instead.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["SpyProfile", "summarise_raw"]

#: Leaf functions that mean "blocked, waiting for something" rather than working.
_WAITING = (
    ".select",
    ".poll",
    "wait",
    "Connection._recv",
    "SemLock.__enter__",
    "sleep",
    "_read_from_self",
    "resource_tracker",
)
#: Frames of the three packages (what the project can change), minus entry points that
#: include everything.
_OURS = ("zmqruntime/", "openhcs_workflow/", "reactive_services/")
_ENTRY = frozenset({"<module>", "main", "_run_code", "_run_module_as_main", "run"})


def _frame_parts(frame: str) -> tuple[str, str]:
    """`"Class.method (pkg/module.py)"` -> (`"Class.method"`, `"pkg/module.py"`)."""
    name, _, rest = frame.rpartition(" (")
    return (name or frame), rest.rstrip(")").rsplit(":", 1)[0]


def _is_waiting(frame: str) -> bool:
    name, path = _frame_parts(frame)
    return any(name.endswith(w) or w in path for w in _WAITING)


def summarise_raw(text: str, *, top: int = 4) -> str:
    """One line from py-spy's raw (collapsed-stack) output: busy share, top self frames,
    and the heaviest frames of our own packages (inclusive)."""
    self_time: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if _is_waiting(frames[-1]):
            waiting += count
            continue
        self_time[_frame_parts(frames[-1])[0]] += count
        for frame in set(frames):
            name, path = _frame_parts(frame)
            if name not in _ENTRY and any(p in path for p in _OURS):
                ours[name] += count
    if total == 0:
        return "no samples"
    busy = total - waiting

    def share(counter: collections.Counter[str]) -> str:
        return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in counter.most_common(top))

    text_out = f"{total} samples, {100 * busy / total:.0f}% busy"
    if busy:
        text_out += f"; self: {share(self_time)}"
    if ours:
        text_out += f"; ours incl.: {share(ours)}"
    return text_out


class SpyProfile:
    """Samples named processes with `py-spy record` while the `with` block runs.

    `SpyProfile({"server": pid, "client": os.getpid()})`; after the block, `summary()` gives
    one clause per process. py-spy is stopped with SIGINT (it then writes its output) and
    reaped; nothing outlives the block.
    """

    def __init__(self, targets: dict[str, int], *, rate: int = 200) -> None:
        self.targets = dict(targets)
        self.rate = rate
        self.results: dict[str, str] = {}
        self._dir: Path | None = None
        self._spies: dict[str, subprocess.Popen[bytes]] = {}
        self._problem: str | None = None

    def __enter__(self) -> Self:
        beside = Path(sys.executable).with_name("py-spy")  # a venv run without activation
        exe = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if exe is None:
            self._problem = "py-spy not installed"
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="bench-pyspy-"))
        for name, pid in self.targets.items():
            out = self._dir / f"{name}.txt"
            command = [exe, "record", "--nonblocking", "--nolineno", "--format", "raw"]
            command += ["--rate", str(self.rate), "--output", str(out), "--pid", str(pid)]
            self._spies[name] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for spy in self._spies.values():
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
        for name, spy in self._spies.items():
            try:
                _, err = spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            assert self._dir is not None
            out = self._dir / f"{name}.txt"
            if out.exists():
                self.results[name] = summarise_raw(out.read_text())
            else:
                tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
                self.results[name] = "py-spy failed" + (f": {tail[0]}" if tail else "")
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)

    def summary(self) -> str:
        """`profile (py-spy): server: …; client: …` or why there is none."""
        if self._problem is not None:
            return f"no profile: {self._problem}"
        parts = [f"{name}: {self.results.get(name, 'no result')}" for name in self.targets]
        return "profile (py-spy) — " + " | ".join(parts)
