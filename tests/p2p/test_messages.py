"""The p2p wire: every message kind round-trips through a Frame, and nothing else decodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.codec import decode, encode
from chain.errors import DecodeError
from p2p.messages import MESSAGES, Frame, PexRequest, StatusMsg
from tests.strategies import records

KINDS = [cls for _tag, cls in MESSAGES.variants]


def test_message_tags_are_unique() -> None:
    tags = [tag for tag, _cls in MESSAGES.variants]
    assert len(tags) == len(set(tags))
    assert len(KINDS) == len(set(KINDS))


@pytest.mark.parametrize("kind", KINDS, ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_message_round_trips_in_a_frame(kind: type, data: st.DataObject) -> None:
    message = data.draw(records(kind))
    frame = Frame(message=message)
    raw = encode(frame)
    assert decode(Frame, raw) == frame


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    try:
        frame = decode(Frame, raw)
    except DecodeError:
        return
    assert encode(frame) == raw  # whatever decodes is canonical


@pytest.mark.parametrize("raw", [
    b"",
    encode(Frame(message=PexRequest())) + b"\x00",               # trailing byte
    encode(Frame(message=PexRequest()))[:-1],                     # truncated
    b"\x91\x92\x63\x90",                                          # unknown tag 99
    b"\x91\x92\x0e\x94\x01\x02\x03",                              # StatusMsg missing a field
])
def test_malformed_frames_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(Frame, raw)


def test_status_fields_are_bounded() -> None:
    raw = encode(Frame(message=StatusMsg(height=1, round=2, step=3, base=1)))
    step_too_big = raw.replace(b"\x03", b"\xcd\x01\x00", 1)
    with pytest.raises(DecodeError):
        decode(Frame, step_too_big)


def test_tx_batches_keep_order_and_respect_both_limits() -> None:
    from p2p.messages import MAX_TXS_MSG_BYTES, MAX_TXS_PER_MSG, tx_batches

    small = [bytes([i % 256]) * 10 for i in range(MAX_TXS_PER_MSG + 5)]
    batches = tx_batches(small)
    assert [len(b.txs) for b in batches] == [MAX_TXS_PER_MSG, 5]
    assert [tx for b in batches for tx in b.txs] == small
    big = [b"x" * (MAX_TXS_MSG_BYTES // 2 + 1)] * 3
    assert [len(b.txs) for b in tx_batches(big)] == [1, 1, 1]
    assert tx_batches([]) == []
    for batch in batches:
        assert decode(Frame, encode(Frame(message=batch))) == Frame(message=batch)
