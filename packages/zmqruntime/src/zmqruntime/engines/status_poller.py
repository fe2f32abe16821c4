"""`ExecutionStatusPoller`: follow one execution to exactly one outcome, push-woken and
poll-checked, on asyncio (nothing blocks the loop).

One run: look at once (no sleep before the first poll); then pause until the next poll is
due, waking early when an event for the execution arrives (via `ExecutionSignals`); repeat
until the status is terminal or a limit ends the run. An event that carried the record
(`ExecutionWatch.take_pushed`) answers the poll it woke: the server is not asked again for
what it just published. Each `poll_status` call is bounded by
the time left before the liveness timeout or the deadline, so a hung request cannot stall
the poller.

Liveness: successful polls, events for the execution and server heartbeats are signs of
life. When none arrived for `liveness_timeout_seconds`, the outcome is `lost`; so is a
server epoch different from the one the execution was seen on (a restarted server forgot
the execution). The epoch of the first successful poll is authoritative; before it, the
epoch the signals knew when the run started stands in. Only an epoch change the signals
observe during the run counts, so a hub that has not yet heard of a fresh server cannot
make a healthy execution look lost.
So the poller gets a chance to see life even when its interval is longer than the liveness
timeout, it probes (polls) once the newest sign of life is half a timeout old; after a
failed poll it retries every min(interval, liveness timeout / 4).

The clock (default `time.monotonic`) measures liveness and the deadline; pauses are real
asyncio waits. With a fake clock, a pause that ran its full length still counts as "the
interval elapsed", so tests can step the clock without stalling the poller.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from zmqruntime.blocking import run_blocking
from zmqruntime.engines.checks import check_optional_seconds, check_seconds
from zmqruntime.engines.hooks import FAILED, HookError, HookRunner
from zmqruntime.engines.poll_outcome import PollOutcome, PollOutcomeKind
from zmqruntime.engines.poll_policy import ExecutionStatusPollPolicyABC, StatusObservation
from zmqruntime.engines.signals import ExecutionSignals, ExecutionWatch, WakeReason
from zmqruntime.execution_status import ExecutionStatus

__all__ = ["ExecutionStatusPoller", "terminal_outcome"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

_KIND_OF_TERMINAL = {
    ExecutionStatus.COMPLETE: PollOutcomeKind.COMPLETE,
    ExecutionStatus.FAILED: PollOutcomeKind.FAILED,
    ExecutionStatus.CANCELLED: PollOutcomeKind.CANCELLED,
}


@attrs.frozen(kw_only=True)
class ExecutionStatusPoller:
    """Follows executions through an `ExecutionStatusPollPolicyABC`. Reusable."""

    #: Measures liveness and the deadline; must be the clock of the signals passed to `run`.
    clock: Callable[[], float] = time.monotonic

    async def run(
        self,
        execution_id: str,
        policy: ExecutionStatusPollPolicyABC,
        signals: ExecutionSignals | None = None,
    ) -> PollOutcome:
        """Follow `execution_id` until it ends, the server is lost, or the deadline passes."""
        if signals is not None and signals.clock != self.clock:
            raise ValueError("signals.clock: the poller and its signals must share one clock")
        limits = _Limits.of(policy)
        watch = signals.watch(execution_id) if signals is not None else None
        try:
            return await _PollRun(execution_id, policy, limits, self.clock, watch).run()
        finally:
            if watch is not None:
                watch.close()

    def run_blocking(self, execution_id: str, policy: ExecutionStatusPollPolicyABC) -> PollOutcome:
        """`run` (without signals) for code without an event loop, or inside a running one."""
        return run_blocking(lambda: self.run(execution_id, policy))


@attrs.frozen(kw_only=True)
class _Limits:
    interval: float
    liveness: float
    deadline: float | None

    @classmethod
    def of(cls, policy: ExecutionStatusPollPolicyABC) -> _Limits:
        return cls(
            interval=check_seconds("policy.poll_interval_seconds", policy.poll_interval_seconds),
            liveness=check_seconds(
                "policy.liveness_timeout_seconds", policy.liveness_timeout_seconds
            ),
            deadline=check_optional_seconds("policy.deadline_seconds", policy.deadline_seconds),
        )

    @property
    def retry(self) -> float:
        """Pause after a failed poll."""
        return min(self.interval, self.liveness / 4)


class _Due(enum.Enum):
    POLL = "poll"  # the interval (or retry pause) elapsed
    PROBE = "probe"  # the newest sign of life is half a liveness timeout old
    CHECK = "check"  # a limit may have passed


class _PollRun:
    """The mutable state of one `run` call."""

    def __init__(
        self,
        execution_id: str,
        policy: ExecutionStatusPollPolicyABC,
        limits: _Limits,
        clock: Callable[[], float],
        watch: ExecutionWatch | None,
    ) -> None:
        self.execution_id = execution_id
        self.policy = policy
        self.limits = limits
        self.clock = clock
        self.watch = watch
        self.hooks = HookRunner()
        self.started = clock()
        self.polled_life = self.started  # the liveness window starts when the run starts
        self.last_attempt = self.started
        self.next_delay = 0.0
        self.status: ExecutionStatus | None = None
        self.payload: Mapping[str, Any] = _EMPTY
        # The server epoch the execution lives on; confirmed by the first successful poll.
        self.epoch: str | None = watch.epoch_at_start if watch is not None else None
        self.epoch_confirmed = False
        self.epoch_changes_seen = watch.epoch_changes_at_start if watch is not None else 0
        self.running_reported = False
        self.last_error: Exception | None = None  # of the latest poll, if it failed

    async def run(self) -> PollOutcome:
        while True:
            outcome = self._check_limits(self.clock()) or await self._poll() or await self._idle()
            if outcome is not None:
                return outcome

    # -- outcomes -------------------------------------------------------------------------

    def _end(
        self, kind: PollOutcomeKind, reason: str, error: Exception | None = None
    ) -> PollOutcome:
        return PollOutcome(
            kind=kind,
            execution_id=self.execution_id,
            status=self.status,
            payload=self.payload,
            reason=reason,
            error=error,
            hook_errors=tuple(self.hooks.errors),
        )

    def _life(self) -> float:
        signal = self.watch.last_sign_of_life if self.watch is not None else None
        return self.polled_life if signal is None else max(self.polled_life, signal)

    def _restarted(self, epoch: str) -> PollOutcome:
        return self._end(PollOutcomeKind.LOST, f"server restarted (epoch {self.epoch} → {epoch})")

    def _reply_epoch(self, epoch: str | None) -> PollOutcome | None:
        """The first epoch a status reply shows is the execution's; another one later is not."""
        if epoch is None or epoch == self.epoch:
            self.epoch_confirmed |= epoch is not None
            return None
        if not self.epoch_confirmed:
            self.epoch, self.epoch_confirmed = epoch, True
            return None
        return self._restarted(epoch)

    def _signals_epoch(self, watch: ExecutionWatch) -> PollOutcome | None:
        """A change of epoch seen on the event stream during the run."""
        signals = watch.signals
        if signals.epoch_changes == self.epoch_changes_seen:
            if self.epoch is None:
                self.epoch = signals.current_epoch  # the first epoch the stream reported
            return None
        self.epoch_changes_seen = signals.epoch_changes
        current = signals.current_epoch
        if current is None or current == self.epoch:
            return None
        if self.epoch is None:
            self.epoch = current
            return None
        return self._restarted(current)

    def _check_limits(self, now: float) -> PollOutcome | None:
        if self.watch is not None:
            restarted = self._signals_epoch(self.watch)
            if restarted is not None:
                return restarted
        life = self._life()
        # Compared exactly as `_idle` computes its wake-up time (life + liveness), so float
        # rounding can never leave the poller "alive" at a moment it is due to be lost.
        if now >= life + self.limits.liveness:
            silent = now - life
            last = f"; last poll error: {self.last_error!r}" if self.last_error else ""
            return self._end(
                PollOutcomeKind.LOST,
                f"server lost: no sign of life for {silent:.1f} s "
                f"(liveness timeout {self.limits.liveness:g} s){last}",
                self.last_error,
            )
        deadline = self.limits.deadline
        if deadline is not None and now >= self.started + deadline:
            last = f" (last status: {self.status})" if self.status is not None else ""
            return self._end(
                PollOutcomeKind.TIMED_OUT, f"timed out after {deadline:g} s{last}", self.last_error
            )
        return None

    # -- one poll -------------------------------------------------------------------------

    async def _poll(self) -> PollOutcome | None:
        pushed = self.watch.take_pushed() if self.watch is not None else None
        if pushed is not None:
            self.last_attempt = self.clock()
            return await self._observe(pushed)
        now = self.clock()
        limit_at = self._life() + self.limits.liveness
        if self.limits.deadline is not None:
            limit_at = min(limit_at, self.started + self.limits.deadline)
        bound = max(limit_at - now, 0.0)
        reply: object = None
        error: Exception | None = None
        try:
            async with asyncio.timeout(bound) as scope:
                reply = await self.policy.poll_status(self.execution_id)
        except TimeoutError as exc:
            error = (
                TimeoutError(f"no status reply within {bound:.3g} s") if scope.expired() else exc
            )
        except Exception as exc:
            error = exc
        self.last_attempt = self.clock()
        if error is not None:
            return await self._failed_poll(error)
        return await self._observe(reply)

    async def _failed_poll(self, error: Exception) -> PollOutcome | None:
        self.last_error = error
        keep: object = await self.hooks.call(
            "on_poll_exception",
            self.execution_id,
            self.policy.on_poll_exception,
            self.execution_id,
            error,
        )
        if keep is FAILED:
            keep = True
        elif not isinstance(keep, bool):
            bad = TypeError(f"on_poll_exception returned {keep!r}, expected True or False")
            self.hooks.errors.append(
                HookError(hook="on_poll_exception", key=self.execution_id, error=bad)
            )
            keep = True
        if not keep:
            return self._end(PollOutcomeKind.FAILED, f"status poll failed: {error!r}", error)
        self.next_delay = self.limits.retry
        return None

    async def _observe(self, reply: object) -> PollOutcome | None:
        status: object = getattr(reply, "status", None)
        if not isinstance(reply, StatusObservation) or not isinstance(status, ExecutionStatus):
            message = f"unexpected status reply: {_short_repr(reply)}"
            await self.hooks.call(
                "on_status_error",
                self.execution_id,
                self.policy.on_status_error,
                self.execution_id,
                message,
            )
            return self._end(PollOutcomeKind.FAILED, message)
        restarted = self._reply_epoch(reply.server_epoch)
        if restarted is not None:
            return restarted
        self.polled_life = self.last_attempt
        self.last_error = None
        self.next_delay = self.limits.interval
        self.status, self.payload = status, reply.payload
        eid = self.execution_id
        if status is ExecutionStatus.RUNNING and not self.running_reported:
            self.running_reported = True
            await self.hooks.call("on_running", eid, self.policy.on_running, eid)
        if status.is_terminal:
            await self.hooks.call(
                "on_terminal", eid, self.policy.on_terminal, eid, status, reply.payload
            )
            return self._end(_KIND_OF_TERMINAL[status], _terminal_reason(status, reply.payload))
        return None

    # -- between polls --------------------------------------------------------------------

    async def _idle(self) -> PollOutcome | None:
        """Pause until a poll is due (None) or a limit ends the run (its outcome)."""
        while True:
            now = self.clock()
            outcome = self._check_limits(now)
            if outcome is not None:
                return outcome
            life = self._life()
            half_life = self.limits.liveness / 2
            dues = [
                (self.last_attempt + self.next_delay, _Due.POLL),
                (max(life + half_life, self.last_attempt + self.limits.retry), _Due.PROBE),
                (life + self.limits.liveness, _Due.CHECK),
            ]
            if self.limits.deadline is not None:
                dues.append((self.started + self.limits.deadline, _Due.CHECK))
            at, due = min(dues, key=lambda d: d[0])
            reason = await self._pause(at - now)
            if reason is WakeReason.EVENT or (due is _Due.POLL and reason is WakeReason.TIMEOUT):
                return None
            if due is _Due.PROBE and reason is WakeReason.TIMEOUT and self._life() == life:
                return None  # no fresher sign of life arrived: go and look

    async def _pause(self, seconds: float) -> WakeReason:
        if self.watch is not None:
            return await self.watch.wait(seconds)
        await asyncio.sleep(max(seconds, 0.0))
        return WakeReason.TIMEOUT


def terminal_outcome(execution_id: str, observation: StatusObservation) -> PollOutcome:
    """The outcome of a run whose first look shows this observation of an execution that has
    ended (status terminal), as a poller without hooks returns it at once."""
    status = observation.status
    if not status.is_terminal:
        raise ValueError(f"observation.status: expected a terminal status, got {status}")
    return PollOutcome(
        kind=_KIND_OF_TERMINAL[status],
        execution_id=execution_id,
        status=status,
        payload=observation.payload,
        reason=_terminal_reason(status, observation.payload),
    )


def _terminal_reason(status: ExecutionStatus, payload: Mapping[str, Any]) -> str:
    error = payload.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    return f"execution {status}" + (f": {message}" if isinstance(message, str) and message else "")


def _short_repr(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
