"""The server's view of its worker processes: cpu and memory figures, and ending one.

psutil handles are cached per pid: `cpu_percent(None)` measures the cpu time used since the
previous call on the *same* object, so a fresh object per status request would always report
0.0. Only descendants of the server process are ever measured or killed: a pid reported by a
remote executor's worker means nothing on this machine and must not hit a local process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping

import psutil

from zmqruntime.messages import WorkerInfo

__all__ = ["WorkerStats"]

log = logging.getLogger(__name__)


class WorkerStats:
    """Cached psutil handles of the server's worker processes."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    @staticmethod
    def descendants() -> dict[int, psutil.Process]:
        """Every live process started (directly or not) by this one, by pid."""
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return {}
        return {child.pid: child for child in children}

    def watch(self, pid: int) -> None:
        """Start measuring a worker (called when it reports; the first sample needs a start)."""
        if pid in self._processes or pid == os.getpid():  # called per job: cheap test first
            return
        try:
            process = psutil.Process(pid)
            process.cpu_percent(None)
        except psutil.Error:
            return
        self._processes[pid] = process

    def kill(self, pid: int, reason: str) -> bool:
        """SIGKILL a worker of this server; refuses the server itself and foreign pids."""
        if pid == os.getpid():
            log.warning("not killing pid %d (%s): it is the server itself", pid, reason)
            return False
        process = self.descendants().get(pid)
        if process is None:
            log.warning("not killing pid %d (%s): not a process of this server", pid, reason)
            return False
        log.warning("killing worker %d: %s", pid, reason)
        with contextlib.suppress(psutil.Error):
            process.kill()
        return True

    def infos(self, pids: Iterable[int], busy: Mapping[int, str]) -> list[WorkerInfo]:
        """Figures for the given worker pids that are local and alive, sorted by pid."""
        local = self.descendants()
        wanted = sorted(set(pids) & set(local))
        infos: list[WorkerInfo] = []
        for pid in wanted:
            self.watch(pid)
            process = self._processes.get(pid)
            if process is None:
                continue
            try:
                with process.oneshot():
                    cpu = process.cpu_percent(None)
                    memory = process.memory_info().rss / 2**20
            except psutil.Error:
                self._processes.pop(pid, None)
                continue
            infos.append(
                WorkerInfo(pid=pid, cpu_percent=cpu, memory_mb=memory, execution_id=busy.get(pid))
            )
        return infos

    def prune(self) -> None:
        """Forget processes that have exited (keeps the cache bounded by live workers)."""
        for pid, process in list(self._processes.items()):
            if not process.is_running():
                del self._processes[pid]
