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

Every record is encoded and decoded by functions generated for its class (see "fast
path" below); anything they do not take goes through the readable per-field path,
which words every error.
"""

from __future__ import annotations

import dataclasses
import threading
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
        return _pack((_FAST_ENCODERS.get(type(value)) or _fast_codec(type(value))[0])(value))
    except Exception:  # anything unusual: the readable encoder encodes it or names the problem
        pass
    return _reference_encode(value)


def decode(cls: type[R], data: bytes) -> R:
    """Decode canonical bytes into a record of `cls`, or raise `DecodeError`."""
    if type(data) is not bytes:
        data = _as_bytes(cls, data)
    if len(data) > MAX_ENCODED_LEN:
        raise DecodeError(f"{cls.__name__}: {len(data)} bytes exceeds {MAX_ENCODED_LEN}")
    obj = _unpack(cls.__name__, data)
    try:
        value = (_FAST_DECODERS.get(cls) or _fast_codec(cls)[1])(obj)
    except Exception:  # anything unusual: the readable decoder decodes it or names the field
        value = None
    if value is None:
        value = _codec_of(cls)[1](obj, cls.__name__)
    # The decoder admitted only ints, bytes and arrays, exactly as `encode` emits them,
    # so re-packing the raw tree (in C) reproduces `encode(value)` byte for byte.
    if _pack(obj, len(data)) != data:
        raise _non_canonical(cls, data)
    return value


def _reference_encode(value: Record) -> bytes:
    """`encode` by the readable per-field encoders alone (the fast path's reference)."""
    try:
        obj = _codec_of(type(value))[0](value)
        return msgpack.packb(obj, use_bin_type=True)
    except EncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"{type(value).__name__}: {exc}") from exc


def _reference_decode(cls: type[R], data: bytes) -> R:
    """`decode` by the readable per-field decoders alone (the fast path's reference)."""
    if type(data) is not bytes:
        data = _as_bytes(cls, data)
    if len(data) > MAX_ENCODED_LEN:
        raise DecodeError(f"{cls.__name__}: {len(data)} bytes exceeds {MAX_ENCODED_LEN}")
    obj = _unpack(cls.__name__, data)
    value = _codec_of(cls)[1](obj, cls.__name__)
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise _non_canonical(cls, data)
    return value


def _as_bytes(cls: type, data: Any) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{cls.__name__}: expected bytes, got {type(data).__name__}")
    return bytes(data)


def _pack(obj: Any, size_hint: int = 1024) -> bytes:
    """msgpack.packb(obj, use_bin_type=True), less packb's 256 KiB buffer per call."""
    return msgpack.Packer(use_bin_type=True, buf_size=size_hint).pack(obj)


def _non_canonical(cls: type, data: bytes) -> DecodeError:
    path = _non_canonical_path(data, cls) or cls.__name__
    return DecodeError(f"{path}: non-canonical encoding (not the shortest msgpack form)")


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


# --- fast path ----------------------------------------------------------------------
#
# The readable encoders and decoders above walk a record through one closure per
# field. For speed, each record class also gets one encoder and one decoder whose
# Python source is generated from its field kinds (as `dataclasses` generates
# `__init__`), with every check inline. They accept exactly the values the readable
# path accepts, or fewer: on anything unusual they raise `_Mismatch` (or whatever
# Python raises), and `encode`/`decode` rerun the readable path, which encodes the
# value or raises its precise error. tests/chain/test_codec_speed_paths.py holds
# the two paths to the same outputs.


class _Mismatch(Exception):
    """The fast path declines a value; the readable path decides."""


_FAST_ENCODERS: dict[type, Callable[[Any], list]] = {}
_FAST_DECODERS: dict[type, Callable[[Any], Any]] = {}
_fast_namespace: dict[str, Any] = {"_Mismatch": _Mismatch}
_fast_symbols: dict[type, str] = {}
_fast_lock = threading.Lock()


def _fast_codec(cls: type) -> tuple[Callable[[Any], list], Callable[[Any], Any]]:
    """The generated (encoder, decoder) of a record class, built on first use."""
    if cls not in _FAST_DECODERS:
        with _fast_lock:
            built: list[type] = []
            _define_fast(cls, built)
            for done in built:  # published once every record they call is defined
                _FAST_ENCODERS[done] = _fast_namespace[f"enc_{_fast_symbols[done]}"]
                _FAST_DECODERS[done] = _fast_namespace[f"dec_{_fast_symbols[done]}"]
    return _FAST_ENCODERS[cls], _FAST_DECODERS[cls]


def _define_fast(cls: type, built: list[type]) -> None:
    """Generate the functions of `cls` and of every record it refers to, once each."""
    if cls in _FAST_DECODERS or cls in built:
        return
    _codec_of(cls)  # the readable codec validates the class and its field kinds
    source = _FastSource()
    source.encoder(cls)
    source.decoder(cls)
    code = compile(source.text(), f"<codec fast path of {cls.__qualname__}>", "exec")
    exec(code, _fast_namespace)
    built.append(cls)
    for other in source.records:
        _define_fast(other, built)


def _fast_symbol(cls: type) -> str:
    """The name under which generated code sees a record class."""
    symbol = _fast_symbols.get(cls)
    if symbol is None:
        symbol = _fast_symbols[cls] = f"R{len(_fast_symbols)}"
        _fast_namespace[symbol] = cls
    return symbol


def _twin_of(cls: type) -> type | None:
    """A mutable class with the slot layout of record `cls`, or None where `cls` has none.

    The fast decoder fills a twin's slots by plain attribute stores and then makes the
    object an instance of `cls` (`obj.__class__ = cls`, which CPython permits between
    classes of one layout). The result is an ordinary, fully built `cls`, made without
    `__init__`'s frozen `object.__setattr__` per field. Only for a record whose
    constructor does nothing else: its own slots are all its fields, its `__init__`
    is the one `dataclasses` generates (compiled from a string), no `__new__` or
    `__post_init__`, and `cls(*values)` stores exactly `values`.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))
    init_code = getattr(cls.__init__, "__code__", None)
    if not (cls.__bases__ == (Record,) and cls.__new__ is object.__new__
            and init_code is not None and init_code.co_filename == "<string>"
            and not hasattr(cls, "__post_init__")
            and tuple(cls.__dict__.get("__slots__", ())) == names):
        return None
    values = [object() for _ in names]
    try:
        built = cls(*values)
        twin = type(f"{cls.__name__}Slots", (Record,), {"__slots__": names})
        twin().__class__ = cls
    except Exception:  # a constructor with its own ideas, or a layout CPython won't swap
        return None
    stored = [getattr(built, name) for name in names]
    return twin if all(a is b for a, b in zip(stored, values, strict=True)) else None


class _FastSource:
    """Python source of one record's fast encoder and decoder, written a line at a time.

    A nested record is written inline, up to `INLINE_DEPTH` records deep; deeper ones,
    list items and recursive records are calls to their own generated functions.
    """

    INLINE_DEPTH = 4

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.records: list[type] = []  # the records the generated code calls
        self._temps = 0

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def encoder(self, cls: type) -> None:
        """`enc_R(v)`: the msgpack tree of record `v`, as the readable encoder builds it."""
        self.lines.append(f"def enc_{_fast_symbol(cls)}(v):")
        self._encode_record(cls, "v", "    ", (cls,))
        self.lines.append("    return v")

    def decoder(self, cls: type) -> None:
        """`dec_R(o)`: the record of msgpack tree `o`, as the readable decoder builds it."""
        self.lines.append(f"def dec_{_fast_symbol(cls)}(o):")
        self._decode_record(cls, "o", "    ", (cls,))
        self.lines.append("    return o")

    def _encode_record(self, cls: type, var: str, pad: str, chain: tuple[type, ...],
                       checked: bool = False) -> None:
        if not checked:  # a union's branch has already checked the class
            self.lines.append(f"{pad}if type({var}) is not {_fast_symbol(cls)}: raise _Mismatch")
        items = []
        for name, kind in _fields_of(cls):
            items.append(self._temp())
            self.lines.append(f"{pad}{items[-1]} = {var}.{name}")
            self._encode(kind, items[-1], pad, chain)
        self.lines.append(f"{pad}{var} = [{', '.join(items)}]")

    def _decode_record(self, cls: type, var: str, pad: str, chain: tuple[type, ...]) -> None:
        fields = _fields_of(cls)
        items = [self._temp() for _ in fields]
        # Unpacking a list into exactly its names also checks its length.
        self.lines += [f"{pad}if type({var}) is not list: raise _Mismatch",
                       f"{pad}{', '.join(items)}, = {var}" if items else
                       f"{pad}if {var}: raise _Mismatch"]
        for item, (_, kind) in zip(items, fields, strict=True):
            self._decode(kind, item, pad, chain)
        symbol = _fast_symbol(cls)
        twin = f"{symbol}_twin"
        if twin not in _fast_namespace:
            _fast_namespace[twin] = _twin_of(cls)
        if _fast_namespace[twin] is None:
            self.lines.append(f"{pad}{var} = {symbol}({', '.join(items)})")
            return
        self.lines.append(f"{pad}{var} = {twin}()")
        self.lines += [f"{pad}{var}.{name} = {item}"
                       for item, (name, _) in zip(items, fields, strict=True)]
        self.lines.append(f"{pad}{var}.__class__ = {symbol}")

    def _encode(self, kind: Any, var: str, pad: str, chain: tuple[type, ...]) -> None:
        """Lines that check `var` against `kind` and rebind it to its msgpack tree."""
        if self._check_scalar(kind, var, pad):
            return
        if isinstance(kind, ListOf):
            self.lines.append(f"{pad}if type({var}) is not tuple or len({var}) > {kind.max_len}:"
                              " raise _Mismatch")
            self._map(kind.item, var, pad, "enc", "list", chain)
        elif isinstance(kind, OneOf):
            tags = {cls: tag for tag, cls in kind.variants}
            for i, (cls, tag) in enumerate(tags.items()):
                self.lines.append(f"{pad}{'el' if i else ''}if type({var}) is {_fast_symbol(cls)}:")
                self._nested(cls, var, pad + "    ", "enc", chain, checked=True)
                self.lines.append(f"{pad}    {var} = [{tag}, {var}]")
            self.lines += [f"{pad}else:", f"{pad}    raise _Mismatch"]
        else:
            self._nested(kind, var, pad, "enc", chain)

    def _decode(self, kind: Any, var: str, pad: str, chain: tuple[type, ...]) -> None:
        """Lines that check msgpack tree `var` against `kind` and rebind it to its value."""
        if self._check_scalar(kind, var, pad):
            return
        if isinstance(kind, ListOf):
            self.lines.append(f"{pad}if type({var}) is not list or len({var}) > {kind.max_len}:"
                              " raise _Mismatch")
            self._map(kind.item, var, pad, "dec", "tuple", chain)
        elif isinstance(kind, OneOf):
            tag = self._temp()
            self.lines += [f"{pad}if type({var}) is not list: raise _Mismatch",
                           f"{pad}{tag}, {var} = {var}",
                           f"{pad}if type({tag}) is not int: raise _Mismatch"]
            for i, (number, cls) in enumerate(dict(kind.variants).items()):
                self.lines.append(f"{pad}{'el' if i else ''}if {tag} == {number}:")
                self._nested(cls, var, pad + "    ", "dec", chain)
            self.lines += [f"{pad}else:", f"{pad}    raise _Mismatch"]
        else:
            self._nested(kind, var, pad, "dec", chain)

    def _nested(self, cls: type, var: str, pad: str, way: str, chain: tuple[type, ...],
                checked: bool = False) -> None:
        """A nested record, inline or as a call of its own generated function."""
        if not self._inlines(cls, chain):
            self.lines.append(f"{pad}{var} = {way}_{self._record(cls)}({var})")
        elif way == "enc":
            self._encode_record(cls, var, pad, (*chain, cls), checked)
        else:
            self._decode_record(cls, var, pad, (*chain, cls))

    def _inlines(self, cls: type, chain: tuple[type, ...]) -> bool:
        """Whether record `cls`, met inside the records of `chain`, is written inline."""
        return cls not in chain and len(chain) < self.INLINE_DEPTH

    def _map(self, item: Any, var: str, pad: str, way: str, into: str,
             chain: tuple[type, ...]) -> None:
        """Rebind list `var` to its items, each through `way` ("enc"/"dec") of `item`."""
        if isinstance(item, type) and not self._inlines(item, chain):
            self.lines.append(f"{pad}{var} = {into}(map({way}_{self._record(item)}, {var}))")
            return
        out, each = self._temp(), self._temp()
        self.lines += [f"{pad}{out} = []", f"{pad}for {each} in {var}:"]
        (self._encode if way == "enc" else self._decode)(item, each, pad + "    ", chain)
        self.lines += [f"{pad}    {out}.append({each})",
                       f"{pad}{var} = {out}" if into == "list" else f"{pad}{var} = {into}({out})"]

    def _check_scalar(self, kind: Any, var: str, pad: str) -> bool:
        """Inline check of a uint or byte-string `var`; False if `kind` is neither."""
        if isinstance(kind, UInt):
            top = (1 << kind.bits) - 1
            self.lines.append(
                f"{pad}if type({var}) is not int or not 0 <= {var} <= {top}: raise _Mismatch")
            return True
        if not isinstance(kind, Bytes):
            return False
        if kind.lengths is not None:
            sizes = tuple(sorted({n for n in kind.lengths if kind.admits(n)}))
            bad = f"len({var}) not in {sizes!r}"
        elif kind.min_len == kind.max_len:
            bad = f"len({var}) != {kind.min_len}"
        else:
            bad = f"not {kind.min_len} <= len({var}) <= {kind.max_len}"
        self.lines.append(f"{pad}if type({var}) is not bytes or {bad}: raise _Mismatch")
        return True

    def _record(self, cls: type) -> str:
        """The symbol of a record class whose generated function this code calls."""
        if cls not in self.records:
            self.records.append(cls)
        return _fast_symbol(cls)

    def _temp(self) -> str:
        self._temps += 1
        return f"x{self._temps}"


def _fields_of(cls: type) -> list[tuple[str, Any]]:
    """(name, kind) of each field of a record class, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return [(f.name, _kind_of(hints[f.name])) for f in dataclasses.fields(cls)]
