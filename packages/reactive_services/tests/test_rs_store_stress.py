"""Real-thread stress on VersionedStore: compare-and-apply writers against lock-free readers.

Writers increment counters with apply_if retry loops (no lost or doubled update); a remover
deletes one key mid-run (no late write brings it back). Readers check that every snapshot is
internally consistent and that versions never go back.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from reactive_services import VersionedStore

WAIT_S = 10.0
WRITERS = 3
READERS = 2
INCREMENTS = 3000  # per writer per key
LIVE = ("a", "b", "c")
DOOMED = "doomed"


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


def _increment(count: int) -> int:
    return count + 1


@pytest.mark.usefixtures("fine_grained_switching")
def test_compare_and_apply_writers_with_lock_free_readers() -> None:
    store: VersionedStore[str, int] = VersionedStore()
    for key in (*LIVE, DOOMED):
        assert store.set(key, 0, create=True)
    base = {key: store.version_of(key) for key in (*LIVE, DOOMED)}
    successes = {key: [0] * WRITERS for key in LIVE}
    late_writes_applied: list[str] = []
    violations: list[str] = []
    writers_done = threading.Event()
    removed = threading.Event()
    halfway = threading.Event()
    removal_version = [sys.maxsize]
    go = threading.Barrier(WRITERS + READERS + 2)  # + remover + this thread

    def writer(index: int) -> None:
        go.wait(WAIT_S)
        last_doomed_version = 0
        for i in range(INCREMENTS):
            if index == 0 and i == INCREMENTS // 2:
                halfway.set()
            for key in LIVE:
                while True:  # classic CAS loop: re-read, retry on a stale version
                    version = store.version_of(key)
                    assert version is not None
                    if store.apply_if(key, version, _increment):
                        successes[key][index] += 1
                        break
            version = store.version_of(DOOMED)
            if version is None:  # removed: late writes from a stale read must be refused
                late = store.apply_if(DOOMED, last_doomed_version, _increment)
                if late or store.set(DOOMED, 1, create=False):
                    late_writes_applied.append(DOOMED)
            else:
                store.apply_if(DOOMED, version, _increment)
                last_doomed_version = version

    def remover() -> None:
        go.wait(WAIT_S)
        assert halfway.wait(WAIT_S)
        assert store.remove(DOOMED)
        removal_version[0] = store.version  # at or after the removal
        removed.set()

    def reader() -> None:
        go.wait(WAIT_S)
        last_version = 0
        last_key_versions: dict[str, int] = {}
        while not writers_done.is_set():
            snapshot = store.snapshot()
            if snapshot.version < last_version:
                violations.append(f"store version went back {last_version} -> {snapshot.version}")
            last_version = snapshot.version
            for key, count in snapshot.items():
                key_version = snapshot.versions[key]
                if key_version - base[key] != count:  # type: ignore[operator]
                    violations.append(f"{key}: version {key_version} with count {count}")
                if key_version < last_key_versions.get(key, 0):
                    violations.append(f"{key}: version went back")
                last_key_versions[key] = key_version
            if removed.is_set() and DOOMED in snapshot and snapshot.version > removal_version[0]:
                violations.append("removed key came back")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    threads += [threading.Thread(target=reader) for _ in range(READERS)]
    watcher = threading.Thread(target=remover)
    for thread in (*threads, watcher):
        thread.start()
    try:
        go.wait(WAIT_S)
        watcher.join(WAIT_S)
        for thread in threads[:WRITERS]:
            thread.join(WAIT_S)
    finally:
        writers_done.set()  # readers stop even if something above failed
        for thread in threads[WRITERS:]:
            thread.join(WAIT_S)
    assert not any(t.is_alive() for t in (*threads, watcher))

    assert not violations, violations[:5]
    assert not late_writes_applied
    assert DOOMED not in store
    final = store.snapshot()
    for key in LIVE:
        assert final[key] == sum(successes[key]) == WRITERS * INCREMENTS
        assert final.versions[key] == base[key] + WRITERS * INCREMENTS  # type: ignore[operator]
