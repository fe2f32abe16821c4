"""Hypothesis state machine: IntervalSnapshotPoller against a plain model.

A fake clock, a scripted fetch whose completion the machine triggers (ManualFetchRunner) and a
dispatcher whose queue the machine drains (ManualDispatcher) script the interleavings; the
poller itself is the real one. Checked: never two fetches in flight; nothing from before a
reset is delivered; a change callback exactly when the value differs from the last reported;
copies handed out; failing fetches and failing hooks never stop polling.
"""

from __future__ import annotations

import math
from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reactive_services import CallbackIntervalSnapshotPollerPolicy, IntervalSnapshotPoller
from reactive_services.testing import FakeClock, ManualDispatcher, ManualFetchRunner

INTERVAL = 1.0
CLOSE_AFTER_STEPS = 30


class Snapshot:
    """A fetched value tagged with the generation its fetch started in.

    Equality looks at `value` only, so an equal value fetched after a reset must still be
    reported. `scribbles` is mutable, so handing out the internal object would show.
    """

    __slots__ = ("gen", "scribbles", "value")

    def __init__(self, value: int, gen: int, scribbles: list[str] | None = None) -> None:
        self.value = value
        self.gen = gen
        self.scribbles = scribbles if scribbles is not None else []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]

    def clone(self) -> Snapshot:
        return Snapshot(self.value, self.gen, list(self.scribbles))

    def __repr__(self) -> str:
        return f"Snapshot({self.value}, gen={self.gen}, scribbles={self.scribbles})"


class FetchFailed(Exception):
    pass


class PollerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=100.0)
        self.runner = ManualFetchRunner()
        self.dispatcher = ManualDispatcher()
        self.script: tuple[int, bool] = (0, False)  # next fetch: (value, fails?)
        self.hooks_raise = False
        self.changes: list[tuple[Snapshot, int]] = []  # (delivered copy, model generation then)
        self.errors: list[tuple[str, int]] = []
        policy: CallbackIntervalSnapshotPollerPolicy[Snapshot] = (
            CallbackIntervalSnapshotPollerPolicy(
                fetch_snapshot_fn=self._fetch,
                poll_interval_seconds_value=INTERVAL,
                clone_snapshot_fn=Snapshot.clone,
                on_snapshot_changed_fn=self._on_changed,
                on_poll_error_fn=self._on_error,
            )
        )
        self.poller = IntervalSnapshotPoller(
            policy, dispatcher=self.dispatcher, clock=self.clock, runner=self.runner
        )
        # the model
        self.steps = 0
        self.gen = 0
        self.closed = False
        self.inflight_gen: int | None = None
        self.next_due = -math.inf
        self.snapshot: Snapshot | None = None
        self.last_reported: Snapshot | None = None
        self.expected_queue: deque[tuple[str, object, int]] = deque()  # (kind, payload, gen)
        self.expected_changes: list[tuple[int, int]] = []
        self.expected_errors: list[str] = []

    # -- the scripted fetch and the hooks ---------------------------------------------------

    def _fetch(self) -> Snapshot:
        value, fails = self.script
        assert self.inflight_gen is not None
        if fails:
            raise FetchFailed(f"fetch {value} failed")
        return Snapshot(value, self.inflight_gen)

    def _on_changed(self, snapshot: Snapshot) -> None:
        self.changes.append((snapshot, self.gen))
        snapshot.scribbles.append("hook")  # a hook mutating its copy must not reach the poller
        if self.hooks_raise:
            raise RuntimeError("change hook failed")

    def _on_error(self, error: Exception) -> None:
        self.errors.append((str(error), self.gen))
        if self.hooks_raise:
            raise RuntimeError("error hook failed")

    # -- rules ------------------------------------------------------------------------------

    @rule(advance=st.sampled_from(["none", "half", "to_due", "past_due"]))
    def tick(self, advance: str) -> None:
        if advance == "half":
            self.clock.advance(INTERVAL / 2)
        elif advance == "to_due" and math.isfinite(self.next_due):
            self.clock.advance(max(0.0, self.next_due - self.clock()))
        elif advance == "past_due":
            self.clock.advance(2.5 * INTERVAL)
        expected = not self.closed and self.inflight_gen is None and self.clock() >= self.next_due
        assert self.poller.tick() is expected
        if expected:
            self.inflight_gen = self.gen

    @precondition(lambda self: self.runner.pending > 0)
    @rule(value=st.integers(0, 1), fails=st.sampled_from([False, False, False, True]))
    def complete_fetch(self, value: int, fails: bool) -> None:
        self.script = (value, fails)
        fetch_gen = self.inflight_gen
        assert fetch_gen is not None
        self.runner.run_next()
        if fetch_gen == self.gen:
            if fails:
                self.expected_queue.append(("error", f"fetch {value} failed", fetch_gen))
            else:
                payload = (value, fetch_gen)
                self.snapshot = Snapshot(value, fetch_gen)
                if self.last_reported is None or value != self.last_reported.value:
                    self.last_reported = self.snapshot
                    self.expected_queue.append(("change", payload, fetch_gen))
            self.next_due = self.clock() + INTERVAL
        self.inflight_gen = None

    @precondition(lambda self: len(self.dispatcher) > 0)
    @rule(hooks_raise=st.booleans())
    def run_dispatched(self, hooks_raise: bool) -> None:
        self.hooks_raise = hooks_raise
        kind, payload, gen = self.expected_queue.popleft()
        self.dispatcher.run_next()
        if gen == self.gen:  # only current-generation callbacks may run
            if kind == "change":
                self.expected_changes.append(payload)  # type: ignore[arg-type]
            else:
                self.expected_errors.append(payload)  # type: ignore[arg-type]

    @precondition(lambda self: bool(self.runner.pending or len(self.dispatcher) or self.snapshot))
    @rule()
    def reset(self) -> None:
        self.poller.reset()
        self._invalidate()

    @precondition(lambda self: self.steps >= CLOSE_AFTER_STEPS and not self.closed)
    @rule()
    def close(self) -> None:
        """Closing is terminal, so only late in a run."""
        self.poller.close()
        self.closed = True
        self._invalidate()

    def _invalidate(self) -> None:
        self.gen += 1
        self.snapshot = None
        self.last_reported = None
        self.next_due = -math.inf

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def count_steps(self) -> None:
        self.steps += 1

    @invariant()
    def at_most_one_fetch_in_flight(self) -> None:
        assert self.runner.pending <= 1
        assert self.poller.is_poll_inflight() is (self.inflight_gen is not None)
        assert self.poller.is_poll_inflight() is (self.runner.pending == 1)

    @invariant()
    def delivered_exactly_what_the_model_expects(self) -> None:
        assert len(self.dispatcher) == len(self.expected_queue)
        assert [(s.value, s.gen) for s, _ in self.changes] == self.expected_changes
        assert all(s.scribbles == ["hook"] for s, _ in self.changes)
        assert [message for message, _ in self.errors] == self.expected_errors

    @invariant()
    def nothing_from_before_a_reset(self) -> None:
        for snapshot, gen_at_delivery in self.changes:
            assert snapshot.gen == gen_at_delivery

    @invariant()
    def copies_are_independent(self) -> None:
        copy = self.poller.get_snapshot_copy()
        if self.snapshot is None:
            assert copy is None
        else:
            assert copy is not None
            assert (copy.value, copy.gen, copy.scribbles) == (self.snapshot.value, self.gen, [])
            copy.scribbles.append("reader")

    @invariant()
    def generation_matches(self) -> None:
        assert self.poller.generation == self.gen
        assert self.poller.closed is self.closed

    def teardown(self) -> None:
        self.poller.close()


PollerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
TestPollerMachine = PollerMachine.TestCase
