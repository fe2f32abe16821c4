"""`ExecutionSignals`: the hub that wakes status pollers and keeps their liveness evidence.

The client's event reader (on the same event loop) feeds it: `notify_event` for every
`progress`/`execution` event, `notify_heartbeat` for every heartbeat. A poller registers a
`watch(execution_id)` for as long as it runs and `await`s `watch.wait(timeout)`:

- an event for its execution wakes it at once (`WakeReason.EVENT`), so a status change is
  seen within one poll round-trip, not one interval; events that arrive while the poller is
  busy polling are remembered, so the next `wait` returns at once (none is lost);
- a heartbeat wakes nobody: it only refreshes `last_sign_of_life`, which pollers read when
  they decide whether the server is lost (so N pollers do not re-poll on every heartbeat);
- a new `server_epoch` (a restarted server) wakes every watcher (`WakeReason.EPOCH_CHANGED`).

Progress events prove life but do not change an execution's status; a client that can tell
them apart may pass `wake=False` for them to save a status poll per progress event. An event
that carries the execution's record (an `execution` event) may come with `observe`, which
builds the `StatusObservation` a status poll would have returned: a woken poller takes it as
that poll's answer instead of asking the server again (it is called only if someone watches).

Memory is bounded by the number of running pollers: events for executions nobody watches
are dropped after the epoch check, and a watch's state goes away when it is closed.
Not thread-safe: call every method on the loop that runs the pollers.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from types import TracebackType

from zmqruntime.engines.poll_policy import StatusObservation

__all__ = ["ExecutionSignals", "ExecutionWatch", "WakeReason"]


class WakeReason(enum.StrEnum):
    """Why `ExecutionWatch.wait` returned."""

    EVENT = "event"
    EPOCH_CHANGED = "epoch_changed"
    TIMEOUT = "timeout"


class ExecutionSignals:
    """Wake-ups and liveness evidence for the pollers of one client (one event loop)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        #: The clock stamping signs of life; pollers reading them must use the same one.
        self.clock = clock
        self._epoch: str | None = None
        self._epoch_changes = 0
        self._last_heartbeat: float | None = None
        self._watches: dict[str, set[ExecutionWatch]] = {}

    @property
    def current_epoch(self) -> str | None:
        """The latest server epoch seen on the event stream (None before the first)."""
        return self._epoch

    @property
    def epoch_changes(self) -> int:
        """How many times the epoch changed (0 while one server was seen)."""
        return self._epoch_changes

    @property
    def last_heartbeat(self) -> float | None:
        """Clock time of the latest heartbeat, None before the first."""
        return self._last_heartbeat

    @property
    def watched_executions(self) -> int:
        """How many executions have at least one open watch."""
        return len(self._watches)

    def notify_event(
        self,
        execution_id: str,
        server_epoch: str | None,
        *,
        wake: bool = True,
        observe: Callable[[], StatusObservation] | None = None,
    ) -> None:
        """A progress or execution event for `execution_id` arrived (`observe`: the status
        it shows, for events that carry the record; see the module docstring)."""
        self._observe_epoch(server_epoch)
        watches = self._watches.get(execution_id)
        if not watches:
            return
        now = self.clock()
        observation = observe() if observe is not None else None
        for watch in watches:
            watch._saw_event(now, wake=wake, observation=observation)

    def notify_heartbeat(self, server_epoch: str | None) -> None:
        """A server heartbeat arrived: a sign of life for every execution of that server."""
        self._observe_epoch(server_epoch)
        self._last_heartbeat = self.clock()

    def last_sign_of_life(self, execution_id: str) -> float | None:
        """Latest clock time of a heartbeat, or of an event for this (watched) execution."""
        times = [w.last_event for w in self._watches.get(execution_id, ())]
        times.append(self._last_heartbeat)
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def watch(self, execution_id: str) -> ExecutionWatch:
        """Start watching `execution_id`; close the watch (or use `with`) when done."""
        watch = ExecutionWatch(self, execution_id)
        self._watches.setdefault(execution_id, set()).add(watch)
        return watch

    def _release(self, watch: ExecutionWatch) -> None:
        watches = self._watches.get(watch.execution_id)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.execution_id]

    def _observe_epoch(self, epoch: str | None) -> None:
        if epoch is None or epoch == self._epoch:
            return
        if self._epoch is not None:
            self._epoch_changes += 1
            self._last_heartbeat = None  # the old server's heartbeats prove nothing now
            for watches in self._watches.values():
                for watch in watches:
                    watch._wake(WakeReason.EPOCH_CHANGED)
        self._epoch = epoch


class ExecutionWatch:
    """One poller's registration for one execution: its wake-ups and event times."""

    def __init__(self, signals: ExecutionSignals, execution_id: str) -> None:
        self.signals = signals
        self.execution_id = execution_id
        #: The epoch known when the watch started (None if no event was seen yet).
        self.epoch_at_start = signals.current_epoch
        self.epoch_changes_at_start = signals.epoch_changes
        self.last_event: float | None = None
        self._pushed: StatusObservation | None = None
        self._pending: WakeReason | None = None
        self._woken = asyncio.Event()
        self._closed = False

    @property
    def last_sign_of_life(self) -> float | None:
        """Latest clock time of a heartbeat or of an event for this execution."""
        heartbeat = self.signals.last_heartbeat
        if heartbeat is None or (self.last_event is not None and self.last_event > heartbeat):
            return self.last_event
        return heartbeat

    async def wait(self, timeout: float) -> WakeReason:
        """Return at the next wake-up (or at once if one is pending), else after `timeout` s."""
        if self._pending is None and timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    await self._woken.wait()
            except TimeoutError:
                pass
        reason = self._pending or WakeReason.TIMEOUT
        self._pending = None
        self._woken.clear()
        return reason

    def close(self) -> None:
        """Stop watching; the signals hub forgets this watch."""
        if not self._closed:
            self._closed = True
            self.signals._release(self)

    def __enter__(self) -> ExecutionWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def take_pushed(self) -> StatusObservation | None:
        """The newest status an event showed since the last call (None if none did)."""
        pushed, self._pushed = self._pushed, None
        return pushed

    def _saw_event(
        self, now: float, *, wake: bool, observation: StatusObservation | None = None
    ) -> None:
        self.last_event = now
        if observation is not None:
            self._pushed = observation
        if wake:
            self._wake(WakeReason.EVENT)

    def _wake(self, reason: WakeReason) -> None:
        if self._pending is not WakeReason.EPOCH_CHANGED:  # a restart outranks an event
            self._pending = reason
        self._woken.set()
