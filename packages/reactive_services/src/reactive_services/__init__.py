"""reactive_services: GUI and notebook primitives.

Background snapshot polling (`IntervalSnapshotPoller`), versioned single-writer stores
(`VersionedStore`), request coalescing (`CoalescedRequests`) and callback dispatch onto the
right thread (`Dispatcher`). Test helpers live in `reactive_services.testing`.
"""

from reactive_services.coalesced import BlockingCoalescedRequests, CoalescedRequests
from reactive_services.dispatch import (
    AsyncioDispatcher,
    Dispatcher,
    DispatcherClosedError,
    ImmediateDispatcher,
)
from reactive_services.fetch_runners import FetchRunner, InlineFetchRunner, ThreadPerFetchRunner
from reactive_services.poller_drivers import AsyncioPollerDriver, ThreadPollerDriver
from reactive_services.qt_dispatch import QtDispatcher
from reactive_services.snapshot_policy import (
    CallbackIntervalSnapshotPollerPolicy,
    IntervalSnapshotPollerPolicyABC,
)
from reactive_services.snapshot_poller import IntervalSnapshotPoller
from reactive_services.versioned_store import StoreSnapshot, VersionedStore

__all__ = [
    "AsyncioDispatcher",
    "AsyncioPollerDriver",
    "BlockingCoalescedRequests",
    "CallbackIntervalSnapshotPollerPolicy",
    "CoalescedRequests",
    "Dispatcher",
    "DispatcherClosedError",
    "FetchRunner",
    "ImmediateDispatcher",
    "InlineFetchRunner",
    "IntervalSnapshotPoller",
    "IntervalSnapshotPollerPolicyABC",
    "QtDispatcher",
    "StoreSnapshot",
    "ThreadPerFetchRunner",
    "ThreadPollerDriver",
    "VersionedStore",
]
