"""The server's own worker processes, fed attempts over ZeroMQ (docs/protocol.md §7).

The default executor. Each worker is a spawned process (`worker_main.serve_jobs`) that
connects to the server's jobs socket (ROUTER) and runs the `run_job` messages it is handed, in
the order they came; it reports their ends on the progress channel, after their other reports.

A worker runs one attempt and may hold up to `AHEAD_DEPTH` more, sent ahead so that it finds
its next job waiting instead of idling for a round trip through the server (a worker that never
idles also costs every process less per job: none is woken once per message). An attempt sent
ahead cannot be taken back, and would wait behind a long job while another worker idles, so one
goes ahead only behind jobs expected to be quick: the last attempts of their handlers took less
than `AHEAD_BELOW` in all, and the running one has run less than that so far. Everything else
waits here, encoded, at most one per worker (the rest stay in the scheduler), and the next goes
out the moment a worker reports an end. An attempt starts when its worker is free to run it:
when it is handed to an idle worker, or, sent ahead, when the end of the attempt before it
arrives. So the server learns each start, with the worker's pid, without a `worker_started`
report.

A process pool has threads in the server that pickle calls and collect results, and it breaks
as a whole when one worker dies. Here nothing runs outside the event loop, and a death costs
only the attempts handed to that worker: the loop watches every process's sentinel, tells the
server which attempts it held (the one it ran, and those sent ahead, which never started)
and how it died, and starts a replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import zmq

from zmqruntime.codec import WireCodec, WireError
from zmqruntime.loop_socket import LoopSocket
from zmqruntime.messages import RunJob, WorkerReady
from zmqruntime.server.scheduler import Dispatch
from zmqruntime.server.worker_main import WorkerConfig, serve_jobs
from zmqruntime.server.worker_pool import exit_description, sigint_blocked

__all__ = ["HandedCallback", "LostCallback", "ProcessWorkers"]

log = logging.getLogger(__name__)

#: Told which attempts a dead worker held, pid → how it died, and why they were lost.
LostCallback = Callable[[list[Dispatch], Mapping[int, str], str], None]
#: Told that worker process `pid` is free to run an attempt handed to it: it starts now.
HandedCallback = Callable[[Dispatch, int], None]

#: Deaths before `worker_ready` in a row after which waiting attempts are given up as lost
#: (each time), so a worker that cannot start fails its executions instead of hanging them.
_FAILED_STARTS_TOLERATED: Final = 3
#: Longest pause before starting a replacement for a worker that died before it was ready.
_MAX_RESTART_DELAY: Final = 5.0
#: How long a closing server waits for its workers to exit before it kills them.
_EXIT_WAIT: Final = 5.0
#: An attempt is sent ahead to a busy worker only behind jobs expected to take less than this
#: (seconds) in all: the last attempts of their handlers did, and the running one has run less
#: than this so far. Behind jobs that long, a round trip through the server costs a few percent
#: at most.
AHEAD_BELOW: Final = 0.01
#: Most attempts sent ahead to one worker. Each one more saves less (the worker already finds
#: its next job waiting) and is one more that waits if a quick handler turns out slow.
AHEAD_DEPTH: Final = 3


class _Worker:
    """One worker process, the attempt it runs and those sent ahead, in order."""

    def __init__(self, identity: bytes, process: Any) -> None:
        self.identity = identity
        self.process = process
        self.pid: int = process.pid
        self.ready = False
        self.running: Dispatch | None = None
        #: Sent ahead while `running` runs; the first starts when `running` ends.
        self.ahead: deque[Dispatch] = deque()
        #: `time.monotonic()` when `running` started.
        self.started_at = 0.0
        #: About to be killed: hand it nothing, start nothing on it.
        self.retiring = False

    def attempts(self) -> list[Dispatch]:
        """The attempts it holds: the running one first."""
        return [d for d in (self.running, *self.ahead) if d is not None]


class ProcessWorkers:
    """Starts `count` worker processes, hands them attempts, and replaces the ones that die.

    `jobs` is the bound ROUTER socket the workers connect to (owned from now on); `config`
    is every worker's `WorkerConfig` (each gets an identity of its own). `on_handed` learns
    of each attempt's start in a worker, and `on_lost` of the attempts of each worker that died;
    `after_batch` runs after each batch of messages from the workers. All methods run on the
    event loop's thread.
    """

    def __init__(
        self,
        *,
        count: int,
        jobs: zmq.Socket[bytes],
        codec: WireCodec,
        config: WorkerConfig,
        on_handed: HandedCallback,
        on_lost: LostCallback,
        after_batch: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        self.count = count
        self._codec = codec
        self._config = config
        self._on_handed = on_handed
        self._on_lost = on_lost
        self._jobs = LoopSocket(
            jobs,
            self._take_message,
            on_error=on_error,
            copy_head=3,  # routing id, signature, envelope
            after_batch=after_batch,
        )
        self._workers: dict[bytes, _Worker] = {}
        self._where: dict[int, _Worker] = {}
        self._waiting: deque[tuple[Dispatch, list[Any]]] = deque()
        #: Handler name → how long its last attempt ran on a worker (start to end).
        self._took: dict[str, float] = {}
        self._failed_starts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restarts: list[asyncio.TimerHandle] = []
        self._closing = False

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers and listen for them (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._jobs.start()
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        if self._closing or self._loop is None:
            return
        identity = os.urandom(8).hex()
        config: WorkerConfig = {**self._config, "identity": identity}
        process = multiprocessing.get_context("spawn").Process(
            target=serve_jobs, args=(config,), name=f"zmqruntime-worker-{identity}", daemon=True
        )
        with sigint_blocked():  # born with SIGINT blocked until it ignores it
            process.start()
        worker = _Worker(identity.encode(), process)
        self._workers[worker.identity] = worker
        self._loop.add_reader(process.sentinel, self._died, worker)

    def process_pids(self) -> set[int]:
        """Pids of the worker processes (started, not yet found dead)."""
        return {worker.pid for worker in self._workers.values()}

    def ready_pids(self) -> set[int]:
        """Pids of the worker processes that said `worker_ready` (and are not found dead)."""
        return {worker.pid for worker in self._workers.values() if worker.ready}

    def retire(self, pid: int) -> None:
        """Worker `pid` is about to be killed: hand it nothing more, and start nothing sent
        ahead to it (that attempt never runs there; its death gives it back)."""
        for worker in self._workers.values():
            if worker.pid == pid:
                worker.retiring = True

    def sent_ahead(self) -> dict[int, tuple[str, ...]]:
        """Worker pid → the execution ids of the attempts sent ahead to it (not yet started),
        in the order it will run them."""
        return {
            w.pid: tuple(d.execution_id for d in w.ahead) for w in self._workers.values() if w.ahead
        }

    def has_room(self) -> bool:
        """Whether to take another attempt from the scheduler: fewer wait here, unsent, than
        there are workers. Those sent ahead do not count, so quick workers are kept fed,
        while slow ones leave the rest in the scheduler's queue."""
        return len(self._waiting) < self.count

    def kill_all(self) -> None:
        """SIGKILL every worker (a forced shutdown): their deaths are handled as usual, but
        none is replaced."""
        self._closing = True
        for worker in self._workers.values():
            with contextlib.suppress(Exception):
                worker.process.kill()

    async def close(self, *, kill: bool, wait: bool = True) -> None:
        """Stop every worker (SIGKILL with `kill`, else SIGTERM: they are idle by now) and,
        with `wait`, wait for them to exit; closes the jobs socket."""
        self._closing = True
        for handle in self._restarts:
            handle.cancel()
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            if self._loop is not None:
                self._loop.remove_reader(worker.process.sentinel)
            with contextlib.suppress(Exception):
                if kill:
                    worker.process.kill()
                else:
                    worker.process.terminate()
        self._jobs.close(linger=0)
        if wait and workers:
            await asyncio.to_thread(_join_all, [w.process for w in workers])

    # -- attempts -------------------------------------------------------------------------

    def dispatch(self, dispatch: Dispatch, result_limit: int) -> None:
        """Hand the attempt to an idle ready worker, or keep it until one is.
        Raises (and keeps nothing) if the attempt cannot be encoded as a `run_job`."""
        message = RunJob(
            execution_id=dispatch.execution_id,
            attempt=dispatch.attempt,
            handler=dispatch.handler,
            handler_ref=dispatch.handler_ref,
            params=dispatch.params,
            artifact=dispatch.artifact,
            compile_only=dispatch.compile_only,
            result_limit=result_limit,
        )
        self._waiting.append((dispatch, self._codec.encode(message)))
        self.hand_out()

    def ended(self, execution_id: str, attempt: int, pid: int) -> Dispatch | None:
        """Worker `pid` reported the end of `attempt` of `execution_id`: its dispatch, or
        None (and nothing changed) if that worker does not run it (a stale or forged report).

        Call `hand_out` once the end is recorded: the first attempt sent ahead to that worker, if
        any, starts then, so no record shows a start before the end of the job before it.
        """
        worker = self._where.get(attempt)
        if worker is None or worker.pid != pid:
            return None
        dispatch = worker.running
        if dispatch is None or dispatch.attempt != attempt or dispatch.execution_id != execution_id:
            return None
        del self._where[attempt]
        worker.running = None
        self._took[dispatch.handler] = time.monotonic() - worker.started_at
        return dispatch

    def withdraw(self, execution_id: str) -> Dispatch | None:
        """Take back the execution's attempt if it still waits here (not yet sent to any
        worker): its dispatch, or None if it is with a worker or unknown."""
        for index, (dispatch, _) in enumerate(self._waiting):
            if dispatch.execution_id == execution_id:
                del self._waiting[index]
                return dispatch
        return None

    def hand_out(self) -> None:
        """Start the attempts sent ahead to workers that are free now, then send waiting
        attempts to the workers that may take them."""
        for freed in self._workers.values():
            if freed.running is None and freed.ahead and not freed.retiring:
                self._start(freed, freed.ahead.popleft())
        while self._waiting and (worker := self._taker()) is not None:
            dispatch, frames = self._waiting.popleft()
            self._where[dispatch.attempt] = worker
            # A ROUTER send to a connected peer never waits; one to a worker that just died
            # is dropped, and the attempt is given back when its death is handled.
            self._jobs.send([worker.identity, *frames])
            if worker.running is None:
                self._start(worker, dispatch)
            else:
                worker.ahead.append(dispatch)

    def _taker(self) -> _Worker | None:
        """The worker to send the next attempt to: an idle ready one, else the busy one with
        the fewest sent ahead that may take one more, else None."""
        best: _Worker | None = None
        now = time.monotonic()
        for worker in self._workers.values():
            if not worker.ready or worker.retiring:
                continue
            if worker.running is None:
                return worker
            fewer = len(worker.ahead) < (AHEAD_DEPTH if best is None else len(best.ahead))
            if fewer and self._quick(worker, now):
                best = worker
        return best

    def _quick(self, worker: _Worker, now: float) -> bool:
        """Whether the jobs the busy worker holds are expected to end soon (see
        `AHEAD_BELOW`)."""
        if now - worker.started_at >= AHEAD_BELOW:
            return False
        expected = 0.0
        for held in (worker.running, *worker.ahead):
            assert held is not None
            took = self._took.get(held.handler)
            if took is None:
                return False
            expected += took
        return expected < AHEAD_BELOW

    def _start(self, worker: _Worker, dispatch: Dispatch) -> None:
        worker.running = dispatch
        worker.started_at = time.monotonic()
        self._on_handed(dispatch, worker.pid)

    # -- news from the workers ------------------------------------------------------------

    def _take_message(self, frames: list[Any]) -> None:
        identity = bytes(frames[0])
        try:
            message = self._codec.decode(frames[1:]).message
        except WireError as exc:
            log.warning("refused a message on the jobs channel: %s", exc)
            return
        worker = self._workers.get(identity)
        if not isinstance(message, WorkerReady) or worker is None or message.pid != worker.pid:
            log.warning("refused a %r message on the jobs channel", type(message).TYPE)
            return
        if not worker.ready:
            worker.ready = True
            self._failed_starts = 0
            self.hand_out()

    def _died(self, worker: _Worker) -> None:
        """A worker's sentinel fired: give its attempts back, then replace it."""
        assert self._loop is not None
        self._loop.remove_reader(worker.process.sentinel)
        how = exit_description(worker.process) or "ended"
        worker.process.join(0)  # reap it
        self._workers.pop(worker.identity, None)
        lost = worker.attempts()
        for dispatch in lost:
            self._where.pop(dispatch.attempt, None)
        worker.running = None
        worker.ahead.clear()
        log.warning("worker process %d %s; attempts lost: %d", worker.pid, how, len(lost))
        if lost:
            self._on_lost(lost, {worker.pid: how}, f"worker process {worker.pid} {how}")
        if self._closing:
            return
        delay = 0.0
        if not worker.ready:
            self._failed_starts += 1
            delay = min(_MAX_RESTART_DELAY, 0.25 * 2**self._failed_starts)
            if self._failed_starts >= _FAILED_STARTS_TOLERATED and self._waiting:
                stranded = [dispatch for dispatch, _ in self._waiting]
                self._waiting.clear()
                why = f"worker processes die before they are ready (last: {worker.pid} {how})"
                self._on_lost(stranded, {}, why)
        handle = self._loop.call_later(delay, self._respawn)
        self._restarts.append(handle)

    def _respawn(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._restarts = [h for h in self._restarts if h.when() > now]
        try:
            self._spawn()
        except Exception:
            log.exception("cannot start a worker process; trying again")
            self._restarts.append(self._loop.call_later(_MAX_RESTART_DELAY, self._respawn))


def _join_all(processes: Iterable[Any]) -> None:
    """Wait for the processes to exit; kill those that take longer than `_EXIT_WAIT`."""
    for process in processes:
        process.join(_EXIT_WAIT)
        if process.exitcode is None:
            process.kill()
            process.join()
