"""Typed access to ledger state: a write-buffering overlay over committed state.

State is a flat key space of canonical records. Block execution reads through
the overlay and writes only into it; the node commits the overlay's write set
together with the block in one store batch. A journal lets one transaction's
changes be undone, so a failed transaction changes nothing but its fee.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from chain.codec import decode, encode
from chain.hashing import sha256
from chain.records import EMPTY_ACCOUNT, Account, ValidatorSet
from chain.types import Hash32

ACCOUNT_PREFIX = b"a"
VALIDATORS_KEY = b"v"  # the set that signs the next height (current)
NEXT_VALIDATORS_KEY = b"vn"  # the set of the height after that (next)
PROPOSER_PRIORITIES_KEY = b"vp"  # the current set's proposer priorities
VALIDATOR_UPDATES_KEY = b"vq"  # updates queued by this block's txs; gone after the block
VALIDATOR_HISTORY_PREFIX = b"vh"  # + height(8): the set taking effect at that height
VALIDATORS_SINCE_PREFIX = b"vs"  # + height(8): the height the set in effect there took effect
EVIDENCE_PREFIX = b"e"  # + validator(20) height(8) round(4) type(1); only evidence uses "e"
# The token economy's key spaces: one first letter per subsystem.
STAKING_PREFIX = b"s"  # staking and slashing: "sv" validators, "sd" delegations, ...
DISTRIBUTION_PREFIX = b"d"  # emission carry, epoch snapshots, reward bookkeeping
EXCHANGE_PREFIX = b"x"  # the GPU/stable pool, LP shares, the buyback
SUPPLY_KEY = b"t"  # supply totals (see consensus.supply)
STAKING_VALIDATOR_PREFIX = b"sv"  # + validator address(20) -> StakingValidator
DELEGATION_PREFIX = b"sd"  # + delegator(20) + validator(20) -> Delegation
UNBONDING_PREFIX = b"su"  # + validator(20) -> UnbondingQueue
REDELEGATION_PREFIX = b"sr"  # + source validator(20) -> RedelegationQueue
STAKING_TOTALS_KEY = b"st"  # -> StakingTotals
VALIDATOR_INDEX_KEY = b"si"  # -> ValidatorIndex

MODULE_NAMES = ("bonded", "unbonding", "rewards", "treasury", "pool", "reserve", "escrow",
                "collateral")


def module_address(name: str) -> bytes:
    """The account a protocol module keeps its funds in: no key can sign for it.

    bonded: staked GPU; unbonding: GPU waiting out the unbonding period; rewards:
    minted emission not yet withdrawn; treasury: buyback revenue (stable) and its
    purchases; pool: the AMM's reserves; reserve: genesis supply not allocated to
    an account; escrow and collateral: proof-of-compute job payments and provider
    collateral.
    """
    if name not in MODULE_NAMES:
        raise ValueError(f"unknown module {name!r}")
    return sha256(b"gannet/module/" + name.encode())[:20]


MODULE_ADDRESSES = {name: module_address(name) for name in MODULE_NAMES}
_MODULE_ADDRESS_SET = frozenset(MODULE_ADDRESSES.values())


def is_module_address(address: bytes) -> bool:
    """Whether `address` is a protocol module's account."""
    return address in _MODULE_ADDRESS_SET


def staking_validator_key(validator: bytes) -> bytes:
    """State key of a validator's staking record."""
    return STAKING_VALIDATOR_PREFIX + validator


def delegation_key(delegator: bytes, validator: bytes) -> bytes:
    """State key of a delegation (delegator first, so a wallet's delegations share a prefix)."""
    return DELEGATION_PREFIX + delegator + validator

Reader = Callable[[bytes], bytes | None]
_MISSING = object()


def account_key(address: bytes) -> bytes:
    """State key of an account."""
    return ACCOUNT_PREFIX + address


def validator_history_key(height: int) -> bytes:
    """State key of the validator set that takes effect at `height`."""
    return VALIDATOR_HISTORY_PREFIX + height.to_bytes(8, "big")


def validators_since_key(height: int) -> bytes:
    """State key naming the height at which the set in effect at `height` took effect."""
    return VALIDATORS_SINCE_PREFIX + height.to_bytes(8, "big")


class State:
    """Uncommitted state changes over a reader of committed state values."""

    __slots__ = ("_committed", "_dirty", "_journal", "_read", "_values")

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._values: dict[bytes, Any] = {}  # decoded records, read or written
        self._committed: dict[bytes, Any] = {}  # decoded records as first read from the reader
        self._dirty: dict[bytes, Any] = {}  # key -> record (None: deleted)
        self._journal: list[tuple[bytes, Any, Any]] | None = None

    # --- generic access -------------------------------------------------------

    def get(self, key: bytes, cls: type, default: Any = None) -> Any:
        """The record at `key` decoded as `cls`, or `default` if absent."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            raw = self._read(key)
            value = None if raw is None else decode(cls, raw)
            self._values[key] = value
            self._committed[key] = value
        return default if value is None else value

    def put(self, key: bytes, value: Any) -> None:
        """Set `key` to a record (None deletes it)."""
        if self._journal is not None:
            self._journal.append((key, self._values.get(key, _MISSING),
                                  self._dirty.get(key, _MISSING)))
        self._values[key] = value
        self._dirty[key] = value

    def read_committed(self, key: bytes) -> bytes | None:
        """The committed encoding at `key`, ignoring this overlay's changes."""
        return self._read(key)

    def get_committed(self, key: bytes, cls: type) -> Any:
        """The committed record at `key` decoded as `cls` (None if absent), ignoring this
        overlay's changes; a record this overlay already read is not read again."""
        value = self._committed.get(key, _MISSING)
        if value is _MISSING:
            raw = self._read(key)
            value = None if raw is None else decode(cls, raw)
            self._committed[key] = value
        return value

    # --- typed access ---------------------------------------------------------

    def get_account(self, address: bytes) -> Account:
        """The account at `address` (an empty account if it never existed)."""
        return self.get(account_key(address), Account, EMPTY_ACCOUNT)

    def set_account(self, address: bytes, account: Account) -> None:
        """Store an account; an account equal to the empty one is deleted."""
        self.put(account_key(address), None if account == EMPTY_ACCOUNT else account)

    def get_validator_set(self) -> ValidatorSet:
        """The current validator set (empty before genesis)."""
        return self.get(VALIDATORS_KEY, ValidatorSet, ValidatorSet(validators=()))

    def set_validator_set(self, vset: ValidatorSet) -> None:
        """Replace the validator set."""
        self.put(VALIDATORS_KEY, vset)

    def get_next_validator_set(self) -> ValidatorSet:
        """The set of the height after the next one (empty before genesis)."""
        return self.get(NEXT_VALIDATORS_KEY, ValidatorSet, ValidatorSet(validators=()))

    def set_next_validator_set(self, vset: ValidatorSet) -> None:
        """Replace the next validator set."""
        self.put(NEXT_VALIDATORS_KEY, vset)

    # --- transactions within a block -----------------------------------------

    def begin(self) -> None:
        """Start journaling changes so that `rollback` can undo them."""
        self._journal = []

    def commit_tx(self) -> None:
        """Keep the changes made since `begin`."""
        self._journal = None

    def rollback(self) -> None:
        """Undo every change made since `begin`, newest first."""
        journal, self._journal = self._journal or [], None
        for key, value, dirty in reversed(journal):
            _restore(self._values, key, value)
            _restore(self._dirty, key, dirty)

    # --- results ------------------------------------------------------------

    def changed(self) -> dict[bytes, Any]:
        """Changed keys and their new records (None: deleted), already decoded."""
        return dict(self._dirty)

    def write_set(self) -> dict[bytes, bytes]:
        """Encoded changes: key → canonical bytes, b"" for a deletion."""
        return {k: b"" if v is None else encode(v) for k, v in self._dirty.items()}


def _restore(mapping: dict, key: bytes, value: Any) -> None:
    if value is _MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def write_set_hash(writes: dict[bytes, bytes]) -> Hash32:
    """H(canonical msgpack of [[key, value], ...] sorted by key)."""
    return sha256(msgpack.packb([[k, writes[k]] for k in sorted(writes)], use_bin_type=True))


def next_app_hash(prev_app_hash: bytes, writes: dict[bytes, bytes]) -> Hash32:
    """App hash after a block: H(prev_app_hash || H(sorted write set))."""
    return sha256(prev_app_hash + write_set_hash(writes))
