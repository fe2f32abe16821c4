"""`VersionedStore`: keys to immutable values, with versions readers compare instead of callbacks.

Model (after the esslivedata study, single writer + versioned pull):
- every effective change (a create, an update to an unequal value, a remove) raises the
  store-wide `version` by exactly one; a no-op (equal value, refused write) raises nothing;
- each key carries its own version, raised by exactly one on every effective update of that
  key. A key's first version is the store version its creation produced, so a key that is
  removed and created again never repeats a version it had before (no ABA for readers
  caching `(key, version)`);
- writes are serialized by one lock; readers never lock: the whole state is one immutable
  `StoreSnapshot` published by reference swap;
- `remove` is final: a later `set(..., create=False)` or `apply_if` on that key is refused
  (returns False); only an explicit `set(..., create=True)` creates the key again;
- `apply_if(key, expected_version, transition)` compares by *version* and applies under the
  lock, so a transition computed from a stale read never lands.

Values must be immutable (frozen attrs, tuples, strings): the store hands them out as they are.
Writes copy the key map, O(number of keys); fine for the hundreds of entries a GUI shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

__all__ = ["StoreSnapshot", "VersionedStore"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class StoreSnapshot(Mapping[K, V], Generic[K, V]):
    """An immutable view of a `VersionedStore` at one `version`: key → value, plus `versions`."""

    __slots__ = ("_values", "_version", "_versions")

    def __init__(self, version: int, values: Mapping[K, V], versions: Mapping[K, int]) -> None:
        self._version = version
        self._values = values
        self._versions = versions

    @property
    def version(self) -> int:
        """The store-wide version this snapshot was taken at."""
        return self._version

    @property
    def versions(self) -> Mapping[K, int]:
        """Key → that key's version."""
        return self._versions

    def __getitem__(self, key: K) -> V:
        return self._values[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"StoreSnapshot(version={self._version}, values={dict(self._values)!r})"


def _equal(old: object, new: object) -> bool:
    return old is new or bool(old == new)


class VersionedStore(Generic[K, V]):
    """Keys to immutable values, versioned per key and store-wide; see the module docstring."""

    __slots__ = ("_lock", "_snapshot", "_version")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        empty: StoreSnapshot[K, V] = StoreSnapshot(0, MappingProxyType({}), MappingProxyType({}))
        self._snapshot = empty
        self._version = 0

    # -- readers (lock-free) ------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Store-wide version: compare with the one you last rendered to see if anything changed."""
        return self._version

    def snapshot(self) -> StoreSnapshot[K, V]:
        """The current immutable snapshot (values and versions from one consistent state)."""
        return self._snapshot

    def get(self, key: K) -> V | None:
        """The value under `key`, or None if absent."""
        return self._snapshot.get(key)

    def version_of(self, key: K) -> int | None:
        """The version of `key`, or None if absent (never created, or removed)."""
        return self._snapshot.versions.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._snapshot

    def __len__(self) -> int:
        return len(self._snapshot)

    def __repr__(self) -> str:
        return f"VersionedStore(version={self._version}, keys={len(self._snapshot)})"

    # -- the writer -----------------------------------------------------------------------------

    def set(self, key: K, value: V, *, create: bool) -> bool:
        """Store `value` under `key`; True if that was an effective change.

        `create` is required so each call site states whether it may bring a key into being:
        with `create=False` an absent key (never created, or removed) is refused (False); with
        `create=True` it is created. Setting a value equal to the current one is a no-op.
        """
        with self._lock:
            current = self._snapshot
            if key in current:
                if _equal(current[key], value):
                    return False
                self._publish(current, key, value, current.versions[key] + 1)
                return True
            if not create:
                return False
            self._publish(current, key, value, self._version + 1)
            return True

    def apply_if(self, key: K, expected_version: int, transition: Callable[[V], V]) -> bool:
        """Compare-and-apply: if `key`'s version is still `expected_version`, store
        `transition(value)` (all under the lock); True if that was an effective change.

        Refused (False, nothing runs) when the key is absent or its version moved on. A
        transition returning an equal value is a no-op (False). `transition` must be quick and
        pure: it runs under the store's lock. If it raises, nothing changes and the error
        propagates.
        """
        with self._lock:
            current = self._snapshot
            if current.versions.get(key) != expected_version:
                return False
            old = current[key]
            new = transition(old)
            if _equal(old, new):
                return False
            self._publish(current, key, new, expected_version + 1)
            return True

    def remove(self, key: K) -> bool:
        """Delete `key` for good (only `set(..., create=True)` brings it back); True if present."""
        with self._lock:
            current = self._snapshot
            if key not in current:
                return False
            values = dict(current._values)
            versions = dict(current._versions)
            del values[key], versions[key]
            self._swap(values, versions)
            return True

    def _publish(self, current: StoreSnapshot[K, V], key: K, value: V, key_version: int) -> None:
        values = dict(current._values)
        versions = dict(current._versions)
        values[key] = value
        versions[key] = key_version
        self._swap(values, versions)

    def _swap(self, values: dict[K, V], versions: dict[K, int]) -> None:
        # Snapshot first, then the version, so `version` is never ahead of `snapshot()`.
        version = self._version + 1
        self._snapshot = StoreSnapshot(
            version, MappingProxyType(values), MappingProxyType(versions)
        )
        self._version = version
