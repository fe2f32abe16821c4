"""Shared fixtures for the zmqruntime tests (wire protocol fixtures first; others append)."""

from __future__ import annotations

import pytest

from zmqruntime.codec import WireCodec
from zmqruntime.signing import new_key


@pytest.fixture
def key() -> bytes:
    """A fresh signing key."""
    return new_key()


@pytest.fixture
def sender(key: bytes) -> WireCodec:
    """A codec to encode with (its own replay window)."""
    return WireCodec(key)


@pytest.fixture
def receiver(key: bytes) -> WireCodec:
    """A codec to decode with, sharing `key` with `sender`."""
    return WireCodec(key)
