"""Canonical msgpack encoding of every consensus and wire record.

Rules (every node must produce and accept exactly the same bytes):
- a record is a msgpack array of its fields in declaration order;
- fields hold only unsigned integers, byte strings, nested records, lists of one
  field kind, or a tagged union encoded as `[tag, record]`; never maps, floats,
  strings, booleans or ext types;
- integers use msgpack's shortest form, so one value has one encoding;
- decoding is strict: a wrong type, wrong arity, oversize field, trailing bytes or
  any non-shortest form raises `DecodeError` naming the offending field path
  (trailing bytes and malformed msgpack name the record).

Records are declared as frozen, slotted dataclasses whose annotations carry the
field kind through `typing.Annotated`, e.g. `height: Annotated[int, U64]`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

from chain.errors import DecodeError, EncodeError

R = TypeVar("R")
MAX_ENCODED_LEN = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UInt:
    """An unsigned integer of at most `bits` bits."""

    bits: int


@dataclass(frozen=True, slots=True)
class Bytes:
    """A byte string whose length lies in [min_len, max_len] (and in `lengths`, if given)."""

    min_len: int
    max_len: int
    lengths: tuple[int, ...] | None = None

    def admits(self, size: int) -> bool:
        """Whether a byte string of `size` bytes fits this kind."""
        if not self.min_len <= size <= self.max_len:
            return False
        return self.lengths is None or size in self.lengths

    def describe(self) -> str:
        """The admitted lengths, for error messages."""
        if self.lengths is not None:
            return " or ".join(str(n) for n in self.lengths)
        if self.min_len == self.max_len:
            return str(self.min_len)
        return f"{self.min_len}..{self.max_len}"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list of at most `max_len` items of one field kind."""

    item: Any
    max_len: int


@dataclass(frozen=True, slots=True)
class OneOf:
    """A tagged union over record classes, encoded as `[tag, record]`."""

    variants: tuple[tuple[int, type], ...]


U8 = UInt(8)
U32 = UInt(32)
U64 = UInt(64)
HASH = Bytes(32, 32)
OPT_HASH = Bytes(0, 32, (0, 32))  # empty means "none" (e.g. a nil vote)
ADDRESS = Bytes(20, 20)
PUBKEY = Bytes(32, 32)
SIGNATURE = Bytes(64, 64)


class Record:
    """Marker base of codec records; `TYPE_TAG` names the record in signing domains."""

    TYPE_TAG: ClassVar[bytes] = b""
    __slots__ = ()


def record(cls: type[R]) -> type[R]:
    """Make `cls` a frozen, slotted dataclass record of the codec."""
    return dataclass(frozen=True, slots=True)(cls)


# Per-class compiled (encoder, decoder) pairs, built lazily so that forward
# references between records of one module resolve.
_compiled: dict[type, tuple[Callable[[Any], list], Callable[[Any, str], Any]]] = {}


def encode(value: Record) -> bytes:
    """The canonical bytes of a record."""
    try:
        obj = _codec_of(type(value))[0](value)
        return msgpack.packb(obj, use_bin_type=True)
    except EncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"{type(value).__name__}: {exc}") from exc


def decode(cls: type[R], data: bytes) -> R:
    """Decode canonical bytes into a record of `cls`, or raise `DecodeError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{cls.__name__}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_ENCODED_LEN:
        raise DecodeError(f"{cls.__name__}: {len(data)} bytes exceeds {MAX_ENCODED_LEN}")
    obj = _unpack(cls.__name__, data)
    value = _codec_of(cls)[1](obj, cls.__name__)
    # The decoder admitted only ints, bytes and arrays, exactly as `encode` emits them,
    # so re-packing the raw tree (in C) reproduces `encode(value)` byte for byte.
    if msgpack.packb(obj, use_bin_type=True) != data:
        path = _non_canonical_path(data, cls) or cls.__name__
        raise DecodeError(f"{path}: non-canonical encoding (not the shortest msgpack form)")
    return value


def _unpack(name: str, data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_reject_ext
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(f"{name}: trailing bytes after the record") from exc
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises ValueError, StackError, UnicodeError, ...
        raise DecodeError(f"{name}: not valid msgpack ({type(exc).__name__}: {exc})") from exc


def _non_canonical_path(data: bytes, cls: type) -> str | None:
    """The path of the first value not spelled in its shortest form (slow; errors only)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
    unpacker.feed(data)
    try:
        return _first_long_form(unpacker, data, cls, cls.__name__)
    except Exception:  # the bytes already decoded once; this is a best-effort diagnosis
        return None


def _first_long_form(unpacker: msgpack.Unpacker, data: bytes, kind: Any, path: str) -> str | None:
    if isinstance(kind, UInt | Bytes):
        start = unpacker.tell()
        value = unpacker.unpack()
        same = data[start:unpacker.tell()] == msgpack.packb(value, use_bin_type=True)
        return None if same else path
    start = unpacker.tell()
    count = unpacker.read_array_header()
    if data[start:unpacker.tell()] != _array_header(count):
        return path
    if isinstance(kind, ListOf):
        children = [(kind.item, f"{path}[{i}]") for i in range(count)]
    elif isinstance(kind, OneOf):
        tag_start = unpacker.tell()
        tag = unpacker.unpack()
        if data[tag_start:unpacker.tell()] != msgpack.packb(tag):
            return path
        variant = dict(kind.variants)[tag]
        children = [(variant, f"{path}<{variant.__name__}>")]
    else:
        hints = typing.get_type_hints(kind, include_extras=True)
        children = [(_kind_of(hints[f.name]), f"{path}.{f.name}")
                    for f in dataclasses.fields(kind)]
    for child_kind, child_path in children:
        found = _first_long_form(unpacker, data, child_kind, child_path)
        if found:
            return found
    return None


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def _codec_of(cls: type) -> tuple[Callable[[Any], list], Callable[[Any, str], Any]]:
    pair = _compiled.get(cls)
    if pair is None:
        pair = _compile_record(cls)
        _compiled[cls] = pair
    return pair


def _compile_record(cls: type) -> tuple[Callable[[Any], list], Callable[[Any, str], Any]]:
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, Record)):
        raise TypeError(f"{cls!r} is not a codec record")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [(f.name, _kind_of(hints[f.name])) for f in dataclasses.fields(cls)]
    names = [name for name, _ in fields]
    encoders = [_encoder(kind) for _, kind in fields]
    decoders = [(name, _decoder(kind)) for name, kind in fields]
    arity = len(fields)
    cls_name = cls.__name__

    def enc(value: Any) -> list:
        if type(value) is not cls:
            raise EncodeError(f"expected {cls_name}, got {type(value).__name__}")
        return [e(getattr(value, n)) for n, e in zip(names, encoders, strict=True)]

    def dec(obj: Any, path: str) -> Any:
        if type(obj) is not list:
            raise DecodeError(f"{path}: expected a {cls_name} array, got {_kind_name(obj)}")
        if len(obj) != arity:
            raise DecodeError(f"{path}: expected {arity} fields for {cls_name}, got {len(obj)}")
        args = [d(item, f"{path}.{n}") for (n, d), item in zip(decoders, obj, strict=True)]
        return cls(*args)

    return enc, dec


def _kind_of(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Annotated:
        return typing.get_args(hint)[1]
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint
    raise TypeError(f"field type {hint!r} has no codec kind")


def _encoder(kind: Any) -> Callable[[Any], Any]:
    if isinstance(kind, UInt):
        return _uint_encoder(kind)
    if isinstance(kind, Bytes):
        return _bytes_encoder(kind)
    if isinstance(kind, ListOf):
        item = _encoder(kind.item)
        limit = kind.max_len

        def enc_list(value: Any) -> list:
            if not isinstance(value, tuple) or len(value) > limit:
                raise EncodeError(f"expected a tuple of at most {limit} items")
            return [item(v) for v in value]

        return enc_list
    if isinstance(kind, OneOf):
        tags = {cls: tag for tag, cls in kind.variants}

        def enc_union(value: Any) -> list:
            tag = tags.get(type(value))
            if tag is None:
                raise EncodeError(f"{type(value).__name__} is not a variant of this union")
            return [tag, _codec_of(type(value))[0](value)]

        return enc_union
    return lambda value: _codec_of(kind)[0](value)


def _uint_encoder(kind: UInt) -> Callable[[Any], int]:
    top = (1 << kind.bits) - 1

    def enc_uint(value: Any) -> int:
        if type(value) is not int or not 0 <= value <= top:
            raise EncodeError(f"expected uint{kind.bits}, got {value!r}")
        return value

    return enc_uint


def _bytes_encoder(kind: Bytes) -> Callable[[Any], bytes]:
    def enc_bytes(value: Any) -> bytes:
        if type(value) is not bytes or not kind.admits(len(value)):
            raise EncodeError(f"expected {kind.describe()} bytes, got {value!r:.80}")
        return value

    return enc_bytes


def _decoder(kind: Any) -> Callable[[Any, str], Any]:
    if isinstance(kind, UInt):
        return _uint_decoder(kind)
    if isinstance(kind, Bytes):
        return _bytes_decoder(kind)
    if isinstance(kind, ListOf):
        return _list_decoder(kind)
    if isinstance(kind, OneOf):
        return _union_decoder(kind)
    return lambda obj, path: _codec_of(kind)[1](obj, path)


def _uint_decoder(kind: UInt) -> Callable[[Any, str], int]:
    top = (1 << kind.bits) - 1

    def dec_uint(obj: Any, path: str) -> int:
        if type(obj) is not int:
            raise DecodeError(f"{path}: expected uint{kind.bits}, got {_kind_name(obj)}")
        if not 0 <= obj <= top:
            raise DecodeError(f"{path}: {obj} is out of range for uint{kind.bits}")
        return obj

    return dec_uint


def _bytes_decoder(kind: Bytes) -> Callable[[Any, str], bytes]:
    def dec_bytes(obj: Any, path: str) -> bytes:
        if type(obj) is not bytes:
            raise DecodeError(f"{path}: expected bytes, got {_kind_name(obj)}")
        if not kind.admits(len(obj)):
            raise DecodeError(f"{path}: expected {kind.describe()} bytes, got {len(obj)}")
        return obj

    return dec_bytes


def _list_decoder(kind: ListOf) -> Callable[[Any, str], tuple]:
    item = _decoder(kind.item)

    def dec_list(obj: Any, path: str) -> tuple:
        if type(obj) is not list:
            raise DecodeError(f"{path}: expected a list, got {_kind_name(obj)}")
        if len(obj) > kind.max_len:
            raise DecodeError(f"{path}: {len(obj)} items exceeds the limit of {kind.max_len}")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(obj))

    return dec_list


def _union_decoder(kind: OneOf) -> Callable[[Any, str], Any]:
    variants = dict(kind.variants)

    def dec_union(obj: Any, path: str) -> Any:
        if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not int:
            raise DecodeError(f"{path}: expected [tag, body], got {_kind_name(obj)}")
        cls = variants.get(obj[0])
        if cls is None:
            raise DecodeError(f"{path}: unknown variant tag {obj[0]}")
        return _codec_of(cls)[1](obj[1], f"{path}<{cls.__name__}>")

    return dec_union


def _kind_name(obj: Any) -> str:
    names = {list: "array", dict: "map", str: "string", bytes: "bytes", bool: "boolean",
             float: "float", int: "integer", type(None): "nil"}
    return names.get(type(obj), type(obj).__name__)
