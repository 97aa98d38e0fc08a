"""The consensus WAL: frames, round trip, torn tails, corruption, rotation, replay."""

from __future__ import annotations

import logging
import os
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.crypto import SigningKey
from chain.records import (
    STEP_PREVOTE,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Proposal,
    Vote,
)
from chain.signing import sign_proposal, sign_vote
from consensus.errors import WalCorrupted, WalError, WalFrameError
from consensus.wal import (
    _FRAME_START,
    FRAME_HEADER_LEN,
    WAL,
    WalEndHeight,
    WalProposal,
    WalTimeout,
    WalVote,
    check_wal,
    decode_frame,
    encode_frame,
    segment_paths,
)
from tests.strategies import records

CHAIN = "gannet-wal"
KEY = SigningKey.from_seed(bytes(range(32)))
ADDR = address_from_public_key(KEY.public_key)
wal_messages = st.one_of(records(WalProposal), records(WalVote), records(WalTimeout),
                         records(WalEndHeight))


def vote(height: int, round_: int = 0, vote_type: int = VOTE_PREVOTE, own: int = 0) -> WalVote:
    v = Vote(vote_type=vote_type, height=height, round=round_, block_hash=bytes([height]) * 32,
             validator=ADDR)
    return WalVote(vote=sign_vote(KEY, CHAIN, v), own=own)


def proposal(height: int, round_: int = 0) -> WalProposal:
    p = Proposal(height=height, round=round_, pol_round=2**32 - 1,
                 block_hash=bytes([height]) * 32, proposer=ADDR)
    return WalProposal(proposal=sign_proposal(KEY, CHAIN, p), block=b"block" * 50, own=1)


def height_entries(height: int) -> list:
    """What one height typically logs: a proposal, votes, a timeout."""
    return [proposal(height), vote(height, own=1), vote(height),
            WalTimeout(height=height, round=0, step=STEP_PREVOTE),
            vote(height, vote_type=VOTE_PRECOMMIT, own=1)]


def write_all(directory: Path, entries: list, sync: bool = False) -> None:
    wal = WAL.open(directory)
    for entry in entries:
        (wal.write_sync if sync else wal.write)(entry)
    wal.close()


def replay(directory: Path) -> tuple[int | None, list]:
    wal = WAL.open(directory)
    try:
        return wal.replay()
    finally:
        wal.close()


def only_segment(directory: Path) -> Path:
    segments = segment_paths(directory)
    assert len(segments) == 1, segments
    return segments[0]


# --- frames -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(wal_messages)
def test_frame_round_trip(message) -> None:
    frame = encode_frame(message)
    assert decode_frame(frame, 0) == (message, len(frame))
    # The torn-tail search only tries offsets its prefilter admits: every frame must pass.
    assert _FRAME_START.match(frame)
    assert decode_frame(b"junk" + frame, 4) == (message, len(frame) + 4)


@settings(max_examples=60, deadline=None)
@given(wal_messages, st.data())
def test_frame_prefix_and_flipped_bit_are_rejected(message, data) -> None:
    frame = encode_frame(message)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    with pytest.raises(WalFrameError):
        decode_frame(frame[:cut], 0)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1), label="bit")
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(WalFrameError):
        decode_frame(bytes(flipped), 0)


def test_frame_layout_is_length_crc_body() -> None:
    frame = encode_frame(WalEndHeight(height=7))
    length = int.from_bytes(frame[:4], "big")
    assert length == len(frame) - FRAME_HEADER_LEN
    assert int.from_bytes(frame[4:8], "big") == zlib.crc32(frame[8:])


def test_oversize_length_is_a_frame_error() -> None:
    with pytest.raises(WalFrameError, match="length"):
        decode_frame(b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"x" * 20, 0)
    with pytest.raises(WalFrameError, match="length"):
        decode_frame(b"\x00" * 16, 0)


# --- round trip and replay ----------------------------------------------------------


def test_round_trip_through_reopen(tmp_path: Path) -> None:
    entries = height_entries(1)
    write_all(tmp_path / "wal", entries[:2])
    write_all(tmp_path / "wal", entries[2:], sync=True)
    assert replay(tmp_path / "wal") == (None, entries)


def test_replay_returns_only_entries_after_the_last_end_height(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    for height in (1, 2):
        for entry in height_entries(height):
            wal.write(entry)
        wal.end_height(height)
    unfinished = height_entries(3)[:3]
    for entry in unfinished:
        wal.write(entry)
    assert wal.replay() == (2, unfinished)
    wal.close()
    assert replay(tmp_path) == (2, unfinished)


def test_replay_right_after_end_height_is_empty(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.write(vote(5))
    wal.end_height(5)
    assert wal.replay() == (5, [])
    wal.close()


def test_empty_wal(tmp_path: Path) -> None:
    assert replay(tmp_path / "new") == (None, [])
    assert len(segment_paths(tmp_path / "new")) == 1


def test_write_after_close_is_a_wal_error(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(WalError):
        wal.write(vote(1))


def test_unsynced_write_reaches_the_os_before_returning(tmp_path: Path) -> None:
    """Another reader sees a plain write at once: it is flushed, only not fsynced."""
    wal = WAL.open(tmp_path)
    wal.write(vote(1))
    assert check_wal(tmp_path).entries == 1
    wal.close()


def test_write_sync_fsyncs_and_write_does_not(tmp_path: Path, monkeypatch) -> None:
    synced = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd))
    wal = WAL.open(tmp_path)
    wal.write(vote(1))
    assert synced == []
    wal.write_sync(vote(1, own=1))
    assert len(synced) == 1
    wal.close()


# --- rotation -----------------------------------------------------------------------


def test_rotation_keeps_the_previous_and_current_segments(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    for height in range(1, 6):
        wal.write(vote(height))
        wal.end_height(height)
        assert len(segment_paths(tmp_path)) == min(height + 1, 2)
    wal.write(vote(6))
    wal.close()
    names = [p.name for p in segment_paths(tmp_path)]
    assert names == ["0000000000000004.wal", "0000000000000005.wal"]
    report = check_wal(tmp_path)
    assert (report.segments, report.entries, report.last_ended_height) == (2, 3, 5)
    assert replay(tmp_path) == (5, [vote(6)])


def test_rotation_continues_after_reopen(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.end_height(1)
    wal.close()
    wal = WAL.open(tmp_path)
    wal.write(vote(2))
    wal.end_height(2)
    wal.write(vote(3))
    wal.close()
    assert [p.name for p in segment_paths(tmp_path)] == ["0000000000000001.wal",
                                                         "0000000000000002.wal"]
    assert replay(tmp_path) == (2, [vote(3)])


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "12.wal").write_bytes(b"garbage")
    write_all(tmp_path, [vote(1)])
    assert replay(tmp_path) == (None, [vote(1)])


# --- torn tails and corruption -------------------------------------------------------


def test_torn_tail_at_every_offset_of_the_last_frame_is_dropped(tmp_path: Path) -> None:
    entries = [vote(1), proposal(1), vote(1, vote_type=VOTE_PRECOMMIT)]
    write_all(tmp_path / "full", entries)
    data = only_segment(tmp_path / "full").read_bytes()
    last_start = len(data) - len(encode_frame(entries[-1]))
    for cut in range(last_start, len(data)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        segment = directory / "0000000000000000.wal"
        segment.write_bytes(data[:cut])
        assert check_wal(directory).torn_bytes == cut - last_start
        assert replay(directory) == (None, entries[:-1]), cut
        assert segment.stat().st_size == last_start
        assert check_wal(directory).torn_bytes == 0


def test_random_garbage_after_the_last_frame_is_dropped(tmp_path: Path, caplog) -> None:
    entries = height_entries(1)
    write_all(tmp_path, entries)
    segment = only_segment(tmp_path)
    good = segment.stat().st_size
    garbage = random.Random(7).randbytes(1000)
    with open(segment, "ab") as handle:
        handle.write(garbage)
    report = check_wal(tmp_path)
    assert (report.torn_bytes, report.corruption, report.entries) == (1000, None, 5)
    with caplog.at_level(logging.WARNING, logger="gannet.consensus.wal"):
        wal = WAL.open(tmp_path)
    assert "torn tail of 1000 bytes" in caplog.text
    assert segment.stat().st_size == good
    wal.write(vote(1, round_=1))
    assert wal.replay() == (None, [*entries, vote(1, round_=1)])
    wal.close()


@pytest.mark.parametrize("tail", [b"\x00" * 300, b"\xff" * 9, b"\x00\x00\x00\x05abc"])
def test_zeros_and_short_headers_after_the_last_frame_are_torn(tmp_path: Path, tail) -> None:
    write_all(tmp_path, [vote(1)])
    with open(only_segment(tmp_path), "ab") as handle:
        handle.write(tail)
    assert replay(tmp_path) == (None, [vote(1)])


def test_bad_crc_in_a_frame_before_the_last_is_corruption(tmp_path: Path) -> None:
    entries = height_entries(1)
    write_all(tmp_path, entries)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(encode_frame(entries[0]))
    data[second + FRAME_HEADER_LEN + 3] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorrupted, match=f"at byte {second}: CRC mismatch") as caught:
        WAL.open(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(segment), second)
    assert segment.read_bytes() == bytes(data)  # nothing was cut away
    report = check_wal(tmp_path)
    assert report.corruption is not None and f"at byte {second}" in report.corruption


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.write(vote(1))
    wal.end_height(1)
    wal.write(vote(2))
    wal.close()
    older = segment_paths(tmp_path)[0]
    data = older.read_bytes()
    older.write_bytes(data[:-1])
    with pytest.raises(WalCorrupted) as caught:
        WAL.open(tmp_path)
    assert caught.value.path == str(older)
    assert caught.value.offset == len(encode_frame(vote(1)))


def test_check_wal_changes_nothing(tmp_path: Path) -> None:
    write_all(tmp_path, [vote(1)])
    segment = only_segment(tmp_path)
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x01")
    before = segment.read_bytes()
    report = check_wal(tmp_path)
    assert (report.exists, report.torn_bytes, report.entries) == (True, 3, 1)
    assert segment.read_bytes() == before
    missing = check_wal(tmp_path / "absent")
    assert not missing.exists and not (tmp_path / "absent").exists()



def test_damaged_length_before_good_frames_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    """A garbled length hides where the next frame starts; the good frames after it
    are still found, so the damage is not mistaken for a crash's torn tail.
    """
    entries = height_entries(1)
    write_all(tmp_path, entries)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(encode_frame(entries[0]))
    data[second] = 0x7F
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorrupted, match=f"at byte {second}: frame length"):
        WAL.open(tmp_path)
