"""docs/protocol.md stays true: every marked JSON example parses with the class it documents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from zmqruntime.codec import PROTOCOL_VERSION, WireCodec
from zmqruntime.connection import ConnectionInfo
from zmqruntime.messages import CONTROL_MESSAGE_TYPES, CancelNotice, ExecutionRecord
from zmqruntime.signing import MessageSigner

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- wire: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)
CLASSES: dict[str, Any] = {
    **CONTROL_MESSAGE_TYPES,
    "cancel_notice": CancelNotice,
    "execution_record": ExecutionRecord,
    "connection": ConnectionInfo,
}


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(DOC.read_text(encoding="utf-8"))


def test_the_document_has_an_example_of_every_message_type() -> None:
    documented = {name for name, _ in examples()}
    assert set(CONTROL_MESSAGE_TYPES) - {"ping"} <= documented  # ping's body is `{}`
    assert {"envelope", "cancel_notice", "execution_record", "connection"} <= documented


@pytest.mark.parametrize(("name", "text"), examples(), ids=[n for n, _ in examples()])
def test_every_example_is_valid(name: str, text: str) -> None:
    data = json.loads(text)
    if name == "envelope":
        frames = [MessageSigner(b"k" * 32).sign([text.encode()]), text.encode()]
        assert WireCodec(b"k" * 32).decode(frames).protocol == PROTOCOL_VERSION
        return
    parsed = CLASSES[name].from_wire(data)
    assert parsed.to_wire().keys() <= data.keys()


def test_the_worked_signing_examples_are_right() -> None:
    """Each documented envelope, with its documented topic/array frame, signed with the
    documented key, gives a signature printed in the document, and decodes."""
    text = DOC.read_text(encoding="utf-8")
    key = bytes(range(32))
    assert key.hex() in text
    envelopes = re.findall(r"```\n(\{\"protocol\".*?)\n```", text)
    assert len(envelopes) == 3
    for envelope in envelopes:
        raw = envelope.encode()
        topic = [b"__heartbeat__"] if '"type":"heartbeat"' in envelope else []
        arrays = (
            [bytes.fromhex("010002000300040005000600")] if '"type":"submit"' in envelope else []
        )
        signature = MessageSigner(key).sign([*topic, raw, *arrays])
        assert signature.decode() in text
        assert f"{len(raw)} bytes" in text
        frames = [*topic, signature, raw, *arrays]
        WireCodec(key).decode(frames, topic=bool(topic))
