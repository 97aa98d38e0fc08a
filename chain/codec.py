"""Canonical msgpack encoding of every consensus and wire record.

Rules (every node must produce and accept exactly the same bytes):
- a record is a msgpack array of its fields in declaration order;
- fields hold only unsigned integers, byte strings, nested records, lists of one
  field kind, or a tagged union encoded as `[tag, record]`; never maps, floats,
  strings, booleans or ext types;
- integers use msgpack's shortest form, so one value has one encoding;
- decoding is strict: a wrong type, wrong arity, oversize field, trailing bytes or
  any non-shortest form raises `DecodeError` naming the offending field path.

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
    """A byte string whose length lies in [min_len, max_len]."""

    min_len: int
    max_len: int


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
OPT_HASH = Bytes(0, 32)  # empty means "none" (e.g. a nil vote); length is checked below
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
    if encode(value) != data:
        raise DecodeError(f"{cls.__name__}: non-canonical encoding")
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
        if type(value) is not bytes or not kind.min_len <= len(value) <= kind.max_len:
            raise EncodeError(f"expected {kind.min_len}..{kind.max_len} bytes, got {value!r:.80}")
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
        if not kind.min_len <= len(obj) <= kind.max_len:
            want = (
                f"{kind.min_len}" if kind.min_len == kind.max_len
                else f"{kind.min_len}..{kind.max_len}"
            )
            raise DecodeError(f"{path}: expected {want} bytes, got {len(obj)}")
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
