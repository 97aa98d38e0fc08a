"""Hypothesis strategies for every codec record, derived from the records' field kinds.

`records(cls)` reads the `Annotated[..., kind]` of each field and draws values of
exactly that kind (uints of the declared width, byte strings of the declared
length range, short tuples for lists, every variant of a union), so a new record
or a changed field kind needs no edit here. Values are valid for the codec, not
for consensus: signatures are random bytes unless `validly_signed_txs` is used.

    from tests.strategies import blocks, signed_txs, records
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from hypothesis import strategies as st

from chain import records as chain_records
from chain import store as chain_store
from chain.codec import Bytes, ListOf, OneOf, Record, UInt
from chain.crypto import SigningKey
from chain.records import DENOM_GPU, DENOM_STABLE, Transfer, Tx
from chain.signing import sign_tx

# Lists are drawn with at most this many items (the schema limits are far larger);
# the codec tests cover long lists and the 16-item array16 boundary separately.
MAX_LIST_ITEMS = 3


def field_kinds(cls: type) -> list[tuple[str, Any]]:
    """(name, codec kind) of each field of a record class, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    kinds = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if typing.get_origin(hint) is typing.Annotated:
            kinds.append((field.name, typing.get_args(hint)[1]))
        elif isinstance(hint, type) and issubclass(hint, Record):
            kinds.append((field.name, hint))
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no codec kind in {hint!r}")
    return kinds


def uints(bits: int) -> st.SearchStrategy[int]:
    """Unsigned integers of at most `bits` bits, boundaries included."""
    return st.integers(min_value=0, max_value=(1 << bits) - 1)


def byte_strings(min_len: int, max_len: int) -> st.SearchStrategy[bytes]:
    """Byte strings whose length lies in [min_len, max_len]."""
    return st.binary(min_size=min_len, max_size=max_len)


def for_kind(kind: Any) -> st.SearchStrategy[Any]:
    """Values of one codec field kind."""
    if isinstance(kind, UInt):
        return uints(kind.bits)
    if isinstance(kind, Bytes) and kind.lengths is not None:
        return st.sampled_from(kind.lengths).flatmap(lambda n: byte_strings(n, n))
    if isinstance(kind, Bytes):
        return byte_strings(kind.min_len, kind.max_len)
    if isinstance(kind, ListOf):
        size = min(kind.max_len, MAX_LIST_ITEMS)
        return st.lists(for_kind(kind.item), max_size=size).map(tuple)
    if isinstance(kind, OneOf):
        return st.one_of([records(cls) for _, cls in kind.variants])
    if isinstance(kind, type) and issubclass(kind, Record):
        return records(kind)
    raise TypeError(f"no strategy for codec kind {kind!r}")


@functools.cache
def records(cls: type) -> st.SearchStrategy[Any]:
    """Records of `cls` with every field drawn from its declared kind."""
    return st.builds(cls, **{name: for_kind(kind) for name, kind in field_kinds(cls)})


def record_classes() -> list[type]:
    """Every codec record class the protocol defines (chain.records and chain.store)."""
    found = []
    for module in (chain_records, chain_store):
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Record) and value is not Record
                    and value.__module__ == module.__name__):
                found.append(value)
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


transfers = records(chain_records.Transfer)
txs = records(chain_records.Tx)
signed_txs = records(chain_records.SignedTx)
receipts = records(chain_records.Receipt)
tx_locations = records(chain_records.TxLocation)
votes = records(chain_records.Vote)
signed_votes = records(chain_records.SignedVote)
commit_sigs = records(chain_records.CommitSig)
commits = records(chain_records.Commit)
duplicate_vote_evidence = records(chain_records.DuplicateVoteEvidence)
headers = records(chain_records.Header)
blocks = records(chain_records.Block)
locks = records(chain_records.Lock)
accounts = records(chain_records.Account)
validators = records(chain_records.Validator)
validator_sets = records(chain_records.ValidatorSet)
heads = records(chain_store.Head)
genesis_marks = records(chain_store.GenesisMark)

# --- semantically valid values ---------------------------------------------------

u64s = uints(64)

signing_keys = st.binary(min_size=32, max_size=32).map(SigningKey.from_seed)
addresses = byte_strings(20, 20)
hashes = byte_strings(32, 32)


@st.composite
def validly_signed_txs(
    draw: st.DrawFn,
    chain_id: str = "gannet-test",
    keys: st.SearchStrategy[SigningKey] = signing_keys,
    nonces: st.SearchStrategy[int] = u64s,
    fees: st.SearchStrategy[int] = u64s,
    amounts: st.SearchStrategy[int] = u64s,
    recipients: st.SearchStrategy[bytes] = addresses,
) -> Any:
    """Transfers (GPU or stable) correctly signed by their sender for `chain_id`."""
    key = draw(keys)
    body = Transfer(to=draw(recipients), amount=draw(amounts),
                    denom=draw(st.sampled_from([DENOM_GPU, DENOM_STABLE])))
    tx = Tx(chain_id=chain_id.encode(), sender=key.public_key, nonce=draw(nonces),
            fee=draw(fees), body=body)
    return sign_tx(key, tx)
