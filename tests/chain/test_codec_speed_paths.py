"""The fast paths behind the codec, Merkle root and signing bytes agree with the readable ones.

`chain.codec` encodes and decodes through generated per-record functions and falls
back to its readable per-field path on anything unusual; `_reference_encode` and
`_reference_decode` are that readable path alone. Here both run on every record
class (the protocol's, and a few test records with the kinds it does not use yet):
on valid values, on values, trees and bytes broken at random, and on every node of
a typical record set to each value just off (or on) the edge of its kind. They must
give the same bytes, the same records, or the same error message. The generated
functions are also checked on their own: they accept exactly what the readable
path accepts, so the fast path is really taken, and accept nothing more.

`merkle_root` (bottom-up) is checked against the recursive RFC 6962 definition and
`sign_bytes` (cached domain prefix) against the plain formula, errors included.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import pickle
import threading
import typing
from collections.abc import Callable
from typing import Annotated, Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import codec, crypto
from chain.codec import (
    HASH,
    U8,
    U32,
    U64,
    Bytes,
    ListOf,
    OneOf,
    Record,
    UInt,
    decode,
    encode,
    record,
)
from chain.crypto import CryptoError, sign_bytes
from chain.errors import DecodeError, EncodeError
from chain.hashing import merkle_root
from chain.records import Lock, Transfer
from tests.strategies import field_kinds, record_classes, records

# --- records with field kinds the protocol does not use (yet) ---------------------------


@record
class Mixed(Record):
    """Lists of scalars, of byte strings and of lists, and a union of two variants."""

    small: Annotated[tuple[int, ...], ListOf(U8, 3)]
    blobs: Annotated[tuple[bytes, ...], ListOf(Bytes(0, 4, (0, 2, 4)), 3)]
    grid: Annotated[tuple[tuple[int, ...], ...], ListOf(ListOf(U32, 2), 2)]
    pick: Annotated[Lock | Transfer, OneOf(((1, Lock), (7, Transfer)))]


@record
class Tree(Record):
    """A recursive record: the generated code calls itself."""

    label: Annotated[int, U64]
    children: Annotated[tuple[Tree, ...], ListOf(Tree, 3)]


@record
class Ordered(Record):
    """A record whose `__post_init__` validates: it is built by `cls(*fields)`."""

    low: Annotated[int, U64]
    high: Annotated[int, U64]

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low {self.low} above high {self.high}")


@record
class Masked(Record):
    """A record with its own `__init__`, which changes what it stores: built by `cls(*fields)`."""

    value: Annotated[int, U64]

    def __init__(self, value: int) -> None:
        object.__setattr__(self, "value", value & 0xFF if type(value) is int else value)


@record
class Empty(Record):
    """A record of no fields: the empty array."""


@record
class Base(Record):
    """The parent of an inherited record."""

    a: Annotated[int, U8]


@record
class Derived(Base):
    """An inherited record (fields of two classes): built by `cls(*fields)`."""

    b: Annotated[bytes, HASH]


trees = st.deferred(lambda: st.builds(
    Tree, label=st.integers(0, 2**64 - 1), children=st.lists(trees, max_size=2).map(tuple)))
ordered = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map(
    lambda pair: Ordered(*sorted(pair)))
EXTRA = {Mixed: records(Mixed), Tree: trees, Ordered: ordered, Masked: records(Masked),
         Empty: st.just(Empty()), Derived: records(Derived)}

CLASSES = record_classes() + list(EXTRA)
IDS = [cls.__name__ for cls in CLASSES]
CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def values_of(cls: type) -> st.SearchStrategy[Any]:
    return EXTRA[cls] if cls in EXTRA else records(cls)


# --- how to break a value or its encoding -------------------------------------------------

BOUNDARY_INTS = [0, 1, 2, 7, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32,
                 2**63 - 1, 2**63, 2**64 - 1, -1, -32, -33, -(2**63)]
BOUNDARY_LENGTHS = [0, 1, 2, 4, 19, 20, 21, 31, 32, 33, 63, 64, 65, 256, 257]

msgpack_scalars = (
    st.none() | st.booleans() | st.sampled_from(BOUNDARY_INTS)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.sampled_from(BOUNDARY_LENGTHS).map(bytes) | st.binary(max_size=40)
    | st.text(max_size=4)
)
msgpack_junk = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=8,
)


class TupleSub(tuple):
    """A tuple subclass: the readable encoder accepts it, the fast one leaves it to it."""

    __slots__ = ()


python_junk = (
    msgpack_junk
    | st.sampled_from(BOUNDARY_LENGTHS).map(bytearray)
    | st.sampled_from([(), (1,), [], [1], TupleSub(), TupleSub((Lock(1, 2),)), object()])
    | st.sampled_from([Lock(amount=1, release_height=2), Transfer(to=bytes(20), amount=1,
                                                                  denom=0)])
)


def tree_paths(obj: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in a nested list, the root included."""
    found = [prefix]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            found.extend(tree_paths(item, (*prefix, i)))
    return found


def tree_replaced(obj: Any, path: tuple[int, ...], edit: Callable[[Any], Any]) -> Any:
    """A copy of a nested list with the item at `path` replaced by edit(item)."""
    if not path:
        return edit(obj)
    out = list(obj)
    out[path[0]] = tree_replaced(obj[path[0]], path[1:], edit)
    return out


def value_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field of a record value and item of its tuples, the value itself included."""
    found = [prefix]
    if isinstance(value, Record):
        for field in dataclasses.fields(value):
            found.extend(value_paths(getattr(value, field.name), (*prefix, field.name)))
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            found.extend(value_paths(item, (*prefix, i)))
    return found


def items_of(value: Any) -> list[Any]:
    """A record value, its fields and their tuples' items, all the way down."""
    found = [value]
    if isinstance(value, Record):
        for field in dataclasses.fields(value):
            found.extend(items_of(getattr(value, field.name)))
    elif isinstance(value, tuple):
        for item in value:
            found.extend(items_of(item))
    return found


def value_replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of a record value with the field or tuple item at `path` set to `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, str):
        return dataclasses.replace(value, **{head: value_replaced(getattr(value, head), rest, new)})
    return (*value[:head], value_replaced(value[head], rest, new), *value[head + 1:])


@st.composite
def broken_trees(draw: st.DrawFn, cls: type) -> bytes:
    """The encoding of a valid record with one node of its msgpack tree changed."""
    obj = msgpack.unpackb(encode(draw(values_of(cls))))
    path = draw(st.sampled_from(tree_paths(obj)))
    junk = draw(msgpack_junk)
    edits: list[Callable[[Any], Any]] = [lambda _: junk]
    node = obj
    for i in path:
        node = node[i]
    if isinstance(node, list):
        length = draw(st.sampled_from([15, 16, 17, 256, 257]))
        edits += [lambda item: item[:-1], lambda item: [*item, junk],
                  lambda item: (item * length)[:length] if item else [junk] * length]
    edit = draw(st.sampled_from(edits))
    return msgpack.packb(tree_replaced(obj, path, edit), use_bin_type=True)


@st.composite
def broken_bytes(draw: st.DrawFn, cls: type) -> bytes:
    """The encoding of a valid record with a byte changed, inserted, deleted or cut off."""
    raw = encode(draw(values_of(cls)))
    pos = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    byte = draw(st.integers(min_value=0, max_value=255))
    return draw(st.sampled_from([
        raw[:pos] + bytes([byte]) + raw[pos + 1:],
        raw[:pos] + bytes([byte]) + raw[pos:],
        raw[:pos] + raw[pos + 1:],
        raw[:pos],
        raw + bytes([byte]),
    ]))


# --- comparing outcomes --------------------------------------------------------------------

DECLINED = object()


def outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """('ok', result, its type) or (error type, message) for the errors either path raises."""
    try:
        result = function(*args)
    except (DecodeError, EncodeError, ValueError) as exc:
        return (type(exc), str(exc))
    return ("ok", result, type(result))


def fast_encoder(cls: type) -> Callable[[Any], Any]:
    return codec._fast_codec(cls)[0]


def fast_decoder(cls: type) -> Callable[[Any], Any]:
    return codec._fast_codec(cls)[1]


def readable_tree(value: Any) -> Any:
    """The msgpack tree the readable encoder builds, or DECLINED."""
    try:
        return codec._codec_of(type(value))[0](value)
    except (EncodeError, TypeError):
        return DECLINED


def assert_same_records(a: Any, b: Any) -> None:
    """Equal values whose nested records are of the very same classes."""
    assert a == b and type(a) is type(b)
    if isinstance(a, Record):
        for field in dataclasses.fields(a):
            assert_same_records(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            assert_same_records(x, y)


def assert_decoders_agree(cls: type, raw: bytes) -> None:
    """decode and the readable decode agree; the generated decoder accepts what it accepts."""
    fast, slow = outcome(decode, cls, raw), outcome(codec._reference_decode, cls, raw)
    assert fast == slow
    if fast[0] == "ok":
        assert_same_records(fast[1], slow[1])
    try:
        obj = msgpack.unpackb(raw, raw=False, ext_hook=lambda code, data: DECLINED)
    except Exception:
        return  # not one msgpack value: both refused it above
    try:
        generated = fast_decoder(cls)(obj)
    except Exception:
        generated = DECLINED
    try:
        readable = codec._codec_of(cls)[1](obj, cls.__name__)
    except (DecodeError, ValueError):
        readable = DECLINED
    assert (generated is DECLINED) == (readable is DECLINED)
    if generated is not DECLINED:
        assert_same_records(generated, readable)


def assert_encoders_agree(value: Any) -> None:
    """encode and the readable encode agree; the generated encoder takes what it takes."""
    assert outcome(encode, value) == outcome(codec._reference_encode, value)
    try:
        generated = fast_encoder(type(value))(value)
    except Exception:
        generated = DECLINED
    readable = readable_tree(value)
    if generated is not DECLINED:
        assert generated == readable  # the fast encoder never accepts more
    elif readable is not DECLINED:  # the one kind of value it leaves to the other:
        assert any(isinstance(item, TupleSub) for item in items_of(value))


# --- the codec --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@CHECKS
@given(data=st.data())
def test_valid_records_take_the_fast_path_to_the_same_bytes_and_back(
    cls: type, data: st.DataObject
) -> None:
    """Generated encoder and decoder give the readable path's tree, bytes and record."""
    value = data.draw(values_of(cls))
    tree = fast_encoder(cls)(value)
    assert tree == readable_tree(value)
    raw = encode(value)
    assert raw == codec._reference_encode(value) == msgpack.packb(tree, use_bin_type=True)
    decoded = fast_decoder(cls)(msgpack.unpackb(raw))
    assert_same_records(decoded, value)
    assert_same_records(decode(cls, raw), codec._reference_decode(cls, raw))
    assert_same_records(decode(cls, raw), value)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@CHECKS
@given(data=st.data())
def test_decoders_agree_on_broken_trees(cls: type, data: st.DataObject) -> None:
    """A node swapped for junk, a list shortened, lengthened or grown past a limit."""
    assert_decoders_agree(cls, data.draw(broken_trees(cls)))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@CHECKS
@given(data=st.data())
def test_decoders_agree_on_broken_bytes(cls: type, data: st.DataObject) -> None:
    """A byte changed, inserted or deleted, a cut, a trailing byte: same record or message."""
    assert_decoders_agree(cls, data.draw(broken_bytes(cls)))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@CHECKS
@given(data=st.data())
def test_decoders_agree_on_random_bytes(cls: type, data: st.DataObject) -> None:
    """Arbitrary bytes: same record or the same message from both decoders."""
    assert_decoders_agree(cls, data.draw(st.binary(max_size=120)))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@CHECKS
@given(data=st.data())
def test_encoders_agree_on_broken_values(cls: type, data: st.DataObject) -> None:
    """A field or item set to any Python value: same bytes or the same EncodeError message."""
    value = data.draw(values_of(cls))
    path = data.draw(st.sampled_from(value_paths(value)))
    try:
        broken = value_replaced(value, path, data.draw(python_junk))
    except (ValueError, TypeError):  # Ordered's __post_init__ refused the change
        return
    assert_encoders_agree(broken)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_decoded_records_are_ordinary_instances(cls: type, data: st.DataObject) -> None:
    """Frozen, hashable, comparable, copyable, picklable: as if built by the constructor."""
    value = data.draw(values_of(cls))
    decoded = decode(cls, encode(value))
    assert_same_records(decoded, value)
    assert hash(decoded) == hash(value) and repr(decoded) == repr(value)
    for field in dataclasses.fields(decoded):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(decoded, field.name, 1)
    assert_same_records(dataclasses.replace(decoded), value)
    assert_same_records(copy.deepcopy(decoded), value)
    assert_same_records(pickle.loads(pickle.dumps(decoded)), value)


def test_post_init_errors_surface_unchanged() -> None:
    """A record whose `__post_init__` refuses decoded fields raises what the readable path does."""
    raw = msgpack.packb([9, 3])
    with pytest.raises(ValueError, match="low 9 above high 3") as fast:
        decode(Ordered, raw)
    with pytest.raises(ValueError) as slow:
        codec._reference_decode(Ordered, raw)
    assert str(fast.value) == str(slow.value)


def test_non_records_fail_as_before() -> None:
    """Encoding a non-record and decoding into a non-record fail as the readable path does."""
    for junk in (5, None, b"\x90", [1], Lock):
        assert outcome(encode, junk) == outcome(codec._reference_encode, junk)
        assert outcome(encode, junk)[0] is EncodeError
    for junk_cls in (int, dict):
        with pytest.raises(TypeError, match="is not a codec record"):
            decode(junk_cls, b"\x90")


def test_first_use_from_many_threads() -> None:
    """Threads that meet a record class at the same time all get the one generated codec."""

    @record
    class Fresh(Record):
        height: Annotated[int, U64]
        locks: Annotated[tuple[Lock, ...], ListOf(Lock, 4)]

    value = Fresh(height=5, locks=(Lock(amount=1, release_height=2),))
    raw = codec._reference_encode(value)
    barrier = threading.Barrier(8)
    results: list[tuple[bytes, Any]] = []

    def work() -> None:
        barrier.wait()
        results.append((encode(value), decode(Fresh, raw)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(raw, value)] * 8
    assert fast_decoder(Fresh)(msgpack.unpackb(raw)) == value


# --- near misses: every node of a typical record, each set to values just off its kind ---


def sample(kind: Any, variant: int, depth: int = 0) -> Any:
    """A valid value of `kind`: lists of two items (none below depth 2), union variant
    number `variant` (modulo their count), byte strings of a long admitted length."""
    if isinstance(kind, UInt):
        return min(3 + variant, (1 << kind.bits) - 1)
    if isinstance(kind, Bytes):
        longest = min(kind.max_len, max(kind.min_len, 40))
        size = max(n for n in range(kind.min_len, longest + 1) if kind.admits(n))
        return bytes(range(size))
    if isinstance(kind, ListOf):
        count = 0 if depth >= 2 else min(2, kind.max_len)
        return tuple(sample(kind.item, variant + i, depth + 1) for i in range(count))
    if isinstance(kind, OneOf):
        return sample(kind.variants[variant % len(kind.variants)][1], variant, depth + 1)
    return kind(**{name: sample(k, variant, depth + 1) for name, k in field_kinds(kind)})


def schema_nodes(node: Any, kind: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """(path, kind, node) of every node of a valid value or tree, the root included.

    Paths step through record fields by name in a value and by index in a tree.
    """
    found = [(path, kind, node)]
    in_tree = isinstance(node, list)
    if isinstance(kind, ListOf):
        for i, item in enumerate(node):
            found += schema_nodes(item, kind.item, (*path, i))
    elif isinstance(kind, OneOf):
        body, cls = (node[1], dict(kind.variants)[node[0]]) if in_tree else (node, type(node))
        found += schema_nodes(body, cls, (*path, 1) if in_tree else path)[int(not in_tree):]
    elif isinstance(kind, type):
        for i, (name, field_kind) in enumerate(field_kinds(kind)):
            child = node[i] if in_tree else getattr(node, name)
            found += schema_nodes(child, field_kind, (*path, i if in_tree else name))
    return found


def boundary_sizes(kind: Bytes) -> list[int]:
    edges = {0, 1, kind.min_len, kind.max_len, *(kind.lengths or ())}
    return sorted({n + d for n in edges for d in (-1, 0, 1) if 0 <= n + d <= 300})


def tree_misses(kind: Any, node: Any) -> list[Any]:
    """msgpack values just off `kind` (or just inside it), to put where `node` was."""
    misses: list[Any] = [None, True, False, 1.0, "x", {}, [], b""]
    if isinstance(kind, UInt):
        top = (1 << kind.bits) - 1
        misses += [0, top, -1, -(2**63), 2**64 - 1] + ([top + 1] if top < 2**64 - 1 else [])
    elif isinstance(kind, Bytes):
        misses += [bytes(n) for n in boundary_sizes(kind)] + ["x" * kind.min_len]
    elif isinstance(kind, ListOf):
        misses += [node[:-1], node + node[:1], bytes(len(node)), dict.fromkeys("ab", 0)]
        if node and kind.max_len <= 300:
            misses += [node[:1] * kind.max_len, node[:1] * (kind.max_len + 1)]
    elif isinstance(kind, OneOf):
        tags = [tag for tag, _ in kind.variants]
        misses += [[tag, node[1]] for tag in [*tags, True, False, 1.0, -1, 0, max(tags) + 1]]
        misses += [node[:1], [*node, 0], node[::-1], bytes(2), "ab"]
        misses += [[tag, msgpack.unpackb(codec._reference_encode(sample(cls, 0)))]
                   for tag, cls in kind.variants]
    else:
        arity = len(node)
        misses += [bytes(arity), "x" * arity, {str(i): 0 for i in range(arity)}, node[:-1],
                   [*node, 0], [node]]
        misses += [msgpack.unpackb(codec._reference_encode(sample(other, 0)))
                   for other in CLASSES if len(field_kinds(other)) == arity]
    return misses


class IntSub(int):
    """An int subclass: neither encoder takes it for an integer field."""


@functools.cache
def alike_class(cls: type) -> type:
    """A record class with the fields of `cls`: neither encoder takes it for one of those."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [(field.name, hints[field.name]) for field in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"{cls.__name__}Alike", fields, bases=(Record,),
                                      frozen=True, slots=True)


def alike(value: Any) -> Any:
    fields = dataclasses.fields(value)
    return alike_class(type(value))(**{f.name: getattr(value, f.name) for f in fields})


def value_misses(kind: Any, value: Any) -> list[Any]:
    """Python values just off `kind` (or just inside it), to put where `value` was."""
    misses: list[Any] = [None, 1.0, "x", object(), Lock(amount=1, release_height=2)]
    if isinstance(kind, UInt):
        top = (1 << kind.bits) - 1
        misses += [0, top, top + 1, -1, True, False, IntSub(1)]
    elif isinstance(kind, Bytes):
        size = max(kind.min_len, 1)
        misses += [bytes(n) for n in boundary_sizes(kind)]
        misses += [bytearray(size), memoryview(bytes(size)), Blob(size), "x" * size]
    elif isinstance(kind, ListOf):
        misses += [list(value), TupleSub(value), value[:-1], value + value[:1], ()]
        if value and kind.max_len <= 300:
            misses += [value[:1] * kind.max_len, value[:1] * (kind.max_len + 1)]
    else:
        variants = [cls for _, cls in kind.variants] if isinstance(kind, OneOf) else [kind]
        misses += [alike(value), tuple(getattr(value, f.name) for f in dataclasses.fields(value))]
        misses += [sample(cls, 0) for cls in CLASSES if cls not in variants][:3]
        misses += [sample(cls, 0) for cls in variants]
    return misses


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_decoders_agree_on_near_miss_trees(cls: type, variant: int) -> None:
    """Every node of a typical record's tree set to each value just off (or on) its kind."""
    tree = msgpack.unpackb(encode(sample(cls, variant)))
    for path, kind, node in schema_nodes(tree, cls):
        for miss in tree_misses(kind, node):
            assert_decoders_agree(cls, msgpack.packb(
                tree_replaced(tree, path, lambda _, miss=miss: miss), use_bin_type=True))


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_encoders_agree_on_near_miss_values(cls: type, variant: int) -> None:
    """Every field or item of a typical record set to each value just off (or on) its kind."""
    value = sample(cls, variant)
    for path, kind, node in schema_nodes(value, cls):
        for miss in value_misses(kind, node):
            try:
                broken = value_replaced(value, path, miss)
            except (ValueError, TypeError):  # Ordered's __post_init__ refused it
                continue
            assert_encoders_agree(broken)


# --- merkle_root ---------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def recursive_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH as written there: split at the largest power of two below n."""
    if not leaves:
        return bytes(32)

    def mth(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        split = 1 << ((len(hashes) - 1).bit_length() - 1)
        return _h(b"\x01" + mth(hashes[:split]) + mth(hashes[split:]))

    return mth([_h(b"\x00" + leaf) for leaf in leaves])


LEAVES = [i.to_bytes(4, "big") * (i % 5) for i in range(5000)]


def test_merkle_root_is_the_recursive_rfc6962_root() -> None:
    """The bottom-up root equals the split-at-a-power-of-two root for every count."""
    for count in [*range(301), 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 5000]:
        assert merkle_root(LEAVES[:count]) == recursive_root(LEAVES[:count]), count


@given(st.lists(st.binary(max_size=40), max_size=70))
def test_merkle_root_of_any_leaves(leaves: list[bytes]) -> None:
    """Any leaves, empty ones included: the same root as the recursive definition."""
    assert merkle_root(leaves) == recursive_root(leaves)


# --- sign_bytes ----------------------------------------------------------------------------


def plain_sign_bytes(chain_id: Any, type_tag: Any, body: Any) -> bytes:
    """sign_bytes as its docstring writes it, validated by the same helpers."""
    chain = crypto._validated_chain_id(chain_id)
    tag = crypto._validated_type_tag(type_tag)
    if not isinstance(body, bytes | bytearray):
        raise CryptoError(f"body must be bytes, got {type(body).__name__}")
    return _h(bytes([len(chain)]) + chain + bytes([len(tag)]) + tag + bytes(body))


def signing_outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", function(*args))
    except (CryptoError, UnicodeError) as exc:
        return (type(exc), str(exc))


class Str(str):
    """A str subclass: equal to its str, so it must not change what the cache holds."""


class Blob(bytes):
    """A bytes subclass."""


SIGNING_CASES = [
    ("gannet-1", b"tx", b"body"),
    ("gannet-1", b"vote", b""),
    ("é" * 32, b"x" * 32, bytearray(b"b")),
    (Str("gannet-1"), Blob(b"tx"), Blob(b"body")),
    ("gannet-1", bytearray(b"tx"), b"body"),
    ("", b"tx", b"body"),
    ("é" * 33, b"tx", b"body"),
    ("x" * 65, b"tx", b"body"),
    (b"gannet-1", b"tx", b"body"),
    (None, b"tx", b"body"),
    ("gannet-1", b"", b"body"),
    ("gannet-1", b"t" * 33, b"body"),
    ("gannet-1", "tx", b"body"),
    ("gannet-1", memoryview(b"tx"), b"body"),
    ("gannet-1", b"tx", "body"),
    ("gannet-1", b"tx", memoryview(b"body")),
    ("gannet-1", b"tx", None),
    ("\ud800", b"tx", b"body"),
]


@pytest.mark.parametrize("args", SIGNING_CASES, ids=[
    f"{i}-" + "-".join(type(arg).__name__ for arg in case) for i, case in enumerate(SIGNING_CASES)])
def test_sign_bytes_matches_the_plain_formula(args: tuple[Any, Any, Any]) -> None:
    """The same digest or the same error, on the first call and on a cached one."""
    expected = signing_outcome(plain_sign_bytes, *args)
    for _ in range(2):
        assert signing_outcome(sign_bytes, *args) == expected


@given(chain_id=st.text(min_size=0, max_size=70), tag=st.binary(max_size=34),
       body=st.binary(max_size=64))
def test_sign_bytes_of_any_domain(chain_id: str, tag: bytes, body: bytes) -> None:
    """Any chain id, tag and body: the plain formula's digest or error."""
    expected = signing_outcome(plain_sign_bytes, chain_id, tag, body)
    assert signing_outcome(sign_bytes, chain_id, tag, body) == expected
    assert signing_outcome(sign_bytes, chain_id, tag, body) == expected
