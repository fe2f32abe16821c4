"""Hypothesis state machine: VersionedStore against a plain dict model.

Checked: versions (store-wide and per key) rise by exactly one per effective change and never
on a no-op; apply_if never applies on a stale or foreign version; removed keys never come back
except through an explicit set(create=True); a (key, version) pair never names two values
(no ABA); snapshots handed out earlier never change.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reactive_services import StoreSnapshot, VersionedStore

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.integers(0, 2)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store: VersionedStore[str, int] = VersionedStore()
        self.values: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.version = 0
        self.removed: set[str] = set()  # removed and not explicitly re-created
        self.seen_versions: list[int] = [0]
        self.named: dict[tuple[str, int], int] = {}  # (key, version) -> value, ever
        self.kept: list[tuple[StoreSnapshot[str, int], dict[str, int], dict[str, int], int]] = []

    def _effective(self, key: str, value: int, key_version: int) -> None:
        self.version += 1
        self.values[key] = value
        self.versions[key] = key_version
        self.seen_versions.append(key_version)

    @rule(key=KEYS, value=VALUES, create=st.booleans())
    def set(self, key: str, value: int, create: bool) -> None:
        changed = self.store.set(key, value, create=create)
        if key in self.values:
            expected = self.values[key] != value
            if expected:
                self._effective(key, value, self.versions[key] + 1)
        else:
            expected = create
            if create:
                self._effective(key, value, self.version + 1)
                self.removed.discard(key)
        assert changed is expected

    @rule(key=KEYS, delta=VALUES, pick=st.sampled_from(["current", "stale", "any"]), data=st.data())
    def apply_if(self, key: str, delta: int, pick: str, data: st.DataObject) -> None:
        if pick == "current" and key in self.versions:
            expected_version = self.versions[key]
        elif pick == "stale" or pick == "current":
            expected_version = data.draw(st.sampled_from(self.seen_versions), label="stale")
        else:
            expected_version = data.draw(st.integers(-1, self.version + 2), label="any")
        calls: list[int] = []

        def transition(old: int) -> int:
            calls.append(old)
            return (old + delta) % 3

        applied = self.store.apply_if(key, expected_version, transition)
        current = key in self.versions and self.versions[key] == expected_version
        assert calls == ([self.values[key]] if current else [])
        expected = current and delta != 0
        if expected:
            self._effective(key, (self.values[key] + delta) % 3, expected_version + 1)
        assert applied is expected

    @rule(key=KEYS)
    def remove(self, key: str) -> None:
        removed = self.store.remove(key)
        assert removed is (key in self.values)
        if removed:
            self.version += 1
            del self.values[key], self.versions[key]
            self.removed.add(key)

    @precondition(lambda self: len(self.kept) < 5)
    @rule()
    def keep_snapshot(self) -> None:
        self.kept.append(
            (self.store.snapshot(), dict(self.values), dict(self.versions), self.version)
        )

    @invariant()
    def matches_model(self) -> None:
        snapshot = self.store.snapshot()
        assert self.store.version == snapshot.version == self.version
        assert dict(snapshot) == self.values
        assert dict(snapshot.versions) == self.versions
        for key in ("a", "b", "c"):
            assert self.store.get(key) == self.values.get(key)
            assert self.store.version_of(key) == self.versions.get(key)
            assert (key in self.store) is (key in self.values)
        assert len(self.store) == len(self.values)

    @invariant()
    def removed_keys_stay_removed(self) -> None:
        for key in self.removed:
            assert key not in self.store

    @invariant()
    def no_version_names_two_values(self) -> None:
        snapshot = self.store.snapshot()
        for key, value in snapshot.items():
            assert snapshot.versions[key] <= snapshot.version
            assert self.named.setdefault((key, snapshot.versions[key]), value) == value

    @invariant()
    def old_snapshots_never_change(self) -> None:
        for snapshot, values, versions, version in self.kept:
            assert snapshot.version == version
            assert dict(snapshot) == values
            assert dict(snapshot.versions) == versions


StoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
TestStoreMachine = StoreMachine.TestCase


def test_snapshot_mappings_are_read_only() -> None:
    store: VersionedStore[str, int] = VersionedStore()
    assert store.set("a", 1, create=True)
    snapshot = store.snapshot()
    with pytest.raises(TypeError):
        snapshot.versions["a"] = 5  # type: ignore[index]
    assert not hasattr(snapshot, "__setitem__")
    assert snapshot == {"a": 1}
    assert repr(snapshot) == "StoreSnapshot(version=1, values={'a': 1})"


def test_a_raising_transition_changes_nothing() -> None:
    store: VersionedStore[str, int] = VersionedStore()
    store.set("a", 1, create=True)
    version = store.version_of("a")
    assert version is not None

    def explode(_old: int) -> int:
        raise ValueError("bad transition")

    with pytest.raises(ValueError, match="bad transition"):
        store.apply_if("a", version, explode)
    assert store.version == 1
    assert store.get("a") == 1
