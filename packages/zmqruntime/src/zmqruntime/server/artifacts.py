"""Compile artifacts: results of `compile_only` executions, kept for a time-to-live.

The artifact id is the id of the execution that produced it. An artifact is looked up when an
execution naming it is submitted (refused with `artifact_missing` if absent) and again when that
execution starts (it ends `failed` with `artifact_missing` if the artifact expired meanwhile).
The clock is injectable so expiry can be tested without waiting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["ArtifactStore"]


class ArtifactStore:
    """Artifacts by id, each expiring `ttl` seconds after it was stored.

    Entries are kept in insertion order, which is also expiry order (one ttl for all), so
    sweeping stops at the first live entry. `max_artifacts` bounds memory even when the ttl is
    long: beyond it the oldest artifact is dropped first.
    """

    def __init__(
        self,
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        max_artifacts: int = 10_000,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"artifact ttl must be positive, got {ttl!r}")
        if max_artifacts < 1:
            raise ValueError(f"max_artifacts must be at least 1, got {max_artifacts!r}")
        self.ttl = ttl
        self._clock = clock
        self._max = max_artifacts
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def put(self, artifact_id: str, value: Any) -> None:
        """Store (or refresh) an artifact; it expires `ttl` seconds from now."""
        self._entries.pop(artifact_id, None)
        self._entries[artifact_id] = (self._clock() + self.ttl, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def get(self, artifact_id: str) -> tuple[bool, Any]:
        """`(True, value)` for a live artifact, `(False, None)` when unknown or expired."""
        self.sweep()
        entry = self._entries.get(artifact_id)
        if entry is None:
            return False, None
        return True, entry[1]

    def __contains__(self, artifact_id: object) -> bool:
        return isinstance(artifact_id, str) and self.get(artifact_id)[0]

    def __len__(self) -> int:
        self.sweep()
        return len(self._entries)

    def sweep(self) -> list[str]:
        """Drop every expired artifact; returns their ids."""
        now = self._clock()
        dropped: list[str] = []
        while self._entries:
            artifact_id, (expires_at, _) = next(iter(self._entries.items()))
            if expires_at > now:
                break
            self._entries.popitem(last=False)
            dropped.append(artifact_id)
        return dropped
