"""Canonical codec: round trips, one encoding per value, strict typed decoding errors.

Every record of chain.records and chain.store is drawn from `tests.strategies`,
which builds values from the records' declared field kinds.
"""

from __future__ import annotations

import copy
import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.codec import MAX_ENCODED_LEN, ListOf, OneOf, Record, decode, encode
from chain.errors import DecodeError, EncodeError
from chain.records import (
    Account,
    Block,
    Commit,
    CommitSig,
    Header,
    Lock,
    Receipt,
    SignedTx,
    Transfer,
    Tx,
    TxLocation,
    Validator,
    ValidatorSet,
    Vote,
)
from chain.signing import verify_tx_signature
from chain.store import GenesisMark, Head
from tests.strategies import field_kinds, record_classes, records, validly_signed_txs

CLASSES = record_classes()
IDS = [cls.__name__ for cls in CLASSES]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_record_has_a_strategy() -> None:
    """The strategies cover every record the protocol declares (18 today)."""
    names = {cls.__name__ for cls in CLASSES}
    assert {"Transfer", "Tx", "SignedTx", "Receipt", "TxLocation", "Vote", "SignedVote",
            "CommitSig", "Commit", "DuplicateVoteEvidence", "Header", "Block", "Lock",
            "Account", "Validator", "ValidatorSet", "Head", "GenesisMark"} <= names
    assert len(names) == len(CLASSES)
    for cls in CLASSES:
        assert field_kinds(cls), cls  # every record has fields with codec kinds


# --- an independent reference encoder ------------------------------------------------


def reference_obj(value: Any, kind: Any) -> Any:
    """The msgpack object of a field value, per the codec rules, written independently."""
    if isinstance(kind, ListOf):
        return [reference_obj(item, kind.item) for item in value]
    if isinstance(kind, OneOf):
        tag = next(tag for tag, cls in kind.variants if type(value) is cls)
        return [tag, reference_obj(value, type(value))]
    if isinstance(kind, type) and issubclass(kind, Record):
        return [reference_obj(getattr(value, name), k) for name, k in field_kinds(kind)]
    return value


def reference_encode(value: Record) -> bytes:
    """A record as a msgpack array of its fields in declaration order, bytes as bin."""
    return msgpack.packb(reference_obj(value, type(value)), use_bin_type=True)


# --- round trips and determinism -----------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    """decode(encode(r)) == r, for every record."""
    value = data.draw(records(cls))
    decoded = decode(cls, encode(value))
    assert decoded == value and type(decoded) is cls


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data())
def test_encoding_is_deterministic_and_matches_the_reference(
    cls: type, data: st.DataObject
) -> None:
    """One value has one encoding: equal records encode identically, as the rules say."""
    value = data.draw(records(cls))
    raw = encode(value)
    assert encode(copy.deepcopy(value)) == raw
    assert encode(dataclasses.replace(value)) == raw
    assert raw == reference_encode(value)


@pytest.mark.parametrize(
    "value",
    [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1],
)
def test_integer_boundaries_use_the_shortest_form(value: int) -> None:
    """Every msgpack integer width boundary round-trips and encodes in its shortest form."""
    lock = Lock(amount=value, release_height=0)
    raw = encode(lock)
    assert raw == b"\x92" + msgpack.packb(value) + b"\x00"
    assert decode(Lock, raw) == lock


@pytest.mark.parametrize("length", [0, 1, 31, 32, 255, 256])
def test_byte_length_boundaries(length: int) -> None:
    """bin8 / bin16 boundaries of a variable-length field round-trip."""
    receipt = Receipt(status=1, code=2, reason=b"r" * length, fee_paid=3)
    assert decode(Receipt, encode(receipt)) == receipt


@pytest.mark.parametrize("count", [15, 16, 300])
def test_long_lists_use_array16(count: int) -> None:
    """Lists past the fixarray limit (16+ items) round-trip."""
    vset = ValidatorSet(validators=tuple(
        Validator(address=i.to_bytes(20, "big"), public_key=bytes(32), power=i,
                  operator=bytes(20))
        for i in range(count)
    ))
    raw = encode(vset)
    assert raw == reference_encode(vset)
    assert decode(ValidatorSet, raw) == vset


def test_decode_accepts_bytearray_and_memoryview() -> None:
    """Any bytes-like input decodes like bytes."""
    lock = Lock(amount=5, release_height=6)
    raw = encode(lock)
    assert decode(Lock, bytearray(raw)) == lock
    assert decode(Lock, memoryview(raw)) == lock


# --- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(raw=st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(cls: type, raw: bytes) -> None:
    """Arbitrary bytes either are a canonical encoding or raise DecodeError, nothing else."""
    try:
        value = decode(cls, raw)
    except DecodeError:
        return
    assert encode(value) == raw


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.binary(max_size=70) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=12,
)


def paths_of(obj: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in a nested list, the root included."""
    found = [prefix]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            found.extend(paths_of(item, (*prefix, i)))
    return found


def replaced(obj: Any, path: tuple[int, ...], edit: Callable[[Any], Any]) -> Any:
    """A copy of a nested list with the item at `path` replaced by edit(item)."""
    if not path:
        return edit(obj)
    head, *rest = path
    out = list(obj)
    out[head] = replaced(obj[head], tuple(rest), edit)
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data())
def test_structured_garbage_raises_only_decode_error(cls: type, data: st.DataObject) -> None:
    """A valid record with any one subtree swapped for any msgpack value: DecodeError or valid."""
    obj = msgpack.unpackb(encode(data.draw(records(cls))))
    path = data.draw(st.sampled_from(paths_of(obj)))
    junk = data.draw(msgpack_values)
    raw = msgpack.packb(replaced(obj, path, lambda _: junk), use_bin_type=True)
    try:
        value = decode(cls, raw)
    except DecodeError:
        return
    assert encode(value) == raw


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data())
def test_single_byte_mutation_is_rejected_or_canonical(cls: type, data: st.DataObject) -> None:
    """A changed, inserted or deleted byte gives DecodeError or a different, canonical record."""
    value = data.draw(records(cls))
    raw = encode(value)
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    op = data.draw(st.sampled_from(["set", "insert", "delete"]))
    if op == "set":
        mutated = raw[:pos] + bytes([(raw[pos] + 1 + byte % 255) % 256]) + raw[pos + 1:]
    elif op == "insert":
        mutated = raw[:pos] + bytes([byte]) + raw[pos:]
    else:
        mutated = raw[:pos] + raw[pos + 1:]
    assert mutated != raw
    try:
        other = decode(cls, mutated)
    except DecodeError:
        return
    assert other != value
    assert encode(other) == mutated


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data())
def test_every_truncation_is_rejected(cls: type, data: st.DataObject) -> None:
    """A strict prefix of a record's encoding never decodes."""
    raw = encode(data.draw(records(cls)))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(DecodeError):
        decode(cls, raw[:cut])


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@FAST
@given(data=st.data(), tail=st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_rejected(cls: type, data: st.DataObject, tail: bytes) -> None:
    """Bytes after a complete record are refused, whatever they are."""
    raw = encode(data.draw(records(cls)))
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(cls, raw + tail)


def test_non_bytes_input_is_a_decode_error() -> None:
    """decode refuses a str or a list with DecodeError, not TypeError."""
    for junk in ("\x90", [1, 2], None, 5):
        with pytest.raises(DecodeError, match="expected bytes"):
            decode(Lock, junk)  # type: ignore[arg-type]


def test_oversize_input_is_refused_before_parsing() -> None:
    """Input over MAX_ENCODED_LEN is refused by length."""
    with pytest.raises(DecodeError, match="exceeds"):
        decode(Block, b"\x00" * (MAX_ENCODED_LEN + 1))


def test_deep_nesting_is_a_decode_error() -> None:
    """A nesting bomb hits msgpack's stack limit and surfaces as DecodeError."""
    with pytest.raises(DecodeError):
        decode(Block, b"\x91" * 100_000 + b"\x00")


def test_ext_types_are_refused() -> None:
    """msgpack ext types (not part of the format) are refused while unpacking."""
    raw = msgpack.packb([msgpack.ExtType(5, b"x"), 0], use_bin_type=True)
    with pytest.raises(DecodeError, match="ext type 5"):
        decode(Lock, raw)


# --- table: a valid encoding with one thing broken -------------------------------------


class Raw(bytes):
    """Bytes spliced verbatim into a hand-built encoding."""


def pack(obj: Any) -> bytes:
    """msgpack's shortest forms, except that `Raw` nodes are emitted as given."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if isinstance(obj, list):
        n = len(obj)
        header = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return header + b"".join(pack(item) for item in obj)
    return msgpack.packb(obj, use_bin_type=True)


SENDER = bytes(range(32))
TO = bytes(range(100, 120))
STX = SignedTx(
    tx=Tx(chain_id=b"gannet-1", sender=SENDER, nonce=5, fee=10,
          body=Transfer(to=TO, amount=7, denom=1)),
    signature=bytes(range(64)),
)
COMMIT = Commit(height=3, round=1, block_hash=bytes(range(32)),
                signatures=(CommitSig(validator=TO, signature=bytes(64)),))
HEADER = Header(version=1, chain_id=b"gannet-1", height=4, time_ms=1000,
                prev_hash=bytes(32), last_commit_hash=bytes(32), tx_root=bytes(32),
                app_hash=bytes(32), results_hash=bytes(32), validators_hash=bytes(32),
                next_validators_hash=bytes(32), evidence_hash=bytes(32), proposer=TO)
BLOCK = Block(header=HEADER, txs=(STX,), evidence=(), last_commit=COMMIT)
ACCOUNT = Account(gpu=1, stable=2, nonce=3, licences=4, locks=(Lock(amount=5, release_height=6),))
VOTE = Vote(vote_type=2, height=3, round=0, block_hash=b"", validator=TO)
RECEIPT = Receipt(status=0, code=0, reason=b"", fee_paid=1)
HEAD = Head(height=1, block_hash=bytes(32), time_ms=2, app_hash=bytes(32),
            results_hash=bytes(32))
MARK = GenesisMark(genesis_hash=bytes(32), app_hash=bytes(32))

BODY = (0, 4, 1)  # SignedTx → tx → body → [tag, Transfer] → the Transfer
P_BODY = "SignedTx.tx.body<Transfer>"


def _set(new: Any) -> Callable[[Any], Any]:
    return lambda _: new


# (id, base record, path into its msgpack array, edit of the item there, message prefix)
BROKEN = [
    ("arity-extra", STX, (), lambda o: [*o, b""],
     "SignedTx: expected 2 fields for SignedTx, got 3"),
    ("arity-short", STX, (0,), lambda o: o[:-1], "SignedTx.tx: expected 5 fields for Tx, got 4"),
    ("arity-long", STX, (0,), lambda o: [*o, 0], "SignedTx.tx: expected 5 fields for Tx, got 6"),
    ("arity-nested", STX, BODY, lambda o: o[:2], f"{P_BODY}: expected 3 fields for Transfer"),
    ("arity-empty", MARK, (), _set([]), "GenesisMark: expected 2 fields for GenesisMark, got 0"),
    ("uint-as-string", STX, (0, 2), _set("5"), "SignedTx.tx.nonce: expected uint64, got string"),
    ("uint-as-bytes", STX, (0, 3), _set(b"\x0a"), "SignedTx.tx.fee: expected uint64, got bytes"),
    ("uint-as-array", STX, (0, 3), _set([10]), "SignedTx.tx.fee: expected uint64, got array"),
    ("negative-int", STX, (0, 2), _set(-1), "SignedTx.tx.nonce: -1 is out of range for uint64"),
    ("int64-min", STX, (0, 3), _set(-(2**63)), "SignedTx.tx.fee: -9223372036854775808 is out"),
    ("u8-too-big", STX, (*BODY, 2), _set(256), f"{P_BODY}.denom: 256 is out of range for uint8"),
    ("u8-status", RECEIPT, (0,), _set(2**8), "Receipt.status: 256 is out of range for uint8"),
    ("u32-too-big", BLOCK, (3, 1), _set(2**32),
     "Block.last_commit.round: 4294967296 is out of range for uint32"),
    ("u32-header", BLOCK, (0, 0), _set(2**32), "Block.header.version: 4294967296 is out of range"),
    ("u32-licences", ACCOUNT, (3,), _set(2**32), "Account.licences: 4294967296 is out of range"),
    ("bytes-too-long", STX, (1,), _set(bytes(65)), "SignedTx.signature: expected 64 bytes, got 65"),
    ("bytes-too-short", STX, (0, 1), _set(bytes(31)),
     "SignedTx.tx.sender: expected 32 bytes, got 31"),
    ("address-too-long", STX, (*BODY, 0), _set(bytes(21)),
     f"{P_BODY}.to: expected 20 bytes, got 21"),
    ("chain-id-empty", STX, (0, 0), _set(b""), "SignedTx.tx.chain_id: expected 1..64 bytes, got 0"),
    ("chain-id-long", STX, (0, 0), _set(bytes(65)),
     "SignedTx.tx.chain_id: expected 1..64 bytes, got 65"),
    ("opt-hash-too-long", VOTE, (3,), _set(bytes(33)),
     "Vote.block_hash: expected 0 or 32 bytes, got 33"),
    ("reason-too-long", RECEIPT, (2,), _set(bytes(257)),
     "Receipt.reason: expected 0..256 bytes, got 257"),
    ("hash-empty", HEAD, (3,), _set(b""), "Head.app_hash: expected 32 bytes, got 0"),
    ("bytes-as-string", STX, (0, 0), _set("gannet-1"),
     "SignedTx.tx.chain_id: expected bytes, got string"),
    ("map-for-record", STX, (0,), _set({"nonce": 5}), "SignedTx.tx: expected a Tx array, got map"),
    ("map-at-top", STX, (), _set({"tx": 1}), "SignedTx: expected a SignedTx array, got map"),
    ("bytes-for-record", BLOCK, (3,), _set(b"\x90"),
     "Block.last_commit: expected a Commit array, got bytes"),
    ("float", STX, (0, 2), _set(5.0), "SignedTx.tx.nonce: expected uint64, got float"),
    ("float-for-bytes", STX, (1,), _set(0.5), "SignedTx.signature: expected bytes, got float"),
    ("bool", STX, (*BODY, 2), _set(True), f"{P_BODY}.denom: expected uint8, got boolean"),
    ("bool-for-bytes", STX, (1,), _set(False), "SignedTx.signature: expected bytes, got boolean"),
    ("nil", STX, (0, 3), _set(None), "SignedTx.tx.fee: expected uint64, got nil"),
    ("nil-record", STX, (0,), _set(None), "SignedTx.tx: expected a Tx array, got nil"),
    ("timestamp-ext", STX, (0, 2), _set(msgpack.Timestamp(1, 0)),
     "SignedTx.tx.nonce: expected uint64, got Timestamp"),
    ("unknown-tag", STX, (0, 4, 0), _set(99), "SignedTx.tx.body: unknown variant tag 99"),
    ("tag-zero", STX, (0, 4, 0), _set(0), "SignedTx.tx.body: unknown variant tag 0"),
    ("tag-string", STX, (0, 4, 0), _set("1"), "SignedTx.tx.body: expected [tag, body]"),
    ("tag-bool", STX, (0, 4, 0), _set(True), "SignedTx.tx.body: expected [tag, body]"),
    ("union-triple", STX, (0, 4), lambda o: [*o, 0], "SignedTx.tx.body: expected [tag, body]"),
    ("union-untagged", STX, (0, 4), lambda o: o[1], "SignedTx.tx.body: expected [tag, body]"),
    ("union-map", STX, (0, 4), _set({"1": 2}), "SignedTx.tx.body: expected [tag, body], got map"),
    ("list-as-map", BLOCK, (1,), _set({}), "Block.txs: expected a list, got map"),
    ("list-as-bytes", BLOCK, (2,), _set(b""), "Block.evidence: expected a list, got bytes"),
    ("list-item", BLOCK, (1, 0, 0, 3), _set(-1), "Block.txs[0].tx.fee: -1 is out of range"),
    ("list-item-record", BLOCK, (1, 0), _set(7), "Block.txs[0]: expected a SignedTx array"),
    ("list-item-sig", BLOCK, (3, 3, 0, 1), _set(bytes(63)),
     "Block.last_commit.signatures[0].signature: expected 64 bytes, got 63"),
    ("list-too-long", ACCOUNT, (4,), lambda o: o * 257,
     "Account.locks: 257 items exceeds the limit of 256"),
    ("nested-item", TxLocation(height=1, index=2, receipt=RECEIPT), (2, 1), _set(-5),
     "TxLocation.receipt.code: -5 is out of range for uint32"),
]


@pytest.mark.parametrize(("base", "path", "edit", "message"),
                         [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_one_broken_thing_names_its_field(
    base: Record, path: tuple[int, ...], edit: Callable[[Any], Any], message: str
) -> None:
    """Each way to break a valid encoding raises DecodeError naming the field path."""
    obj = msgpack.unpackb(encode(base))
    assert decode(type(base), pack(obj)) == base  # the unbroken encoding is valid
    raw = pack(replaced(obj, path, edit))
    with pytest.raises(DecodeError) as info:
        decode(type(base), raw)
    assert str(info.value).startswith(message), str(info.value)


# Non-shortest forms: every one decodes to the same value as the canonical bytes.
NON_SHORTEST = [
    ("uint64-form-of-1", (*BODY, 2), Raw(b"\xcf" + struct.pack(">Q", 1)), f"{P_BODY}.denom"),
    ("uint8-form-of-5", (0, 2), Raw(b"\xcc\x05"), "SignedTx.tx.nonce"),
    ("uint16-form-of-10", (0, 3), Raw(b"\xcd" + struct.pack(">H", 10)), "SignedTx.tx.fee"),
    ("int8-form-of-5", (0, 2), Raw(b"\xd0\x05"), "SignedTx.tx.nonce"),
    ("uint32-tag", (0, 4, 0), Raw(b"\xce" + struct.pack(">I", 1)), "SignedTx.tx.body"),
    ("bin16-hash", (0, 1), Raw(b"\xc5" + struct.pack(">H", 32) + SENDER), "SignedTx.tx.sender"),
    ("bin32-sig", (1,), Raw(b"\xc6" + struct.pack(">I", 64) + bytes(range(64))),
     "SignedTx.signature"),
    ("array16-record", BODY, Raw(b"\xdc\x00\x03" + b"".join(pack(x) for x in [TO, 7, 1])), P_BODY),
]


@pytest.mark.parametrize(("path", "raw_item"), [row[1:3] for row in NON_SHORTEST],
                         ids=[row[0] for row in NON_SHORTEST])
def test_non_shortest_forms_are_rejected(path: tuple[int, ...], raw_item: Raw) -> None:
    """A value spelled in a longer msgpack form than the shortest is not canonical."""
    obj = msgpack.unpackb(encode(STX))
    raw = pack(replaced(obj, path, _set(raw_item)))
    assert msgpack.unpackb(raw) == obj  # same value, other bytes
    with pytest.raises(DecodeError, match="non-canonical"):
        decode(SignedTx, raw)


@pytest.mark.parametrize(("path", "raw_item", "field"), [row[1:] for row in NON_SHORTEST],
                         ids=[row[0] for row in NON_SHORTEST])
def test_non_shortest_forms_name_their_field(
    path: tuple[int, ...], raw_item: Raw, field: str
) -> None:
    """The DecodeError for a non-shortest form names the field, like every other error."""
    raw = pack(replaced(msgpack.unpackb(encode(STX)), path, _set(raw_item)))
    with pytest.raises(DecodeError) as info:
        decode(SignedTx, raw)
    assert field in str(info.value)


@pytest.mark.parametrize("length", [1, 5, 31])
def test_optional_hash_is_empty_or_32_bytes(length: int) -> None:
    """A vote or commit names a block by a 32-byte hash or by nothing (nil), never 5 bytes."""
    raw = pack(replaced(msgpack.unpackb(encode(VOTE)), (3,), _set(bytes(length))))
    with pytest.raises(DecodeError, match=r"Vote\.block_hash"):
        decode(Vote, raw)
    with pytest.raises(EncodeError):
        encode(dataclasses.replace(COMMIT, block_hash=bytes(length)))


def test_optional_hash_accepts_nil_and_32_bytes() -> None:
    """The two legal optional-hash lengths round-trip."""
    for block_hash in (b"", bytes(range(32))):
        vote = dataclasses.replace(VOTE, block_hash=block_hash)
        assert decode(Vote, encode(vote)) == vote


def test_string_forms_are_rejected_even_when_utf8() -> None:
    """A byte field spelled as a msgpack str (even valid utf-8) is refused."""
    obj = msgpack.unpackb(encode(STX))
    raw = msgpack.packb(replaced(obj, (0, 0), _set("gannet-1")), use_bin_type=True)
    assert msgpack.unpackb(raw, raw=True)[0][0] == b"gannet-1"
    with pytest.raises(DecodeError, match="chain_id: expected bytes, got string"):
        decode(SignedTx, raw)


# --- encode refuses bad values with EncodeError --------------------------------------

TRANSFER = Transfer(to=TO, amount=7, denom=1)

BAD_VALUES = [
    ("negative", dataclasses.replace(TRANSFER, amount=-1)),
    ("u64-overflow", dataclasses.replace(TRANSFER, amount=2**64)),
    ("u8-overflow", dataclasses.replace(TRANSFER, denom=256)),
    ("bool-int", dataclasses.replace(TRANSFER, amount=True)),
    ("float-int", dataclasses.replace(TRANSFER, amount=1.0)),
    ("str-int", dataclasses.replace(TRANSFER, amount="7")),
    ("none-int", dataclasses.replace(TRANSFER, amount=None)),
    ("short-bytes", dataclasses.replace(TRANSFER, to=bytes(19))),
    ("str-bytes", dataclasses.replace(TRANSFER, to="x" * 20)),
    ("bytearray", dataclasses.replace(TRANSFER, to=bytearray(20))),
    ("wrong-variant", dataclasses.replace(STX.tx, body=Lock(amount=1, release_height=1))),
    ("wrong-record", dataclasses.replace(STX, tx=TRANSFER)),
    ("list-not-tuple", dataclasses.replace(BLOCK, txs=[STX])),
    ("list-too-long", dataclasses.replace(ACCOUNT, locks=(Lock(1, 1),) * 257)),
    ("bad-item", dataclasses.replace(BLOCK, txs=(STX, "tx"))),
    ("deep", dataclasses.replace(BLOCK, last_commit=dataclasses.replace(COMMIT, round=-1))),
]


@pytest.mark.parametrize("value", [row[1] for row in BAD_VALUES], ids=[r[0] for r in BAD_VALUES])
def test_encoding_a_bad_value_raises_encode_error(value: Record) -> None:
    """A record holding a value its schema can't encode raises EncodeError, not TypeError."""
    with pytest.raises(EncodeError):
        encode(value)


@pytest.mark.parametrize("value", [5, None, b"\x90", [1], Lock], ids=repr)
def test_encoding_a_non_record_raises_encode_error(value: Any) -> None:
    """encode of something that is not a record is an EncodeError too."""
    with pytest.raises(EncodeError):
        encode(value)



@settings(max_examples=20, deadline=None)
@given(stx=validly_signed_txs(chain_id="gannet-1"))
def test_validly_signed_txs_strategy_verifies(stx: SignedTx) -> None:
    """The shared strategy of correctly signed txs gives txs whose signature verifies."""
    assert verify_tx_signature(stx) and stx.tx.chain_id == b"gannet-1"
    assert decode(SignedTx, encode(stx)) == stx
