"""The consensus write-ahead log: what the engine received and signed, in order.

A restarted node replays the entries written after the last committed height
back into the engine, so it resumes the unfinished height where it stopped and
never signs two different things for one step (the signer's state is the last
line of defence, the WAL the record of what was already sent).

On disk: a directory of segment files `<16-digit index>.wal`, appended in
index order. Each entry is one frame:

    length (4 bytes, big-endian) || crc32(body) (4 bytes, big-endian) || body

where body is the canonical encoding of a `WalEntry`. Received messages and
timeouts are appended without fsync (losing them in a crash is harmless: peers
resend); the node's own votes and proposals are fsynced before they are sent;
`end_height` fsyncs a `WalEndHeight` after the block is in the store, then
starts a new segment and drops all but the previous one.

A crash can tear only the unsynced end of the newest segment: a bad frame there
with no good frame after it is a torn tail, cut away at open with a warning.
Any other damage is `WalCorrupted`: replay would silently lose durable entries.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO

from chain.codec import MAX_ENCODED_LEN, U8, U32, U64, Bytes, OneOf, Record, decode, encode, record
from chain.errors import DecodeError
from chain.files import fsync_folder
from chain.records import SignedProposal, SignedVote
from consensus.errors import WalCorrupted, WalError, WalFrameError

log = logging.getLogger("gannet.consensus.wal")

FRAME_HEADER_LEN = 8
# A proposal's block travels inside one entry, and a body must stay decodable.
MAX_WAL_BLOCK_BYTES = MAX_ENCODED_LEN - (64 << 10)
SEGMENT_SUFFIX = ".wal"
_SEGMENT_NAME = re.compile(r"^(\d{16})\.wal$")
_HEADER = struct.Struct(">II")


# --- entries ------------------------------------------------------------------


@record
class WalProposal(Record):
    """A signed proposal and its block's canonical bytes; `own` = 1 if this node made it."""

    proposal: SignedProposal
    block: Annotated[bytes, Bytes(1, MAX_WAL_BLOCK_BYTES)]
    own: Annotated[int, U8]


@record
class WalVote(Record):
    """A signed prevote or precommit; `own` = 1 if this node signed it."""

    vote: SignedVote
    own: Annotated[int, U8]


@record
class WalTimeout(Record):
    """A step timeout fired at (height, round, step)."""

    height: Annotated[int, U64]
    round: Annotated[int, U32]
    step: Annotated[int, U8]


@record
class WalEndHeight(Record):
    """Block `height` is committed to the store; entries of that height are done."""

    height: Annotated[int, U64]


WAL_MESSAGES = OneOf(((1, WalProposal), (2, WalVote), (3, WalTimeout), (4, WalEndHeight)))

WalMessage = WalProposal | WalVote | WalTimeout | WalEndHeight

# Where a good frame can start (a superset, scanned at C speed so a search through a
# torn tail of megabytes stays fast): a nonzero length below 2^25, any CRC, then the
# canonical WalEntry prefix fixarray(1), fixarray(2) [tag, message], a known tag.
_FRAME_START = re.compile(
    rb"(?=(?!\x00{4})[\x00\x01].{3}.{4}\x91\x92["
    + b"".join(b"\\x%02x" % tag for tag, _ in WAL_MESSAGES.variants) + rb"])",
    re.DOTALL)


@record
class WalEntry(Record):
    """One WAL frame's body: a tagged message."""

    message: Annotated[WalMessage, WAL_MESSAGES]


# --- frames -------------------------------------------------------------------


def encode_frame(message: WalMessage) -> bytes:
    """The frame of one entry: length, CRC32 of the body, body."""
    body = encode(WalEntry(message=message))
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_frame(data: bytes | memoryview, offset: int) -> tuple[WalMessage, int]:
    """The entry of the frame at `offset` and the offset after it.

    WalFrameError when the bytes there are not one whole frame whose CRC matches
    and whose body decodes.
    """
    header_end = offset + FRAME_HEADER_LEN
    if header_end > len(data):
        raise WalFrameError(f"short frame header: {len(data) - offset} of 8 bytes")
    length, crc = _HEADER.unpack_from(data, offset)
    if not 0 < length <= MAX_ENCODED_LEN:
        raise WalFrameError(f"frame length {length} outside 1..{MAX_ENCODED_LEN}")
    end = header_end + length
    if end > len(data):
        raise WalFrameError(f"short frame: body of {length} bytes, {len(data) - header_end} left")
    body = bytes(data[header_end:end])
    if zlib.crc32(body) != crc:
        raise WalFrameError(f"CRC mismatch: stored {crc:08x}, body has {zlib.crc32(body):08x}")
    try:
        return decode(WalEntry, body).message, end
    except DecodeError as exc:
        raise WalFrameError(f"frame body does not decode: {exc}") from exc


# --- segments -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a segment holds: its entries, where good data ends, how many torn bytes follow."""

    entries: tuple[WalMessage, ...]
    good_end: int
    torn_bytes: int


def scan_segment(path: Path, data: bytes, is_last: bool) -> SegmentScan:
    """Decode every frame of a segment.

    A bad frame in the last segment with no good frame anywhere after it is a
    torn tail (reported, not raised); any other bad frame raises WalCorrupted.
    """
    entries: list[WalMessage] = []
    offset = 0
    while offset < len(data):
        try:
            message, offset_after = decode_frame(data, offset)
        except WalFrameError as exc:
            if is_last and not _has_good_frame_after(data, offset + 1):
                return SegmentScan(tuple(entries), offset, len(data) - offset)
            raise WalCorrupted(str(path), offset, str(exc)) from exc
        entries.append(message)
        offset = offset_after
    return SegmentScan(tuple(entries), offset, 0)


def _has_good_frame_after(data: bytes, start: int) -> bool:
    """Whether a whole, intact frame starts at any offset from `start` on.

    A torn write leaves no good frame behind it; a damaged frame in the middle
    does, and that difference is what separates a crash from corruption.
    """
    for match in _FRAME_START.finditer(data, start):
        try:
            decode_frame(data, match.start())
        except WalFrameError:
            continue
        return True
    return False


def segment_paths(directory: Path) -> list[Path]:
    """The segment files of a WAL directory in append order (other files are ignored)."""
    found = [p for p in directory.iterdir() if _SEGMENT_NAME.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def _segment_index(path: Path) -> int:
    return int(path.name[:-len(SEGMENT_SUFFIX)])


def _segment_path(directory: Path, index: int) -> Path:
    return directory / f"{index:016d}{SEGMENT_SUFFIX}"


def _scan_all(segments: list[Path]) -> Iterator[tuple[Path, SegmentScan]]:
    """Scan each segment in order; only the last may end in a torn tail."""
    for i, path in enumerate(segments):
        yield path, scan_segment(path, path.read_bytes(), is_last=i == len(segments) - 1)


def entries_after_last_end(entries: list[WalMessage]) -> tuple[int | None, list[WalMessage]]:
    """(height of the last WalEndHeight or None, the entries written after it)."""
    for i in range(len(entries) - 1, -1, -1):
        message = entries[i]
        if isinstance(message, WalEndHeight):
            return message.height, entries[i + 1:]
    return None, entries


# --- the log ------------------------------------------------------------------


class WAL:
    """An open write-ahead log: one append handle on its newest segment."""

    def __init__(self, directory: Path, segments: list[Path], handle: BinaryIO) -> None:
        self.directory = directory
        self._segments = segments
        self._file = handle

    @classmethod
    def open(cls, directory: Path) -> WAL:
        """Open (creating if needed) the WAL in `directory`, cutting away a torn tail.

        Raises WalCorrupted when a segment is damaged anywhere but its torn tail.
        """
        try:
            directory.mkdir(parents=True, exist_ok=True)
            segments = segment_paths(directory)
            for path, scan in _scan_all(segments):
                if scan.torn_bytes:
                    _truncate(path, scan)
            if not segments:
                segments = [_create_segment(directory, 0)]
            handle = open(segments[-1], "ab")  # noqa: SIM115 - held open until close()
        except OSError as exc:
            raise WalError(f"cannot open WAL in {directory}: {exc}") from exc
        return cls(directory, segments, handle)

    def write(self, message: WalMessage) -> None:
        """Append an entry and hand it to the OS (no fsync: losing it in a crash is harmless)."""
        self._append(encode_frame(message))

    def write_sync(self, message: WalMessage) -> None:
        """Append an entry and fsync it: it survives a crash once this returns."""
        self._append(encode_frame(message))
        self._sync()

    def end_height(self, height: int) -> None:
        """Mark `height` committed (fsynced), then rotate: a new segment for the next height,
        and every segment older than the one just ended deleted.
        """
        self.write_sync(WalEndHeight(height=height))
        try:
            self._file.close()
            new = _create_segment(self.directory, _segment_index(self._segments[-1]) + 1)
            self._file = open(new, "ab")  # noqa: SIM115 - held open until close()
            self._segments.append(new)
            for old in self._segments[:-2]:
                old.unlink(missing_ok=True)
            self._segments = self._segments[-2:]
        except OSError as exc:
            raise WalError(f"cannot rotate WAL in {self.directory}: {exc}") from exc

    def replay(self) -> tuple[int | None, list[WalMessage]]:
        """(last ended height or None, the entries written after it): the unfinished height."""
        self._flush()
        entries: list[WalMessage] = []
        try:
            for _, scan in _scan_all(segment_paths(self.directory)):
                entries.extend(scan.entries)
        except OSError as exc:
            raise WalError(f"cannot read WAL in {self.directory}: {exc}") from exc
        return entries_after_last_end(entries)

    def close(self) -> None:
        """Flush and close the append handle (idempotent)."""
        if not self._file.closed:
            self._flush()
            self._file.close()

    def _append(self, frame: bytes) -> None:
        try:
            self._file.write(frame)
            self._file.flush()
        except (OSError, ValueError) as exc:  # ValueError: the WAL is closed
            raise WalError(f"cannot append to WAL {self._segments[-1]}: {exc}") from exc

    def _flush(self) -> None:
        try:
            self._file.flush()
        except (OSError, ValueError) as exc:
            raise WalError(f"cannot flush WAL {self._segments[-1]}: {exc}") from exc

    def _sync(self) -> None:
        try:
            os.fdatasync(self._file.fileno())
        except (OSError, ValueError) as exc:
            raise WalError(f"cannot fsync WAL {self._segments[-1]}: {exc}") from exc


def _create_segment(directory: Path, index: int) -> Path:
    """Create an empty segment and make its name durable before anything is fsynced in it."""
    path = _segment_path(directory, index)
    path.touch(exist_ok=True)
    fsync_folder(directory)
    return path


def _truncate(path: Path, scan: SegmentScan) -> None:
    log.warning("WAL %s: dropping a torn tail of %d bytes at byte %d (an unfinished write "
                "before a crash)", path, scan.torn_bytes, scan.good_end)
    with open(path, "r+b") as handle:
        handle.truncate(scan.good_end)
        os.fsync(handle.fileno())


# --- read-only check ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalReport:
    """What `check_wal` found; `corruption` is None when every segment reads back."""

    exists: bool
    segments: int
    entries: int
    last_ended_height: int | None
    torn_bytes: int
    corruption: str | None


def check_wal(directory: Path) -> WalReport:
    """Read every segment without changing anything: counts, last ended height, a torn
    tail's size, or the first corruption found.
    """
    if not directory.is_dir():
        return WalReport(exists=False, segments=0, entries=0, last_ended_height=None,
                         torn_bytes=0, corruption=None)
    segments: list[Path] = []
    entries: list[WalMessage] = []
    torn, corruption = 0, None
    try:
        segments = segment_paths(directory)
        for _, scan in _scan_all(segments):
            entries.extend(scan.entries)
            torn = scan.torn_bytes
    except WalCorrupted as exc:
        corruption = str(exc)
    except OSError as exc:
        corruption = f"cannot read WAL in {directory}: {exc}"
    last_ended = None if corruption else entries_after_last_end(entries)[0]
    return WalReport(exists=True, segments=len(segments), entries=len(entries),
                     last_ended_height=last_ended, torn_bytes=torn, corruption=corruption)
