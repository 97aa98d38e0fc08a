"""The genesis document: round trips, the hash, every rule reported with its JSON path."""

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.types import UINT64_MAX
from consensus.params import GPU, NetworkParams, Ratio, default_params
from genesis.document import (
    MAX_LOCKS_PER_ACCOUNT,
    Genesis,
    GenesisAccount,
    GenesisError,
    GenesisLock,
    GenesisPool,
    GenesisValidator,
    Problem,
    add_account,
    add_validator,
    canonical_genesis_bytes,
    dump_genesis,
    genesis_from_json,
    genesis_hash,
    genesis_to_json,
    load_genesis,
    new_genesis,
    read_genesis_json,
    set_pool,
    set_stable_issuer,
    validate_genesis,
    validate_genesis_json,
)
from genesis.vesting import VESTING_TRANCHES, compute_genesis_vesting, compute_vesting_locks

MIN_STAKE = NetworkParams().staking.min_validator_stake


def key(n: int) -> SigningKey:
    return SigningKey.from_seed(bytes([n]) * 32)


def addr(n: int) -> str:
    return encode_address(address_from_public_key(key(n).public_key))


POOL_GPU = 1_000_000 * GPU
POOL_STABLE = 500_000 * 10**9


def valid_doc() -> dict[str, Any]:
    """Two accounts (one with a lock), two validators (one a queen), a stable issuer, a pool."""
    return {
        "chain_id": "gannet-test-1",
        "genesis_time_ms": 1_700_000_000_000,
        "initial_height": 1,
        "params": {},
        "accounts": [
            {"address": addr(1), "gpu": 5000 * GPU, "stable": 10**12, "licences": 5, "locks": []},
            {
                "address": addr(2),
                "gpu": 10,
                "locks": [{"amount": 7 * GPU, "release_height": 1000}],
            },
        ],
        "validators": [
            {
                "name": "v0",
                "public_key": key(10).public_key.hex(),
                "power": MIN_STAKE,
                "operator": addr(1),
                "commission_bps": 500,
                "queen": True,
            },
            {"public_key": key(11).public_key.hex(), "power": 2 * MIN_STAKE, "operator": addr(2)},
        ],
        "stable_issuer": addr(3),
        "pool": {"gpu": POOL_GPU, "stable": POOL_STABLE, "owner": addr(3)},
    }


def paths(doc: Any) -> list[str]:
    return [problem.path for problem in validate_genesis_json(doc)]


# --- round trips and hash -----------------------------------------------------


def test_valid_document_parses() -> None:
    genesis = genesis_from_json(valid_doc())
    assert genesis.chain_id == "gannet-test-1"
    assert genesis.params == NetworkParams()
    assert genesis.accounts[1] == GenesisAccount(
        address_from_public_key(key(2).public_key), 10, 0, 0, (GenesisLock(7 * GPU, 1000),)
    )
    assert genesis.validators[1] == GenesisValidator(
        "", key(11).public_key, 2 * MIN_STAKE, address_from_public_key(key(2).public_key)
    )
    assert (genesis.validators[1].commission_bps, genesis.validators[1].queen) == (1000, False)
    assert (genesis.validators[0].commission_bps, genesis.validators[0].queen) == (500, True)
    assert genesis.stable_issuer == address_from_public_key(key(3).public_key)
    assert genesis.pool == GenesisPool(
        POOL_GPU, POOL_STABLE, address_from_public_key(key(3).public_key)
    )
    validate_genesis(genesis)


def test_json_round_trip_spells_out_defaults() -> None:
    genesis = genesis_from_json(valid_doc())
    doc = genesis_to_json(genesis)
    assert doc["params"]["staking"]["max_validators"] == 100
    assert doc["accounts"][1]["stable"] == 0
    assert doc["validators"][1]["name"] == ""
    assert (doc["validators"][1]["commission_bps"], doc["validators"][1]["queen"]) == (1000, False)
    assert doc["pool"] == valid_doc()["pool"]
    assert genesis_from_json(doc) == genesis
    assert genesis_to_json(genesis_from_json({**valid_doc(), "pool": None}))["pool"] is None
    assert genesis_hash(genesis_from_json(doc)) == genesis_hash(genesis)


def test_hash_is_sha256_of_canonical_json() -> None:
    genesis = genesis_from_json(valid_doc())
    canonical = json.dumps(
        genesis_to_json(genesis), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()
    assert canonical_genesis_bytes(genesis) == canonical
    assert genesis_hash(genesis) == hashlib.sha256(canonical).digest()


def test_hash_ignores_layout_and_spelled_out_defaults() -> None:
    doc = valid_doc()
    reordered = json.loads(json.dumps(doc, sort_keys=True, indent=7))
    explicit = copy.deepcopy(doc)
    explicit["params"] = genesis_to_json(genesis_from_json(doc))["params"]
    del explicit["initial_height"]
    hashes = {genesis_hash(genesis_from_json(d)) for d in (doc, reordered, explicit)}
    assert len(hashes) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(chain_id="gannet-test-2"),
        lambda d: d.update(genesis_time_ms=d["genesis_time_ms"] + 1),
        lambda d: d.update(initial_height=2),
        lambda d: d["params"].update(fee={"min_fee": 1001}),
        lambda d: d["accounts"][0].update(gpu=d["accounts"][0]["gpu"] + 1),
        lambda d: d["accounts"][1]["locks"][0].update(release_height=1001),
        lambda d: d["validators"][0].update(name="v1"),
        lambda d: d.update(stable_issuer=None),
        lambda d: d["accounts"].reverse(),
        lambda d: d["validators"][0].update(commission_bps=501),
        lambda d: d["validators"][0].update(queen=False),
        lambda d: d["pool"].update(gpu=POOL_GPU + 1),
        lambda d: d["pool"].update(stable=POOL_STABLE + 1),
        lambda d: d["pool"].update(owner=addr(4)),
        lambda d: d.update(pool=None),
    ],
)
def test_hash_covers_every_field(change: Callable[[dict], None]) -> None:
    doc = valid_doc()
    before = genesis_hash(genesis_from_json(doc))
    change(doc)
    assert genesis_hash(genesis_from_json(doc)) != before


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    genesis = genesis_from_json(valid_doc())
    path = tmp_path / "genesis.json"
    dump_genesis(genesis, path)
    assert load_genesis(path) == genesis
    assert genesis_hash(load_genesis(path)) == genesis_hash(genesis)
    assert (path.stat().st_mode & 0o777) == 0o644
    dump_genesis(set_stable_issuer(genesis, None), path)  # replaces the old file
    assert load_genesis(path).stable_issuer is None
    assert sorted(os.listdir(tmp_path)) == ["genesis.json"]  # no temp file left behind


def test_dump_to_missing_folder_is_a_genesis_error(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot write"):
        dump_genesis(genesis_from_json(valid_doc()), tmp_path / "absent" / "genesis.json")


@st.composite
def genesis_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Random valid genesis documents."""
    n_accounts = draw(st.integers(0, 5))
    raw_addresses = draw(
        st.lists(st.binary(min_size=20, max_size=20), min_size=n_accounts + 4, unique=True)
    )
    accounts = []
    for raw in raw_addresses[:n_accounts]:
        locks = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"amount": st.integers(1, 10**12), "release_height": st.integers(2**20, 2**40)}
                ),
                max_size=3,
            )
        )
        account = {"address": encode_address(raw), "gpu": draw(st.integers(0, 10**15))}
        account.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "stable": st.integers(0, 2**60),
                        "licences": st.integers(0, 2**32 - 1),
                    },
                )
            )
        )
        if locks or draw(st.booleans()):
            account["locks"] = locks
        accounts.append(account)
    seeds = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4, unique=True))
    validators = []
    for seed, operator in zip(seeds, raw_addresses[n_accounts:], strict=False):
        validator = {
            "public_key": SigningKey.from_seed(seed).public_key.hex(),
            "power": draw(st.integers(MIN_STAKE, 10**15)),
            "operator": encode_address(operator),
        }
        if draw(st.booleans()):
            validator["name"] = draw(
                st.text(st.characters(codec="utf-8", categories=["L", "N"]), max_size=64)
            )
        validator.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={"commission_bps": st.integers(0, 10_000), "queen": st.booleans()},
                )
            )
        )
        validators.append(validator)
    doc: dict[str, Any] = {
        "chain_id": draw(st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)),
        "genesis_time_ms": draw(st.integers(0, UINT64_MAX)),
        "accounts": accounts,
        "validators": validators,
    }
    if draw(st.booleans()):
        doc["initial_height"] = draw(st.integers(1, 2**20 - 1))
    if draw(st.booleans()):
        doc["params"] = {"block": {"block_time_ms": draw(st.sampled_from([250, 1000, 5000]))}}
    if draw(st.booleans()):
        doc["stable_issuer"] = draw(
            st.one_of(st.none(), st.just(encode_address(raw_addresses[-1])))
        )
    if draw(st.booleans()):
        doc["pool"] = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "gpu": st.integers(1002, 10_000_000 * GPU),
                        "stable": st.integers(1002, 2**60),
                        "owner": st.just(encode_address(raw_addresses[-2])),
                    }
                ),
            )
        )
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(genesis_docs(), st.integers(0, 4), st.booleans())
def test_random_valid_documents_round_trip_and_hash_stably(
    doc: dict[str, Any], indent: int, sort_keys: bool
) -> None:
    assert validate_genesis_json(doc) == []
    genesis = genesis_from_json(doc)
    again = json.loads(json.dumps(genesis_to_json(genesis), indent=indent, sort_keys=sort_keys))
    assert genesis_from_json(again) == genesis
    relaid = json.loads(json.dumps(doc, indent=indent, sort_keys=sort_keys))
    assert genesis_hash(genesis_from_json(relaid)) == genesis_hash(genesis)
    assert len(genesis.validators) == len(doc["validators"])


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(genesis_docs())
def test_random_documents_survive_disk(tmp_path: Path, doc: dict[str, Any]) -> None:
    genesis = genesis_from_json(doc)
    path = tmp_path / "genesis.json"
    dump_genesis(genesis, path)
    assert genesis_hash(load_genesis(path)) == genesis_hash(genesis)


# --- every rule, with its path ------------------------------------------------


def set_in(path: list[Any], value: Any) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        node = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


def delete(path: list[Any]) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        node = doc
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return change


ZERO_KEY = "00" * 32
IDENTITY_KEY = "01" + "00" * 31  # the neutral point: small order

BREAKS: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("chain id case", set_in(["chain_id"], "Gannet-1"), "chain_id", "a-z"),
    ("chain id empty", set_in(["chain_id"], ""), "chain_id", "1..64"),
    ("chain id long", set_in(["chain_id"], "a" * 65), "chain_id", "1..64"),
    ("chain id type", set_in(["chain_id"], 7), "chain_id", "expected a string"),
    ("chain id missing", delete(["chain_id"]), "chain_id", "missing"),
    ("time float", set_in(["genesis_time_ms"], 1.5), "genesis_time_ms", "number 1.5"),
    ("time negative", set_in(["genesis_time_ms"], -1), "genesis_time_ms", "negative"),
    ("time too big", set_in(["genesis_time_ms"], 2**64), "genesis_time_ms", "too large"),
    ("height zero", set_in(["initial_height"], 0), "initial_height", "at least 1"),
    ("unknown top", set_in(["app_state"], {}), "app_state", "unknown field"),
    ("accounts type", set_in(["accounts"], {}), "accounts", "expected a list"),
    ("account type", set_in(["accounts", 0], "x"), "accounts[0]", "expected an object"),
    ("gpu negative", set_in(["accounts", 0, "gpu"], -5), "accounts[0].gpu", "negative"),
    ("gpu > uint64", set_in(["accounts", 0, "gpu"], 2**64), "accounts[0].gpu", "too large"),
    ("gpu bool", set_in(["accounts", 0, "gpu"], True), "accounts[0].gpu", "boolean"),
    ("gpu string", set_in(["accounts", 0, "gpu"], "5"), "accounts[0].gpu", 'string "5"'),
    ("gpu float", set_in(["accounts", 0, "gpu"], 5.0), "accounts[0].gpu", "number 5.0"),
    ("gpu missing", delete(["accounts", 0, "gpu"]), "accounts[0].gpu", "missing"),
    ("stable > uint64", set_in(["accounts", 0, "stable"], 2**64), "accounts[0].stable", "large"),
    ("licences > u32", set_in(["accounts", 0, "licences"], 2**32), "accounts[0].licences", "large"),
    ("account extra", set_in(["accounts", 0, "nonce"], 0), "accounts[0].nonce", "unknown"),
    (
        "bad checksum",
        set_in(["accounts", 0, "address"], addr(1)[:-1] + ("q" if addr(1)[-1] != "q" else "p")),
        "accounts[0].address",
        "checksum",
    ),
    (
        "bad prefix",
        set_in(["accounts", 0, "address"], "cosmos1qqqq"),
        "accounts[0].address",
        "prefix",
    ),
    ("hex address", set_in(["accounts", 0, "address"], "11" * 20), "accounts[0].address", "prefix"),
    ("address type", set_in(["accounts", 0, "address"], 5), "accounts[0].address", "string"),
    (
        "duplicate account",
        lambda d: d["accounts"].append(dict(d["accounts"][0])),
        "accounts[2].address",
        "duplicate of accounts[0]",
    ),
    ("locks type", set_in(["accounts", 1, "locks"], {}), "accounts[1].locks", "expected a list"),
    (
        "lock zero",
        set_in(["accounts", 1, "locks", 0, "amount"], 0),
        "accounts[1].locks[0].amount",
        "at least 1",
    ),
    (
        "lock released",
        set_in(["accounts", 1, "locks", 0, "release_height"], 1),
        "accounts[1].locks[0].release_height",
        "after initial_height",
    ),
    (
        "lock missing field",
        delete(["accounts", 1, "locks", 0, "amount"]),
        "accounts[1].locks[0].amount",
        "missing",
    ),
    (
        "too many locks",
        set_in(["accounts", 1, "locks"], [{"amount": 1, "release_height": 9}] * 257),
        "accounts[1].locks",
        f"at most {MAX_LOCKS_PER_ACCOUNT}",
    ),
    (
        "balance plus locks overflow",
        lambda d: d["accounts"][1].update(gpu=UINT64_MAX),
        "accounts[1]",
        "fit uint64",
    ),
    ("no validators", set_in(["validators"], []), "validators", "at least one"),
    ("validators missing", delete(["validators"]), "validators", "missing"),
    ("zero power", set_in(["validators", 0, "power"], 0), "validators[0].power", "zero power"),
    (
        "power below stake",
        set_in(["validators", 0, "power"], MIN_STAKE - 1),
        "validators[0].power",
        "min_validator_stake",
    ),
    ("power float", set_in(["validators", 0, "power"], 1e12), "validators[0].power", "number"),
    (
        "duplicate key",
        set_in(["validators", 1, "public_key"], key(10).public_key.hex()),
        "validators[1].public_key",
        "duplicate of validators[0]",
    ),
    (
        "duplicate operator",
        set_in(["validators", 1, "operator"], addr(1)),
        "validators[1].operator",
        "duplicate of validators[0]",
    ),
    (
        "short key",
        set_in(["validators", 0, "public_key"], "ab" * 31),
        "validators[0].public_key",
        "64 hex digits",
    ),
    (
        "key not hex",
        set_in(["validators", 0, "public_key"], "zz" * 32),
        "validators[0].public_key",
        "64 hex digits",
    ),
    (
        "small-order key",
        set_in(["validators", 0, "public_key"], IDENTITY_KEY),
        "validators[0].public_key",
        "Ed25519",
    ),
    (
        "zero key",
        set_in(["validators", 0, "public_key"], ZERO_KEY),
        "validators[0].public_key",
        "Ed25519",
    ),
    (
        "bad operator",
        set_in(["validators", 0, "operator"], "gnt1x"),
        "validators[0].operator",
        "address",
    ),
    ("long name", set_in(["validators", 0, "name"], "n" * 65), "validators[0].name", "at most 64"),
    ("control name", set_in(["validators", 0, "name"], "a\nb"), "validators[0].name", "printable"),
    (
        "commission above 100 %",
        set_in(["validators", 0, "commission_bps"], 10_001),
        "validators[0].commission_bps",
        "at most 10000",
    ),
    (
        "commission negative",
        set_in(["validators", 1, "commission_bps"], -1),
        "validators[1].commission_bps",
        "negative",
    ),
    (
        "commission float",
        set_in(["validators", 0, "commission_bps"], 0.5),
        "validators[0].commission_bps",
        "integer",
    ),
    ("queen int", set_in(["validators", 0, "queen"], 1), "validators[0].queen", "boolean"),
    ("queen string", set_in(["validators", 1, "queen"], "yes"), "validators[1].queen", "boolean"),
    ("pool type", set_in(["pool"], [1, 2]), "pool", "expected an object or null"),
    ("pool gpu zero", set_in(["pool", "gpu"], 0), "pool.gpu", "empty pool"),
    ("pool stable zero", set_in(["pool", "stable"], 0), "pool.stable", "empty pool"),
    (
        "pool above liquidity",
        set_in(["pool", "gpu"], 10_000_000 * GPU + 1),
        "pool.gpu",
        "liquidity allocation 10000000000000000",
    ),
    ("pool owner", set_in(["pool", "owner"], "gnt1x"), "pool.owner", "address"),
    ("pool owner missing", delete(["pool", "owner"]), "pool.owner", "missing"),
    ("pool extra", set_in(["pool", "lp_shares"], 1), "pool.lp_shares", "unknown field"),
    (
        "pool stable overflow",
        set_in(["pool", "stable"], UINT64_MAX),
        "accounts",
        "accounts and pool",
    ),
    (
        "too many validators",
        set_in(["params"], {"staking": {"max_validators": 1}, "tokenomics": {"max_queens": 1}}),
        "validators",
        "max_validators 1",
    ),
    ("bad issuer", set_in(["stable_issuer"], "gnt1"), "stable_issuer", "address"),
    (
        "above supply",
        set_in(["accounts", 0, "gpu"], 130_000_000 * GPU),
        "accounts",
        "network allocation",
    ),
    (
        "stable overflow",
        lambda d: [a.update(stable=UINT64_MAX) for a in d["accounts"]],
        "accounts",
        "stable",
    ),
    (
        "params float",
        set_in(["params"], {"fee": {"min_fee": 0.5}}),
        "params.fee.min_fee",
        "integer",
    ),
    ("params unknown", set_in(["params"], {"fee": {"tip": 1}}), "params.fee.tip", "unknown"),
    (
        "params rule",
        set_in(["params"], {"staking": {"slash_fraction_double_sign": {"num": 2, "den": 1}}}),
        "params.staking.slash_fraction_double_sign",
        "must be in",
    ),
    ("params type", set_in(["params"], []), "params", "expected an object"),
]


@pytest.mark.parametrize(
    ("change", "path", "words"), [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS]
)
def test_each_problem_is_reported_with_its_path(
    change: Callable[[dict], None], path: str, words: str
) -> None:
    doc = valid_doc()
    change(doc)
    problems = validate_genesis_json(doc)
    assert [p.path for p in problems] == [path], problems
    assert words in problems[0].message
    with pytest.raises(GenesisError) as caught:
        genesis_from_json(doc)
    assert caught.value.problems == tuple(problems)
    assert "\n" not in str(caught.value)


def test_every_problem_of_a_document_is_reported_at_once() -> None:
    # Only breaks that touch distinct parts of the document compose.
    chosen = [
        "chain id case",
        "time float",
        "height zero",
        "unknown top",
        "gpu negative",
        "licences > u32",
        "lock zero",
        "power below stake",
        "short key",
        "long name",
        "bad issuer",
        "params float",
        "commission above 100 %",
        "queen string",
        "pool gpu zero",
    ]
    doc = valid_doc()
    expected = []
    for name, change, path, _ in BREAKS:
        if name in chosen:
            change(doc)
            expected.append(path)
    assert len(expected) == len(chosen)
    problems = validate_genesis_json(doc)
    assert sorted(p.path for p in problems) == sorted(expected)


def test_problems_of_one_entry_are_all_reported() -> None:
    doc = valid_doc()
    doc["accounts"][0] = {"address": "nope", "gpu": -1, "stable": 0.5, "licences": False, "x": 1}
    assert paths(doc) == [
        "accounts[0].address",
        "accounts[0].gpu",
        "accounts[0].licences",
        "accounts[0].stable",
        "accounts[0].x",
    ]


def test_problems_sort_by_index_as_numbers() -> None:
    doc = valid_doc()
    doc["accounts"] = [{"address": encode_address(bytes([i]) * 20), "gpu": 1} for i in range(12)]
    doc["accounts"][2]["gpu"] = -1
    doc["accounts"][10]["gpu"] = -1
    assert paths(doc) == ["accounts[2].gpu", "accounts[10].gpu"]


def test_bad_entries_do_not_hide_rules_over_the_rest() -> None:
    doc = valid_doc()
    doc["accounts"].append({"address": "bad", "gpu": 1})
    doc["accounts"].append(dict(doc["accounts"][0]))
    assert paths(doc) == ["accounts[2].address", "accounts[3].address"]


@pytest.mark.parametrize("doc", [[], "genesis", None, 3])
def test_root_must_be_an_object(doc: Any) -> None:
    assert paths(doc) == ["$"]


def test_supply_counts_balances_locks_stake_and_pool() -> None:
    room = 130_000_000 * GPU  # 200M less the 35 % network allocation
    doc = valid_doc()
    used = 5000 * GPU + 10 + 7 * GPU + 3 * MIN_STAKE + POOL_GPU
    doc["accounts"][0]["gpu"] += room - used
    assert validate_genesis_json(doc) == []
    doc["accounts"][1]["locks"][0]["amount"] += 1
    assert paths(doc) == ["accounts"]
    assert "pool 1000000000000000" in validate_genesis_json(doc)[0].message
    doc["accounts"][1]["locks"][0]["amount"] -= 1
    doc["pool"]["gpu"] += 1
    assert paths(doc) == ["accounts"]
    doc["pool"] = None  # the pool's GPU is room for accounts
    doc["accounts"][0]["gpu"] += POOL_GPU
    assert validate_genesis_json(doc) == []


def test_pool_may_take_the_whole_liquidity_allocation() -> None:
    doc = valid_doc()
    doc["pool"]["gpu"] = 10_000_000 * GPU  # 5 % of 200M
    assert validate_genesis_json(doc) == []
    doc["params"] = {"tokenomics": {"allocation_bps": {"liquidity": 400, "reserve": 2600}}}
    assert paths(doc) == ["pool.gpu"]


# --- reading files ------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "genesis.json"
    path.write_text(text)
    return path


def test_load_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot read genesis file"):
        load_genesis(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "not valid JSON"),
        ('{"chain_id": "a", "chain_id": "b"}', "duplicate key 'chain_id'"),
        ('{"genesis_time_ms": NaN}', "NaN"),
        ('{"genesis_time_ms": Infinity}', "Infinity"),
    ],
)
def test_load_rejects_bad_json(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(GenesisError, match=words) as caught:
        load_genesis(write(tmp_path, text))
    assert [p.path for p in caught.value.problems] == ["$"]


def test_load_rejects_invalid_bytes(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_bytes(b'{"chain_id": "\xff"}')
    with pytest.raises(GenesisError, match="not valid JSON"):
        read_genesis_json(path)


def test_load_lists_every_problem(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["chain_id"] = "BAD"
    doc["validators"] = []
    with pytest.raises(GenesisError) as caught:
        load_genesis(write(tmp_path, json.dumps(doc)))
    assert [p.path for p in caught.value.problems] == ["chain_id", "validators"]
    assert "2 problems" in str(caught.value)


def test_building_genesis_loads_without_validators(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["validators"] = []
    path = write(tmp_path, json.dumps(doc))
    assert load_genesis(path, require_validators=False).validators == ()
    with pytest.raises(GenesisError):
        load_genesis(path)


# --- builders -----------------------------------------------------------------


def built() -> Genesis:
    genesis = new_genesis("gannet-build", 1_700_000_000_000)
    genesis = add_account(genesis, addr(1), 5000 * GPU, stable=10**12, licences=5)
    genesis = add_account(genesis, "0x" + "ab" * 20, 10)
    genesis = add_validator(genesis, key(10).public_key, MIN_STAKE, addr(1), "v0", 0, True)
    return add_validator(genesis, key(11).public_key.hex(), MIN_STAKE, bytes.fromhex("ab" * 20))


def test_builders_make_a_valid_genesis() -> None:
    genesis = built()
    validate_genesis(genesis)
    assert genesis.accounts[1].address == bytes.fromhex("ab" * 20)
    assert genesis.validators[1].operator == bytes.fromhex("ab" * 20)
    assert (genesis.validators[0].commission_bps, genesis.validators[0].queen) == (0, True)
    assert (genesis.validators[1].commission_bps, genesis.validators[1].queen) == (1000, False)
    assert genesis_from_json(genesis_to_json(genesis)) == genesis
    pooled = set_pool(genesis, POOL_GPU, POOL_STABLE, addr(3))
    assert pooled.pool == GenesisPool(
        POOL_GPU, POOL_STABLE, address_from_public_key(key(3).public_key)
    )
    assert genesis_from_json(genesis_to_json(pooled)) == pooled
    assert genesis_hash(pooled) != genesis_hash(genesis)


def test_new_genesis_without_validators_is_incomplete() -> None:
    genesis = new_genesis("gannet-build", 0, default_params(500))
    assert genesis.params.block.block_time_ms == 500
    with pytest.raises(GenesisError, match="validators"):
        validate_genesis(genesis)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: new_genesis("Bad Id", 0), "chain_id"),
        (lambda: new_genesis("ok", -1), "genesis_time_ms"),
        (
            lambda: new_genesis(
                "ok", 0, NetworkParams(fee=NetworkParams().fee.__class__(min_fee=-1))
            ),
            "params.fee.min_fee",
        ),
        (lambda: add_account(built(), addr(1), 1), "already in genesis"),
        (lambda: add_account(built(), "gnt1nope", 1), "bad address"),
        (lambda: add_account(built(), b"short", 1), "bad address"),
        (lambda: add_account(built(), addr(5), -1), "accounts[2].gpu"),
        (lambda: add_account(built(), addr(5), 200_000_000 * GPU), "network allocation"),
        (lambda: add_account(built(), addr(5), 1, licences=2**32), "accounts[2].licences"),
        (
            lambda: add_account(built(), addr(5), 1, locks=[GenesisLock(1, 1)]),
            "after initial_height",
        ),
        (lambda: add_validator(built(), key(10).public_key, MIN_STAKE, addr(7)), "already in"),
        (lambda: add_validator(built(), key(12).public_key, MIN_STAKE, addr(1)), "already runs"),
        (lambda: add_validator(built(), "xyz", MIN_STAKE, addr(7)), "64 hex digits"),
        (lambda: add_validator(built(), b"\x00" * 31, MIN_STAKE, addr(7)), "32 bytes"),
        (lambda: add_validator(built(), key(12).public_key, 5, addr(7)), "min_validator_stake"),
        (lambda: set_stable_issuer(built(), "gnt1zz"), "bad stable issuer"),
        (
            lambda: add_validator(built(), key(12).public_key, MIN_STAKE, addr(7), "", 10_001),
            "validators[2].commission_bps",
        ),
        (
            lambda: add_validator(built(), key(12).public_key, MIN_STAKE, addr(7), "", 0, 1),
            "validators[2].queen",
        ),
        (lambda: set_pool(built(), 0, 1, addr(3)), "pool.gpu"),
        (lambda: set_pool(built(), 1, 0, addr(3)), "pool.stable"),
        (lambda: set_pool(built(), 10_000_000 * GPU + 1, 1, addr(3)), "liquidity allocation"),
        (lambda: set_pool(built(), 1, 1, "gnt1zz"), "bad pool owner"),
        (lambda: set_pool(built(), 1000, 1001, addr(3)), "seed too small"),
        (
            lambda: set_pool(
                add_account(built(), addr(5),
                            130_000_000 * GPU - 5000 * GPU - 10 - 2 * MIN_STAKE - 1001),
                1002,
                1002,
                addr(3),
            ),
            "network allocation",
        ),
    ],
)
def test_builders_refuse_what_breaks_a_rule(build: Callable[[], Genesis], words: str) -> None:
    with pytest.raises(GenesisError, match=words.replace("[", r"\[").replace("]", r"\]")):
        build()


# --- vesting ------------------------------------------------------------------


def test_vesting_locks_sum_exactly_and_release_in_order() -> None:
    liquid, locks = compute_vesting_locks(
        10**9 + 7, unlocked=Ratio(5, 100), start_height=1, cliff_blocks=0, vesting_blocks=1000
    )
    assert liquid == (10**9 + 7) * 5 // 100
    assert liquid + sum(lock.amount for lock in locks) == 10**9 + 7
    heights = [lock.release_height for lock in locks]
    assert heights == sorted(set(heights))
    assert len(locks) == VESTING_TRANCHES
    assert heights[-1] == 1 + 1000
    assert all(lock.amount > 0 for lock in locks)


def test_vesting_with_fewer_blocks_than_tranches_merges_steps() -> None:
    liquid, locks = compute_vesting_locks(
        100, unlocked=Ratio(0, 1), start_height=5, cliff_blocks=3, vesting_blocks=2
    )
    assert liquid == 0
    assert locks == (GenesisLock(50, 9), GenesisLock(50, 10))


def test_plan_schedules_use_genesis_params() -> None:
    genesis = built()
    tokenomics = genesis.params.tokenomics
    liquid, locks = compute_genesis_vesting(genesis, "node-holder", 1000 * GPU)
    assert liquid == 50 * GPU
    assert locks[-1].release_height == 1 + tokenomics.node_holder_vesting_blocks
    liquid, locks = compute_genesis_vesting(genesis, "investor", 1000 * GPU)
    assert liquid == 0
    first_month = -(-tokenomics.investor_vesting_blocks // VESTING_TRANCHES)
    assert locks[0].release_height == 1 + tokenomics.investor_cliff_blocks + first_month
    assert locks[-1].release_height == (
        1 + tokenomics.investor_cliff_blocks + tokenomics.investor_vesting_blocks
    )
    vested = add_account(genesis, addr(9), liquid, locks=locks)
    validate_genesis(vested)
    with pytest.raises(GenesisError, match="unknown vesting schedule"):
        compute_genesis_vesting(genesis, "founder", 1)


def test_problem_prints_as_path_and_message() -> None:
    assert str(Problem("accounts[3].gpu", "negative")) == "accounts[3].gpu: negative"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def json_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree a value can be put."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += json_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += json_paths(v, (*prefix, i))
    return found


@settings(max_examples=300, deadline=None)
@given(st.data(), JSON_VALUES)
def test_any_value_anywhere_gives_problems_never_a_crash(data: st.DataObject, value: Any) -> None:
    doc = valid_doc()
    doc["params"] = genesis_to_json(genesis_from_json(doc))["params"]
    where = data.draw(st.sampled_from(json_paths(doc)))
    set_in(list(where), value)(doc)
    problems = validate_genesis_json(doc)
    assert all(isinstance(p, Problem) and p.path and p.message for p in problems)
    if problems:
        with pytest.raises(GenesisError):
            genesis_from_json(doc)
    else:
        genesis_from_json(doc)
