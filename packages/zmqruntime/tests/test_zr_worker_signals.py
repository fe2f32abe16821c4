"""Pool workers survive a Ctrl-C sent to the whole process group, even while starting."""

from __future__ import annotations

import os
import signal

import pytest

from zmqruntime.server.worker_pool import default_executor_factory, sigint_blocked


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks only")
def test_sigint_right_after_spawn_does_not_kill_the_worker() -> None:
    executor = default_executor_factory(1)
    try:
        # WorkerPool.submit starts workers with SIGINT blocked; so does this, the same way.
        with sigint_blocked():
            first = executor.submit(os.getpid)
        # The worker is still starting (a spawned interpreter takes tens of milliseconds
        # before its initializer runs): a terminal's Ctrl-C lands now.
        for process in list(getattr(executor, "_processes", {}).values()):
            os.kill(process.pid, signal.SIGINT)
        pid = first.result(timeout=30)
        assert executor.submit(os.getpid).result(timeout=30) == pid
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
