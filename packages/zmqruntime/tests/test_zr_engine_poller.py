"""ExecutionStatusPoller: first look at once, one outcome per run, early wake-ups on
signals, liveness and restarts → lost, deadline → timed_out, bad replies → failed.

`poll_status` is scripted (it returns the statuses a test lists, or raises); the poller,
its asyncio waits, the signals hub and its timeouts are the real ones. A manual clock
drives liveness and deadlines where a test must not depend on elapsed time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.engines import (
    CallbackExecutionStatusPollPolicy,
    ExecutionSignals,
    ExecutionStatusPoller,
    ExecutionStatusPollPolicyABC,
    PollOutcome,
    PollOutcomeKind,
    StatusObservation,
    terminal_outcome,
)
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.testing import ManualClock, asyncio_test

EID = "exec-1"
TERMINAL = [s for s in ExecutionStatus if s.is_terminal]
NON_TERMINAL = [s for s in ExecutionStatus if not s.is_terminal]


def observation(status: ExecutionStatus, epoch: str | None = "epoch-a", **payload: Any) -> Any:
    return StatusObservation(status=status, payload=payload, server_epoch=epoch)


class Script:
    """A scripted `poll_status` plus recorded hook calls."""

    def __init__(self, replies: list[Any], *, after_poll: Callable[[int], None] | None = None):
        self.replies = list(replies)
        self.after_poll = after_poll
        self.polls = 0
        self.polled = asyncio.Event()
        self.calls: list[tuple[str, Any]] = []

    async def poll(self, execution_id: str) -> Any:
        assert execution_id == EID
        self.polls += 1
        self.polled.set()
        if self.after_poll is not None:
            self.after_poll(self.polls)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, asyncio.Future):
            return await reply
        return reply

    def policy(self, **values: Any) -> CallbackExecutionStatusPollPolicy:
        def record(name: str) -> Callable[..., None]:
            return lambda *args: self.calls.append((name, args[1:]))

        hooks: dict[str, Any] = {
            "on_running_fn": record("on_running"),
            "on_terminal_fn": record("on_terminal"),
            "on_status_error_fn": record("on_status_error"),
        }
        hooks.update(values)
        return CallbackExecutionStatusPollPolicy(poll_status_fn=self.poll, **hooks)

    def hooks(self, name: str) -> list[Any]:
        return [args for hook, args in self.calls if hook == name]


@asyncio_test
async def test_first_look_is_immediate() -> None:
    script = Script([observation(ExecutionStatus.COMPLETE, result={"wells": 3})])
    policy = script.policy(poll_interval_seconds_value=60.0)
    outcome = await ExecutionStatusPoller().run(EID, policy)  # a sleep first would take 60 s
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert outcome.ok
    assert outcome.status is ExecutionStatus.COMPLETE
    assert outcome.payload == {"result": {"wells": 3}}
    assert script.polls == 1
    assert script.hooks("on_terminal") == [(ExecutionStatus.COMPLETE, {"result": {"wells": 3}})]


KIND_OF = {
    ExecutionStatus.COMPLETE: PollOutcomeKind.COMPLETE,
    ExecutionStatus.FAILED: PollOutcomeKind.FAILED,
    ExecutionStatus.CANCELLED: PollOutcomeKind.CANCELLED,
}


async def polling_while_running() -> tuple[ExecutionSignals, Script, asyncio.Task[PollOutcome]]:
    """A poller with signals and a 60 s interval whose first look found the job running."""
    signals = ExecutionSignals()
    script = Script([observation(ExecutionStatus.RUNNING)])
    policy = script.policy(poll_interval_seconds_value=60.0)
    poller = asyncio.create_task(ExecutionStatusPoller().run(EID, policy, signals=signals))
    await script.polled.wait()  # the first look is always a poll
    return signals, script, poller


@settings(max_examples=40)
@given(
    before=st.lists(st.sampled_from(NON_TERMINAL), max_size=6),
    terminal=st.sampled_from(TERMINAL),
    with_signals=st.booleans(),
)
def test_every_status_sequence_ends_in_exactly_one_outcome(
    before: list[ExecutionStatus], terminal: ExecutionStatus, with_signals: bool
) -> None:
    async def scenario() -> None:
        signals = ExecutionSignals() if with_signals else None
        replies = [observation(s) for s in before]
        replies.append(observation(terminal, error={"code": "x", "message": "it broke"}))
        # With signals, each poll is followed by an event (as if published meanwhile): the
        # remembered wake-up makes the next poll immediate despite a 60 s interval.
        script = Script(
            replies,
            after_poll=(lambda _: signals.notify_event(EID, "epoch-a")) if signals else None,
        )
        interval = 60.0 if signals else 0.001
        policy = script.policy(poll_interval_seconds_value=interval)
        async with asyncio.timeout(5):
            outcome = await ExecutionStatusPoller().run(EID, policy, signals=signals)
        assert outcome.kind is KIND_OF[terminal]
        assert outcome.status is terminal
        assert outcome.execution_id == EID
        assert script.polls == len(before) + 1
        running_seen = ExecutionStatus.RUNNING in before
        assert script.hooks("on_running") == ([()] if running_seen else [])
        assert len(script.hooks("on_terminal")) == 1
        if terminal is not ExecutionStatus.COMPLETE:
            assert outcome.reason == f"execution {terminal}: it broke"
        if signals is not None:
            assert signals.watched_executions == 0

    asyncio.run(scenario())


@asyncio_test
async def test_an_event_wakes_the_poller_before_its_interval() -> None:
    signals = ExecutionSignals()
    script = Script([observation(ExecutionStatus.RUNNING), observation(ExecutionStatus.COMPLETE)])
    policy = script.policy(poll_interval_seconds_value=60.0)
    poller = asyncio.create_task(ExecutionStatusPoller().run(EID, policy, signals=signals))
    await script.polled.wait()
    assert not poller.done()
    signals.notify_event("another-execution", "epoch-a")  # not ours: no wake-up
    signals.notify_event(EID, "epoch-a")
    outcome = await poller  # the test's 10 s bound is far below the 60 s interval
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert script.polls == 2


@asyncio_test
async def test_an_event_carrying_the_record_answers_the_poll_it_wakes() -> None:
    signals, script, poller = await polling_while_running()
    built: list[str] = []

    def observe() -> StatusObservation:
        built.append("observed")
        return observation(ExecutionStatus.FAILED, error={"code": "x", "message": "pushed"})

    signals.notify_event("another-execution", "epoch-a", observe=lambda: 1 / 0)  # not built
    signals.notify_event(EID, "epoch-a", observe=observe)
    outcome = await poller
    assert outcome.kind is PollOutcomeKind.FAILED
    assert outcome.reason == "execution failed: pushed"
    assert outcome.payload == {"error": {"code": "x", "message": "pushed"}}
    assert script.polls == 1  # the server was not asked again
    assert built == ["observed"]
    assert script.hooks("on_terminal") == [(ExecutionStatus.FAILED, outcome.payload)]


@asyncio_test
async def test_a_pushed_record_from_another_server_is_a_restart() -> None:
    signals, script, poller = await polling_while_running()
    signals.notify_event(
        EID, "epoch-b", observe=lambda: observation(ExecutionStatus.COMPLETE, "epoch-b")
    )
    outcome = await poller
    assert outcome.kind is PollOutcomeKind.LOST
    assert "server restarted" in outcome.reason
    assert script.polls == 1


@asyncio_test
async def test_lost_when_polls_keep_failing_and_nothing_else_shows_life() -> None:
    clock = ManualClock()
    script = Script([ConnectionError("server down")], after_poll=lambda _: clock.advance(1.0))
    errors: list[Exception] = []
    policy = script.policy(
        poll_interval_seconds_value=0.001,
        liveness_timeout_seconds_value=3.0,
        on_poll_exception_fn=lambda eid, exc: errors.append(exc) is None,
    )
    outcome = await ExecutionStatusPoller(clock=clock).run(EID, policy)
    assert outcome.kind is PollOutcomeKind.LOST
    assert outcome.reason.startswith("server lost: no sign of life for 3.0 s")
    assert isinstance(outcome.error, ConnectionError)
    assert script.polls == 3
    assert len(errors) == 3


@asyncio_test
async def test_a_hung_status_request_is_cut_short_by_the_liveness_bound() -> None:
    hung: asyncio.Future[Any] = asyncio.get_running_loop().create_future()  # never answers
    script = Script([hung])
    policy = script.policy(poll_interval_seconds_value=60.0, liveness_timeout_seconds_value=0.2)
    outcome = await ExecutionStatusPoller().run(EID, policy)
    assert outcome.kind is PollOutcomeKind.LOST
    assert isinstance(outcome.error, TimeoutError)
    assert "no status reply within" in outcome.reason
    assert script.polls == 1


@asyncio_test
async def test_heartbeats_keep_it_alive_until_the_deadline() -> None:
    clock = ManualClock()
    signals = ExecutionSignals(clock=clock)

    def heartbeat_then_advance(_: int) -> None:
        signals.notify_heartbeat("epoch-a")
        clock.advance(1.0)

    script = Script([ConnectionError("status refused")], after_poll=heartbeat_then_advance)
    policy = script.policy(
        poll_interval_seconds_value=0.001,
        liveness_timeout_seconds_value=3.0,
        deadline_seconds_value=10.0,
    )
    outcome = await ExecutionStatusPoller(clock=clock).run(EID, policy, signals=signals)
    assert outcome.kind is PollOutcomeKind.TIMED_OUT
    assert outcome.reason == "timed out after 10 s"
    assert script.polls == 10


@asyncio_test
async def test_deadline_while_running() -> None:
    clock = ManualClock()
    script = Script([observation(ExecutionStatus.RUNNING)], after_poll=lambda _: clock.advance(2))
    policy = script.policy(poll_interval_seconds_value=0.001, deadline_seconds_value=5.0)
    outcome = await ExecutionStatusPoller(clock=clock).run(EID, policy)
    assert outcome.kind is PollOutcomeKind.TIMED_OUT
    assert outcome.status is ExecutionStatus.RUNNING
    assert outcome.reason == "timed out after 5 s (last status: running)"
    assert script.hooks("on_running") == [()]


@asyncio_test
async def test_an_epoch_change_on_the_event_stream_is_lost_at_once() -> None:
    signals = ExecutionSignals()
    signals.notify_heartbeat("epoch-a")
    script = Script([observation(ExecutionStatus.RUNNING, epoch="epoch-a")])
    policy = script.policy(poll_interval_seconds_value=60.0, liveness_timeout_seconds_value=60.0)
    poller = asyncio.create_task(ExecutionStatusPoller().run(EID, policy, signals=signals))
    await script.polled.wait()
    signals.notify_heartbeat("epoch-b")
    outcome = await poller
    assert outcome.kind is PollOutcomeKind.LOST
    assert outcome.reason == "server restarted (epoch epoch-a → epoch-b)"
    assert outcome.status is ExecutionStatus.RUNNING
    assert script.polls == 1


@asyncio_test
async def test_an_epoch_change_in_a_status_reply_is_lost() -> None:
    script = Script(
        [
            observation(ExecutionStatus.RUNNING, epoch="a"),
            observation(ExecutionStatus.COMPLETE, epoch="b"),
        ]
    )
    outcome = await ExecutionStatusPoller().run(
        EID, script.policy(poll_interval_seconds_value=0.001)
    )
    assert outcome.kind is PollOutcomeKind.LOST
    assert outcome.reason == "server restarted (epoch a → b)"
    assert outcome.status is ExecutionStatus.RUNNING  # the new server's word is not taken
    assert script.hooks("on_terminal") == []


@asyncio_test
async def test_a_hub_that_has_not_heard_of_a_fresh_server_does_not_make_it_lost() -> None:
    signals = ExecutionSignals()
    signals.notify_heartbeat("old")  # the hub still believes in the old server
    script = Script(
        [
            observation(ExecutionStatus.RUNNING, epoch="new"),  # hub still says "old"
            observation(ExecutionStatus.RUNNING, epoch="new"),  # now the hub hears "new"
            observation(ExecutionStatus.COMPLETE, epoch="new"),
        ],
        after_poll=lambda n: signals.notify_heartbeat("new") if n == 2 else None,
    )
    policy = script.policy(poll_interval_seconds_value=0.001)
    outcome = await ExecutionStatusPoller().run(EID, policy, signals=signals)
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert script.polls == 3


@asyncio_test
async def test_a_restart_before_the_execution_was_ever_seen_is_lost() -> None:
    signals = ExecutionSignals()
    signals.notify_heartbeat("old")
    script = Script(
        [ConnectionError("no reply")],
        after_poll=lambda n: signals.notify_heartbeat("new"),
    )
    policy = script.policy(poll_interval_seconds_value=60.0, liveness_timeout_seconds_value=60.0)
    outcome = await ExecutionStatusPoller().run(EID, policy, signals=signals)
    assert outcome.kind is PollOutcomeKind.LOST
    assert outcome.reason == "server restarted (epoch old → new)"
    assert script.polls == 1


@attrs.define
class LooksLikeAnObservation:
    status: str = "completed"
    payload: Mapping[str, Any] = attrs.Factory(dict)
    server_epoch: str | None = None


def _forged_observation() -> StatusObservation:
    forged = observation(ExecutionStatus.RUNNING)
    object.__setattr__(forged, "status", "completed")  # bypasses the validator
    return forged


@pytest.mark.parametrize(
    "reply",
    [None, {"status": "complete"}, LooksLikeAnObservation(), _forged_observation()],
    ids=["none", "dict", "duck", "forged-status"],
)
@asyncio_test
async def test_an_unexpected_reply_is_a_failed_outcome_not_a_loop(reply: Any) -> None:
    script = Script([reply])
    outcome = await ExecutionStatusPoller().run(
        EID, script.policy(poll_interval_seconds_value=0.001)
    )
    assert outcome.kind is PollOutcomeKind.FAILED
    assert outcome.reason.startswith("unexpected status reply: ")
    assert script.polls == 1
    assert script.hooks("on_status_error") == [(outcome.reason,)]


@asyncio_test
async def test_on_poll_exception_false_stops_with_failed() -> None:
    script = Script([PermissionError("not_found: no such execution")])
    policy = script.policy(on_poll_exception_fn=lambda eid, exc: False)
    outcome = await ExecutionStatusPoller().run(EID, policy)
    assert outcome.kind is PollOutcomeKind.FAILED
    assert script.polls == 1
    assert isinstance(outcome.error, PermissionError)
    assert outcome.reason == "status poll failed: PermissionError('not_found: no such execution')"


@asyncio_test
async def test_async_on_poll_exception_is_awaited() -> None:
    async def decide(eid: str, exc: Exception) -> bool:
        await asyncio.sleep(0)
        return False

    script = Script([ConnectionError("x")])
    outcome = await ExecutionStatusPoller().run(EID, script.policy(on_poll_exception_fn=decide))
    assert outcome.kind is PollOutcomeKind.FAILED
    assert script.polls == 1


@pytest.mark.parametrize("decide", [lambda eid, exc: 1 / 0, lambda eid, exc: "yes"])
@asyncio_test
async def test_a_broken_on_poll_exception_keeps_trying_and_is_reported(decide: Any) -> None:
    script = Script([ConnectionError("blip"), observation(ExecutionStatus.COMPLETE)])
    policy = script.policy(poll_interval_seconds_value=0.001, on_poll_exception_fn=decide)
    outcome = await ExecutionStatusPoller().run(EID, policy)
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert script.polls == 2
    assert [e.hook for e in outcome.hook_errors] == ["on_poll_exception"]


@asyncio_test
async def test_hook_exceptions_do_not_change_the_outcome() -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("hook bug")

    async def async_boom(*args: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async hook bug")

    script = Script([observation(ExecutionStatus.RUNNING), observation(ExecutionStatus.COMPLETE)])
    policy = script.policy(
        poll_interval_seconds_value=0.001, on_running_fn=boom, on_terminal_fn=async_boom
    )
    outcome = await ExecutionStatusPoller().run(EID, policy)
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert [(e.hook, e.key, str(e.error)) for e in outcome.hook_errors] == [
        ("on_running", EID, "hook bug"),
        ("on_terminal", EID, "async hook bug"),
    ]


@asyncio_test
async def test_probes_keep_a_long_interval_poller_alive_without_signals() -> None:
    # Interval 60 s, liveness 0.4 s: the poller must look again before life evidence expires.
    script = Script(
        [observation(ExecutionStatus.RUNNING)] * 3 + [observation(ExecutionStatus.COMPLETE)]
    )
    policy = script.policy(poll_interval_seconds_value=60.0, liveness_timeout_seconds_value=0.4)
    outcome = await ExecutionStatusPoller().run(EID, policy)
    assert outcome.kind is PollOutcomeKind.COMPLETE
    assert script.polls == 4


@asyncio_test
async def test_cancelling_the_poller_releases_its_watch() -> None:
    signals, _, poller = await polling_while_running()
    assert signals.watched_executions == 1
    poller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poller
    assert signals.watched_executions == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


@asyncio_test
async def test_the_poller_and_its_signals_must_share_a_clock() -> None:
    script = Script([observation(ExecutionStatus.COMPLETE)])
    with pytest.raises(ValueError, match="share one clock"):
        await ExecutionStatusPoller(clock=ManualClock()).run(
            EID, script.policy(), ExecutionSignals()
        )


class BadIntervalPolicy(ExecutionStatusPollPolicyABC):
    async def poll_status(self, execution_id: str) -> StatusObservation:
        raise AssertionError("never polled")

    @property
    def poll_interval_seconds(self) -> float:
        return 0.0


@asyncio_test
async def test_bad_limits_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"policy\.poll_interval_seconds: .* > 0, got 0\.0"):
        await ExecutionStatusPoller().run(EID, BadIntervalPolicy())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("poll_interval_seconds_value", -1.0),
        ("liveness_timeout_seconds_value", float("inf")),
        ("deadline_seconds_value", True),
        ("liveness_timeout_seconds_value", None),
    ],
)
def test_callback_policy_validates_limits(field: str, value: Any) -> None:
    async def poll(eid: str) -> StatusObservation:
        raise AssertionError

    with pytest.raises(ValueError, match=f"{field}: expected a finite number of seconds > 0"):
        CallbackExecutionStatusPollPolicy(poll_status_fn=poll, **{field: value})


def test_status_observation_is_validated() -> None:
    with pytest.raises(TypeError, match="status"):
        StatusObservation(status="complete", payload={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="payload: expected a mapping, got"):
        StatusObservation(status=ExecutionStatus.COMPLETE, payload=[1])  # type: ignore[arg-type]


@asyncio_test
async def test_the_poller_never_blocks_the_event_loop() -> None:
    """Loop-lag probe: while a poller runs (50 ms interval, each poll awaiting a 2 ms
    request), a concurrent task's 2 ms sleeps overshoot by under 20 ms in 90 % of samples.
    A poller that slept or polled blocking would hold the loop for most of each interval."""
    polls = 0
    overshoots: list[float] = []

    async def slow_poll(execution_id: str) -> StatusObservation:
        nonlocal polls
        await asyncio.sleep(0.002)  # a status request in flight
        polls += 1
        return observation(ExecutionStatus.COMPLETE if polls == 12 else ExecutionStatus.RUNNING)

    async def probe(poller: asyncio.Task[PollOutcome]) -> None:
        while not poller.done():
            start = time.perf_counter()
            await asyncio.sleep(0.002)
            overshoots.append(time.perf_counter() - start - 0.002)

    policy = CallbackExecutionStatusPollPolicy(
        poll_status_fn=slow_poll, poll_interval_seconds_value=0.05
    )
    poller = asyncio.create_task(ExecutionStatusPoller().run(EID, policy))
    await probe(poller)
    assert (await poller).kind is PollOutcomeKind.COMPLETE
    assert len(overshoots) >= 50
    p90 = sorted(overshoots)[int(0.9 * (len(overshoots) - 1))]
    assert p90 < 0.020, f"p90 loop lag {p90 * 1000:.1f} ms"


def test_run_blocking_without_and_inside_a_loop() -> None:
    threads_before = threading.enumerate()

    async def poll(eid: str) -> StatusObservation:
        return observation(ExecutionStatus.COMPLETE)

    policy = CallbackExecutionStatusPollPolicy(poll_status_fn=poll)
    assert ExecutionStatusPoller().run_blocking(EID, policy).kind is PollOutcomeKind.COMPLETE

    async def notebook_cell() -> PollOutcome:
        return ExecutionStatusPoller().run_blocking(EID, policy)

    assert asyncio.run(notebook_cell()).kind is PollOutcomeKind.COMPLETE
    assert threading.enumerate() == threads_before


# -- terminal_outcome: what a first look at an ended execution returns ----------------------


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize(
    "payload",
    [{}, {"error": {"code": "handler_error", "message": "boom"}}, {"result": {"n": 1}}],
)
@asyncio_test
async def test_terminal_outcome_is_what_the_poller_returns_at_its_first_look(
    status: ExecutionStatus, payload: dict[str, Any]
) -> None:
    """`ExecutionClient.wait` returns `terminal_outcome` instead of running a poller when the
    record it already holds has ended: both must agree exactly."""
    seen = observation(status, **payload)
    policy = CallbackExecutionStatusPollPolicy(poll_status_fn=Script([seen]).poll)
    polled = await ExecutionStatusPoller().run(EID, policy, signals=ExecutionSignals())
    assert terminal_outcome(EID, seen) == polled


@pytest.mark.parametrize("status", NON_TERMINAL)
def test_terminal_outcome_refuses_an_execution_that_has_not_ended(status: ExecutionStatus) -> None:
    with pytest.raises(ValueError, match="terminal status"):
        terminal_outcome(EID, observation(status))
