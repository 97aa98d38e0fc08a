"""The genesis file: the data a chain starts from, its validation and its hash.

A genesis.json, in the spirit of CometBFT's:

    {"chain_id": "gannet-1",            1..64 of [a-z0-9-]
     "genesis_time_ms": 1700000000000,   uint64, ms since the Unix epoch
     "initial_height": 1,                optional (default 1), >= 1
     "params": {...},                    optional; consensus.params JSON, missing keys default
     "accounts": [{"address": "gnt1...", "gpu": 0, "stable": 0, "licences": 0,
                   "locks": [{"amount": 1, "release_height": 100}]}],
     "validators": [{"name": "v0", "public_key": "<64 hex>", "power": 1000000000000,
                     "operator": "gnt1...", "commission_bps": 1000, "queen": false}],
     "stable_issuer": "gnt1..." or null,  optional (default null)
     "pool": {"gpu": 1, "stable": 1, "owner": "gnt1..."} or null}  optional (default null)

In an account, "gpu" is required; "stable", "licences" (default 0) and
"locks" (default []) are optional. In a validator, "name" (default ""),
"commission_bps" (default 1000) and "queen" (default false) are optional.

Rules (`validate_genesis_json` reports every broken one, each with its JSON path):

- Amounts are GPU base units (1 GPU = 10^9) that fit uint64; licences fit uint32.
- A lock holds GPU in addition to the spendable balance "gpu" (in state the
  account's balance is both); it releases at a height after `initial_height`;
  an account holds at most 256 locks.
- A validator's power is its bonded self-stake in base units (voting power =
  bonded stake): at least `staking.min_validator_stake`, bonded for `operator`,
  and part of the supply. One validator per operator (so an operator's licences
  count once), one per public key, at most `staking.max_validators` of them.
  Its `commission_bps` (0..10000) of its rewards go to the operator; `queen`
  opts it in to the queen committee.
- "pool" seeds the GPU/stable pool: `gpu` comes out of the liquidity allocation
  (at most `allocation_bps.liquidity` of the total supply), `stable` is stable
  issued at genesis, both positive; `owner` holds the pool's first LP shares.
- All GPU at genesis (balances, locks, validator stake, pool GPU) fits in what
  the total supply leaves after the network allocation. The remainder goes to
  the module account "reserve", so the genesis allocations sum exactly to
  total_supply - network allocation, and emission mints the network bucket
  over time (see `genesis.state`).

`genesis_hash` is the genesis id: SHA-256 of the canonical JSON of the parsed
document (sorted keys, no spaces, ASCII; every parameter written out), so every
node checks it in its handshake and two files that differ only in layout or in
spelling out a default parameter have one id.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import isqrt
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_core_ed25519_is_valid_point

from chain.address import AddressError, decode_address, encode_address, parse_address
from chain.files import write_file_atomic
from chain.hashing import sha256
from chain.types import PUBLIC_KEY_LEN, UINT64_MAX, Address, Hash32, PublicKey
from consensus.exchange import MINIMUM_LIQUIDITY
from consensus.params import (
    NetworkParams,
    compute_allocation_amount,
    describe_json_value,
    parse_params_json,
    to_json,
)

UINT32_MAX = 2**32 - 1
CHAIN_ID_RE = re.compile(r"[a-z0-9-]{1,64}")
MAX_VALIDATOR_NAME_LEN = 64
MAX_LOCKS_PER_ACCOUNT = 256
MAX_TOTAL_VOTING_POWER = (2**63 - 1) // 8  # CometBFT's bound: proposer priorities never overflow
ROOT = "$"

_TOP_KEYS = {
    "chain_id": True,
    "genesis_time_ms": True,
    "initial_height": False,
    "params": False,
    "accounts": True,
    "validators": True,
    "stable_issuer": False,
    "pool": False,
}  # key -> required
_ACCOUNT_KEYS = {"address": True, "gpu": True, "stable": False, "licences": False, "locks": False}
_LOCK_KEYS = {"amount": True, "release_height": True}
_VALIDATOR_KEYS = {
    "name": False,
    "public_key": True,
    "power": True,
    "operator": True,
    "commission_bps": False,
    "queen": False,
}
_POOL_KEYS = {"gpu": True, "stable": True, "owner": True}
DEFAULT_COMMISSION_BPS = 1000  # 10 % of a validator's rewards to its operator
MAX_COMMISSION_BPS = 10_000
_HEX_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")
_BAD: Any = object()  # a value whose problem is already reported


# --- records ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a genesis document, at a JSON path like "accounts[3].gpu"."""

    path: str
    message: str

    def __str__(self) -> str:
        """PATH: MESSAGE."""
        return f"{self.path}: {self.message}"


class GenesisError(Exception):
    """A genesis document cannot be read, is invalid, or a builder step breaks a rule.

    `.problems` lists every problem found (empty when the message says it all).
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        """A one-line message, and the problems behind it."""
        super().__init__(message)
        self.problems: tuple[Problem, ...] = tuple(problems)


@dataclass(frozen=True, slots=True)
class GenesisLock:
    """`amount` GPU base units of an account that cannot move before `release_height`."""

    amount: int
    release_height: int


@dataclass(frozen=True, slots=True)
class GenesisAccount:
    """An account at genesis: spendable GPU, stable units, node licences, locked GPU."""

    address: Address
    gpu: int
    stable: int = 0
    licences: int = 0
    locks: tuple[GenesisLock, ...] = ()


@dataclass(frozen=True, slots=True)
class GenesisValidator:
    """A validator at genesis: consensus key, bonded stake (= power), operator account.

    `commission_bps` of its rewards go to the operator; `queen` opts in to the queens.
    """

    name: str
    public_key: PublicKey
    power: int
    operator: Address
    commission_bps: int = DEFAULT_COMMISSION_BPS
    queen: bool = False


@dataclass(frozen=True, slots=True)
class GenesisPool:
    """The GPU/stable pool's seed: GPU from the liquidity allocation, stable issued at genesis.

    `owner` holds the first LP shares.
    """

    gpu: int
    stable: int
    owner: Address


@dataclass(frozen=True, slots=True)
class Genesis:
    """A parsed, validated genesis document."""

    chain_id: str
    genesis_time_ms: int
    initial_height: int
    params: NetworkParams
    accounts: tuple[GenesisAccount, ...] = ()
    validators: tuple[GenesisValidator, ...] = ()
    stable_issuer: Address | None = None
    pool: GenesisPool | None = None


# --- reading and validating ---------------------------------------------------


def load_genesis(path: str | os.PathLike[str], *, require_validators: bool = True) -> Genesis:
    """Read, validate and parse a genesis file; GenesisError lists every problem.

    `require_validators=False` accepts a genesis still being built (no validators yet).
    """
    doc = read_genesis_json(path)
    return genesis_from_json(doc, source=str(path), require_validators=require_validators)


def read_genesis_json(path: str | os.PathLike[str]) -> Any:
    """The decoded JSON of a file; GenesisError if unreadable or not strict JSON.

    Strict: duplicate object keys and NaN/Infinity are errors.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise GenesisError(f"cannot read genesis file {path}: {error.strerror or error}") from None
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as error:
        message = f"not valid JSON: {error}"
        raise GenesisError(f"{path}: {message}", [Problem(ROOT, message)]) from None


def genesis_from_json(
    doc: Any, source: str = "genesis", *, require_validators: bool = True
) -> Genesis:
    """The Genesis of a decoded JSON document; GenesisError lists every problem."""
    genesis, problems = _genesis_from_json(doc, require_validators=require_validators)
    if genesis is None:
        raise _error_of(problems, source)
    return genesis


def validate_genesis_json(doc: Any) -> list[Problem]:
    """Every problem of a decoded genesis document, sorted by path; empty when valid."""
    return _genesis_from_json(doc, require_validators=True)[1]


def validate_genesis(genesis: Genesis) -> None:
    """Raise GenesisError listing every problem of a Genesis built in code."""
    try:
        doc = genesis_to_json(genesis)
    except (AddressError, AttributeError, TypeError, ValueError) as error:
        raise GenesisError(f"genesis cannot be written as JSON: {error}") from None
    problems = validate_genesis_json(doc)
    if problems:
        raise _error_of(problems, "genesis")


def _genesis_from_json(
    doc: Any, *, require_validators: bool
) -> tuple[Genesis | None, list[Problem]]:
    """The Genesis (None if any problem) and every problem, sorted by path."""
    out: list[Problem] = []
    if not isinstance(doc, dict):
        return None, [Problem(ROOT, f"expected a JSON object, got {describe_json_value(doc)}")]
    top = _fields_of(doc, "", _TOP_KEYS, out)
    chain_id = _chain_id_from_json(top.get("chain_id", _BAD), out)
    genesis_time_ms = _uint_from_json(top.get("genesis_time_ms", _BAD), "genesis_time_ms", out)
    initial_height = _uint_from_json(top.get("initial_height", 1), "initial_height", out, 1)
    params, param_problems = parse_params_json(top.get("params", {}), "params")
    out += [Problem(path, message) for path, message in param_problems]
    height = 1 if initial_height is _BAD else initial_height
    accounts = _list_from_json(
        top.get("accounts", _BAD),
        "accounts",
        lambda item, path: _account_from_json(item, path, height, out),
        out,
    )
    raw_validators = top.get("validators", _BAD)
    min_stake = params.staking.min_validator_stake
    validators = _list_from_json(
        raw_validators,
        "validators",
        lambda item, path: _validator_from_json(item, path, min_stake, out),
        out,
    )
    listed = len(raw_validators) if isinstance(raw_validators, list) else None
    stable_issuer = _issuer_from_json(top.get("stable_issuer"), out)
    pool = _pool_from_json(top.get("pool"), params, out)
    out += _collection_problems(params, accounts, validators, listed, require_validators)
    out += _supply_problems(params, accounts, validators, None if pool is _BAD else pool)
    if out:
        return None, sorted(out, key=lambda problem: _path_key(problem.path))
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        initial_height=initial_height,
        params=params,
        accounts=tuple(account for _, account in accounts),
        validators=tuple(validator for _, validator in validators),
        stable_issuer=stable_issuer,
        pool=pool,
    )
    return genesis, []


def _fields_of(doc: dict[str, Any], path: str, keys: dict[str, bool], out: list[Problem]) -> dict:
    """The object's fields; unknown keys and missing required keys are reported."""
    for key in doc:
        if key not in keys:
            out.append(Problem(_join(path, key), "unknown field"))
    fields = {key: value for key, value in doc.items() if key in keys}
    for key, required in keys.items():
        if required and key not in doc:
            out.append(Problem(_join(path, key), "missing"))
            fields[key] = _BAD
    return fields


def _chain_id_from_json(value: Any, out: list[Problem]) -> Any:
    if value is _BAD:
        return _BAD
    if not isinstance(value, str):
        out.append(Problem("chain_id", f"expected a string, got {describe_json_value(value)}"))
        return _BAD
    if not CHAIN_ID_RE.fullmatch(value):
        out.append(
            Problem("chain_id", f"must be 1..64 characters of a-z, 0-9 and '-', got {value!r}")
        )
        return _BAD
    return value


def _uint_from_json(
    value: Any,
    path: str,
    out: list[Problem],
    minimum: int = 0,
    maximum: int = UINT64_MAX,
    why: str = "",
) -> Any:
    """An integer in minimum..maximum, or _BAD after reporting why not (and `why`)."""
    if value is _BAD:
        return _BAD
    if not isinstance(value, int) or isinstance(value, bool):
        out.append(Problem(path, f"expected an integer, got {describe_json_value(value)}"))
        return _BAD
    if value < minimum:
        what = "negative" if value < 0 else "too small"
        out.append(Problem(path, f"{what}: must be at least {minimum}{why}, got {value}"))
        return _BAD
    if value > maximum:
        out.append(Problem(path, f"too large: must be at most {maximum}, got {value}"))
        return _BAD
    return value


def _address_from_json(value: Any, path: str, out: list[Problem]) -> Any:
    """The bytes of a bech32 address string, or _BAD after reporting the AddressError."""
    if value is _BAD:
        return _BAD
    if not isinstance(value, str):
        got = describe_json_value(value)
        out.append(Problem(path, f"expected a bech32 address string, got {got}"))
        return _BAD
    try:
        return decode_address(value)
    except AddressError as error:
        out.append(Problem(path, str(error)))
        return _BAD


def _issuer_from_json(value: Any, out: list[Problem]) -> Any:
    return None if value is None else _address_from_json(value, "stable_issuer", out)


def _list_from_json(
    value: Any, path: str, parse_item: Callable[[Any, str], Any], out: list[Problem]
) -> list[tuple[int, Any]]:
    """(index, record) for each item that parsed; the rest are reported."""
    if value is _BAD:
        return []
    if not isinstance(value, list):
        out.append(Problem(path, f"expected a list, got {describe_json_value(value)}"))
        return []
    parsed = [(index, parse_item(item, f"{path}[{index}]")) for index, item in enumerate(value)]
    return [(index, record) for index, record in parsed if record is not _BAD]


def _account_from_json(doc: Any, path: str, initial_height: int, out: list[Problem]) -> Any:
    """A GenesisAccount, or _BAD after reporting every problem of the entry."""
    if not isinstance(doc, dict):
        out.append(Problem(path, f"expected an object, got {describe_json_value(doc)}"))
        return _BAD
    before = len(out)
    fields = _fields_of(doc, path, _ACCOUNT_KEYS, out)
    address = _address_from_json(fields["address"], f"{path}.address", out)
    gpu = _uint_from_json(fields["gpu"], f"{path}.gpu", out)
    stable = _uint_from_json(fields.get("stable", 0), f"{path}.stable", out)
    licences = _uint_from_json(fields.get("licences", 0), f"{path}.licences", out, 0, UINT32_MAX)
    locks = _locks_from_json(fields.get("locks", []), f"{path}.locks", initial_height, out)
    if len(out) > before:
        return _BAD
    if gpu + sum(lock.amount for lock in locks) > UINT64_MAX:
        out.append(Problem(path, f"gpu plus locked GPU must fit uint64 ({UINT64_MAX})"))
        return _BAD
    return GenesisAccount(address, gpu, stable, licences, locks)


def _locks_from_json(value: Any, path: str, initial_height: int, out: list[Problem]) -> Any:
    """The account's locks, or _BAD after reporting their problems."""
    if not isinstance(value, list):
        out.append(Problem(path, f"expected a list, got {describe_json_value(value)}"))
        return _BAD
    if len(value) > MAX_LOCKS_PER_ACCOUNT:
        out.append(Problem(path, f"at most {MAX_LOCKS_PER_ACCOUNT} locks, got {len(value)}"))
        return _BAD
    before = len(out)
    locks = []
    for index, item in enumerate(value):
        lock_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            out.append(Problem(lock_path, f"expected an object, got {describe_json_value(item)}"))
            continue
        fields = _fields_of(item, lock_path, _LOCK_KEYS, out)
        amount = _uint_from_json(fields["amount"], f"{lock_path}.amount", out, 1)
        release = _uint_from_json(
            fields["release_height"],
            f"{lock_path}.release_height",
            out,
            initial_height + 1,
            why=" (a lock releases after initial_height)",
        )
        locks.append(GenesisLock(amount, release))
    return _BAD if len(out) > before else tuple(locks)


def _validator_from_json(doc: Any, path: str, min_stake: int, out: list[Problem]) -> Any:
    """A GenesisValidator, or _BAD after reporting every problem of the entry."""
    if not isinstance(doc, dict):
        out.append(Problem(path, f"expected an object, got {describe_json_value(doc)}"))
        return _BAD
    before = len(out)
    fields = _fields_of(doc, path, _VALIDATOR_KEYS, out)
    name = _name_from_json(fields.get("name", ""), f"{path}.name", out)
    public_key = _public_key_from_json(fields["public_key"], f"{path}.public_key", out)
    power = _uint_from_json(
        fields["power"], f"{path}.power", out, 1, why=" (zero power cannot vote)"
    )
    operator = _address_from_json(fields["operator"], f"{path}.operator", out)
    commission = fields.get("commission_bps", DEFAULT_COMMISSION_BPS)
    commission = _uint_from_json(commission, f"{path}.commission_bps", out, 0, MAX_COMMISSION_BPS)
    queen = _bool_from_json(fields.get("queen", False), f"{path}.queen", out)
    if power is not _BAD and power < min_stake:
        out.append(
            Problem(
                f"{path}.power",
                f"{power} is below params.staking.min_validator_stake {min_stake} "
                "(power is bonded stake in base units)",
            )
        )
    if len(out) > before:
        return _BAD
    return GenesisValidator(name, public_key, power, operator, commission, queen)


def _bool_from_json(value: Any, path: str, out: list[Problem]) -> Any:
    """A JSON boolean, or _BAD after reporting what came instead."""
    if not isinstance(value, bool):
        out.append(Problem(path, f"expected a boolean, got {describe_json_value(value)}"))
        return _BAD
    return value


def _pool_from_json(value: Any, params: NetworkParams, out: list[Problem]) -> Any:
    """The GenesisPool (None when absent), or _BAD after reporting every problem.

    Both sides are positive, isqrt(gpu * stable) exceeds the pool's locked
    MINIMUM_LIQUIDITY, and the GPU comes out of the liquidity allocation.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        out.append(Problem("pool", f"expected an object or null, got {describe_json_value(value)}"))
        return _BAD
    before = len(out)
    fields = _fields_of(value, "pool", _POOL_KEYS, out)
    liquidity = compute_allocation_amount(params.tokenomics, "liquidity")
    empty = " (an empty pool has no price)"
    gpu = _uint_from_json(fields["gpu"], "pool.gpu", out, 1, why=empty)
    if gpu is not _BAD and gpu > liquidity:
        why = f"above the liquidity allocation {liquidity} (allocation_bps.liquidity)"
        out.append(Problem("pool.gpu", f"{gpu} is {why}"))
    stable = _uint_from_json(fields["stable"], "pool.stable", out, 1, why=empty)
    owner = _address_from_json(fields["owner"], "pool.owner", out)
    if len(out) == before and isqrt(gpu * stable) <= MINIMUM_LIQUIDITY:
        out.append(Problem("pool", f"seed too small: isqrt(gpu * stable) must exceed "
                                   f"{MINIMUM_LIQUIDITY}, the LP shares locked for good"))
    return _BAD if len(out) > before else GenesisPool(gpu, stable, owner)


def _name_from_json(value: Any, path: str, out: list[Problem]) -> Any:
    if not isinstance(value, str):
        out.append(Problem(path, f"expected a string, got {describe_json_value(value)}"))
        return _BAD
    if len(value) > MAX_VALIDATOR_NAME_LEN or not value.isprintable():
        out.append(Problem(path, f"must be at most {MAX_VALIDATOR_NAME_LEN} printable characters"))
        return _BAD
    return value


def _public_key_from_json(value: Any, path: str, out: list[Problem]) -> Any:
    """The 32 key bytes of 64 hex digits, a canonical Ed25519 point of prime order."""
    if value is _BAD:
        return _BAD
    if not isinstance(value, str) or not _HEX_KEY_RE.fullmatch(value):
        got = f"{len(value)} characters" if isinstance(value, str) else describe_json_value(value)
        out.append(Problem(path, f"expected {2 * PUBLIC_KEY_LEN} hex digits, got {got}"))
        return _BAD
    key = bytes.fromhex(value)
    if not crypto_core_ed25519_is_valid_point(key):
        out.append(Problem(path, "not a valid Ed25519 public key (small order or off the curve)"))
        return _BAD
    return PublicKey(key)


# --- rules over the whole document -------------------------------------------


def _collection_problems(
    params: NetworkParams,
    accounts: Sequence[tuple[int, GenesisAccount]],
    validators: Sequence[tuple[int, GenesisValidator]],
    listed: int | None,
    require_validators: bool,
) -> list[Problem]:
    """Duplicates, and the validator set's size and power.

    `listed` is the length of the validators list (None when it is not a list).
    """
    out: list[Problem] = []
    out += _duplicate_problems("accounts", "address", accounts, lambda a: a.address)
    out += _duplicate_problems("validators", "public_key", validators, lambda v: v.public_key)
    out += _duplicate_problems("validators", "operator", validators, lambda v: v.operator)
    out += _validator_set_problems(params, validators, listed, require_validators)
    return out


def _duplicate_problems(
    list_path: str, name: str, entries: Sequence[tuple[int, Any]], key: Callable[[Any], bytes]
) -> list[Problem]:
    """Each entry whose `key` an earlier entry already has."""
    first: dict[bytes, int] = {}
    out = []
    for index, entry in entries:
        earlier = first.setdefault(key(entry), index)
        if earlier != index:
            out.append(
                Problem(f"{list_path}[{index}].{name}", f"duplicate of {list_path}[{earlier}]")
            )
    return out


def _validator_set_problems(
    params: NetworkParams,
    validators: Sequence[tuple[int, GenesisValidator]],
    listed: int | None,
    require_validators: bool,
) -> list[Problem]:
    """At least one validator, at most max_validators, total power within bounds."""
    out = []
    maximum = params.staking.max_validators
    if require_validators and listed == 0:
        out.append(Problem("validators", "no validators: a chain needs at least one"))
    if listed is not None and listed > maximum:
        out.append(
            Problem(
                "validators", f"{listed} validators, above params.staking.max_validators {maximum}"
            )
        )
    total = sum(validator.power for _, validator in validators)
    if total > MAX_TOTAL_VOTING_POWER:
        out.append(Problem("validators", f"total power {total} exceeds {MAX_TOTAL_VOTING_POWER}"))
    return out


def _supply_problems(
    params: NetworkParams,
    accounts: Sequence[tuple[int, GenesisAccount]],
    validators: Sequence[tuple[int, GenesisValidator]],
    pool: GenesisPool | None,
) -> list[Problem]:
    """Genesis GPU fits the supply left after the network allocation; stable fits uint64.

    What that room leaves over is the reserve's (`genesis.state.compute_reserve_gpu`).
    """
    out = []
    balances = sum(account.gpu for _, account in accounts)
    locked = sum(lock.amount for _, account in accounts for lock in account.locks)
    staked = sum(validator.power for _, validator in validators)
    pooled = 0 if pool is None else pool.gpu
    total = balances + locked + staked + pooled
    room = compute_genesis_gpu(params)
    if total > room:
        network = compute_allocation_amount(params.tokenomics, "network")
        out.append(
            Problem(
                "accounts",
                f"genesis GPU {total} (balances {balances}, locks {locked}, "
                f"validator stake {staked}, pool {pooled}) is above {room}: total_supply "
                f"{params.tokenomics.total_supply} less the network allocation {network} "
                f"that emission mints",
            )
        )
    stable = sum(account.stable for _, account in accounts) + (0 if pool is None else pool.stable)
    if stable > UINT64_MAX:
        why = f"stable at genesis (accounts and pool) sums to {stable}, above {UINT64_MAX}"
        out.append(Problem("accounts", why))
    return out


def compute_genesis_gpu(params: NetworkParams) -> int:
    """GPU in existence at genesis: total_supply less the network allocation.

    Accounts (balances and locks), validator stake, pool GPU and the reserve
    hold exactly this at genesis; emission mints the network allocation later.
    """
    return params.tokenomics.total_supply - compute_allocation_amount(params.tokenomics, "network")


# --- writing and hashing ------------------------------------------------------


def genesis_to_json(genesis: Genesis) -> dict[str, Any]:
    """The JSON object of a Genesis, every parameter written out."""
    issuer = genesis.stable_issuer
    return {
        "chain_id": genesis.chain_id,
        "genesis_time_ms": genesis.genesis_time_ms,
        "initial_height": genesis.initial_height,
        "params": to_json(genesis.params),
        "accounts": [_account_to_json(account) for account in genesis.accounts],
        "validators": [_validator_to_json(validator) for validator in genesis.validators],
        "stable_issuer": None if issuer is None else encode_address(issuer),
        "pool": None if genesis.pool is None else _pool_to_json(genesis.pool),
    }


def _pool_to_json(pool: GenesisPool) -> dict[str, Any]:
    return {"gpu": pool.gpu, "stable": pool.stable, "owner": encode_address(pool.owner)}


def _account_to_json(account: GenesisAccount) -> dict[str, Any]:
    return {
        "address": encode_address(account.address),
        "gpu": account.gpu,
        "stable": account.stable,
        "licences": account.licences,
        "locks": [
            {"amount": lock.amount, "release_height": lock.release_height} for lock in account.locks
        ],
    }


def _validator_to_json(validator: GenesisValidator) -> dict[str, Any]:
    return {
        "name": validator.name,
        "public_key": bytes(validator.public_key).hex(),
        "power": validator.power,
        "operator": encode_address(validator.operator),
        "commission_bps": validator.commission_bps,
        "queen": validator.queen,
    }


def canonical_genesis_bytes(genesis: Genesis) -> bytes:
    """The canonical JSON the genesis hash covers: sorted keys, no spaces, ASCII."""
    text = json.dumps(
        genesis_to_json(genesis), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return text.encode("ascii")


def genesis_hash(genesis: Genesis) -> Hash32:
    """The genesis id every node checks: SHA-256 of `canonical_genesis_bytes`."""
    return sha256(canonical_genesis_bytes(genesis))


def dump_genesis(genesis: Genesis, path: str | os.PathLike[str]) -> None:
    """Write genesis.json atomically: a temp file beside it, fsync, rename, fsync the folder.

    A crash leaves the old file or the new one, never a torn one.
    """
    target = Path(path)
    data = (json.dumps(genesis_to_json(genesis), indent=2) + "\n").encode("ascii")
    try:
        write_file_atomic(target, data, 0o644)
    except OSError as error:
        raise GenesisError(f"cannot write genesis file {path}: {error.strerror or error}") from None


# --- builders -----------------------------------------------------------------


def new_genesis(
    chain_id: str, genesis_time_ms: int, params: NetworkParams | None = None
) -> Genesis:
    """An empty genesis (no accounts, no validators yet) starting at height 1."""
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        initial_height=1,
        params=NetworkParams() if params is None else params,
    )
    _check_partial(genesis)
    return genesis


def add_account(
    genesis: Genesis,
    address: Address | str,
    gpu: int,
    stable: int = 0,
    licences: int = 0,
    locks: Sequence[GenesisLock] = (),
) -> Genesis:
    """The genesis with one more account; GenesisError if it is already there or breaks a rule."""
    raw = _builder_address(address, "address")
    if any(account.address == raw for account in genesis.accounts):
        raise GenesisError(f"account {encode_address(raw)} already in genesis")
    account = GenesisAccount(raw, gpu, stable, licences, tuple(locks))
    updated = dataclasses.replace(genesis, accounts=(*genesis.accounts, account))
    index = len(genesis.accounts)
    out: list[Problem] = []
    entry = _entry_to_json(_account_to_json, account)
    _account_from_json(entry, f"accounts[{index}]", genesis.initial_height, out)
    _raise_step_problems(updated, out)
    return updated


def add_validator(
    genesis: Genesis,
    public_key: bytes | str,
    power: int,
    operator: Address | str,
    name: str = "",
    commission_bps: int = DEFAULT_COMMISSION_BPS,
    queen: bool = False,
) -> Genesis:
    """The genesis with one more validator (public key as bytes or 64 hex digits)."""
    key = _builder_public_key(public_key)
    owner = _builder_address(operator, "operator")
    if any(validator.public_key == key for validator in genesis.validators):
        raise GenesisError(f"validator key {key.hex()} already in genesis")
    if any(validator.operator == owner for validator in genesis.validators):
        raise GenesisError(f"operator {encode_address(owner)} already runs a genesis validator")
    validator = GenesisValidator(name, PublicKey(key), power, owner, commission_bps, queen)
    updated = dataclasses.replace(genesis, validators=(*genesis.validators, validator))
    index = len(genesis.validators)
    out: list[Problem] = []
    entry = _entry_to_json(_validator_to_json, validator)
    min_stake = genesis.params.staking.min_validator_stake
    _validator_from_json(entry, f"validators[{index}]", min_stake, out)
    _raise_step_problems(updated, out)
    return updated


def set_stable_issuer(genesis: Genesis, address: Address | str | None) -> Genesis:
    """The genesis with `address` (or nobody) as the issuer of the stable unit."""
    issuer = None if address is None else _builder_address(address, "stable issuer")
    return dataclasses.replace(genesis, stable_issuer=issuer)


def set_pool(genesis: Genesis, gpu: int, stable: int, owner: Address | str) -> Genesis:
    """The genesis with the GPU/stable pool seeded by `gpu` and `stable`, LP shares to `owner`.

    GenesisError if a side is not positive, the GPU is above the liquidity
    allocation, or the genesis GPU no longer fits the supply.
    """
    pool = GenesisPool(gpu, stable, _builder_address(owner, "pool owner"))
    updated = dataclasses.replace(genesis, pool=pool)
    out: list[Problem] = []
    _pool_from_json(_entry_to_json(_pool_to_json, pool), genesis.params, out)
    _raise_step_problems(updated, out)
    return updated


def _entry_to_json(encode: Callable[[Any], dict[str, Any]], entry: Any) -> dict[str, Any]:
    """The JSON of one account, validator or pool; GenesisError if it cannot be written."""
    try:
        return encode(entry)
    except (AddressError, AttributeError, TypeError, ValueError) as error:
        raise GenesisError(f"genesis entry cannot be written as JSON: {error}") from None


def _raise_step_problems(updated: Genesis, out: list[Problem]) -> None:
    """Raise the new entry's problems, else those of the set and supply rules it may break.

    A builder step checks only what it can break: the genesis it extends was
    checked by the steps before (so building n entries costs O(n) checks each).
    """
    if not out:
        accounts = list(enumerate(updated.accounts))
        validators = list(enumerate(updated.validators))
        out += _validator_set_problems(updated.params, validators, len(validators), False)
        out += _supply_problems(updated.params, accounts, validators, updated.pool)
    if out:
        raise _error_of(out, "genesis")


def _check_partial(genesis: Genesis) -> None:
    """Raise GenesisError for any problem but the lack of validators (a genesis being built)."""
    try:
        doc = genesis_to_json(genesis)
    except (AddressError, AttributeError, TypeError, ValueError) as error:
        raise GenesisError(f"genesis cannot be written as JSON: {error}") from None
    _, problems = _genesis_from_json(doc, require_validators=False)
    if problems:
        raise _error_of(problems, "genesis")


def _builder_address(value: Address | str, what: str) -> Address:
    """20 address bytes from bytes or text (bech32 or hex); GenesisError otherwise."""
    try:
        if isinstance(value, bytes | bytearray):
            encode_address(bytes(value))  # checks the length
            return Address(bytes(value))
        return parse_address(value)
    except AddressError as error:
        raise GenesisError(f"bad {what}: {error}") from None


def _builder_public_key(value: bytes | str) -> bytes:
    """32 key bytes from bytes or 64 hex digits; GenesisError otherwise."""
    if isinstance(value, str):
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if not _HEX_KEY_RE.fullmatch(text):
            raise GenesisError(f"public key must be {2 * PUBLIC_KEY_LEN} hex digits, got {value!r}")
        return bytes.fromhex(text)
    if not isinstance(value, bytes | bytearray) or len(value) != PUBLIC_KEY_LEN:
        raise GenesisError(f"public key must be {PUBLIC_KEY_LEN} bytes")
    return bytes(value)


# --- helpers ------------------------------------------------------------------


def _error_of(problems: Sequence[Problem], source: str) -> GenesisError:
    """One GenesisError: the count and the first problem on one line, all in `.problems`."""
    count = len(problems)
    more = f" (and {count - 1} more)" if count > 1 else ""
    noun = "problem" if count == 1 else "problems"
    return GenesisError(f"{source}: {count} {noun}: {problems[0]}{more}", problems)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key is an error (which value wins is not defined)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _path_key(path: str) -> tuple[Any, ...]:
    """Sort key of a path: text in order, list indexes by number ("[10]" after "[9]")."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path))
