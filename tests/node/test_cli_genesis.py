"""`gannet genesis ...` through click's CliRunner: the build flow and one-line failures."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from consensus.params import GPU
from genesis.document import genesis_hash, load_genesis
from node.cli import main
from node.cli_genesis import parse_uint

KEY = SigningKey.from_seed(bytes(range(32)))
OPERATOR = encode_address(address_from_public_key(KEY.public_key))
OTHER = encode_address(bytes(range(20)))


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["genesis", *args], env=env)


def assert_one_line_failure(result: Result, words: str) -> None:
    """Non-zero exit, one line of output, no traceback, and the message says `words`."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert words in lines[0], lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    result = run(
        "init",
        "--chain-id",
        "gannet-cli",
        "--home",
        str(tmp_path),
        "--genesis-time-ms",
        "1700000000000",
    )
    assert result.exit_code == 0, result.output
    return tmp_path


def genesis_path(home: Path) -> Path:
    return home / "config" / "genesis.json"


# --- the build flow -----------------------------------------------------------


def test_init_add_validate_hash(home: Path) -> None:
    result = run(
        "add-account",
        "--home",
        str(home),
        OPERATOR,
        "12.5gpu",
        "--licences",
        "5",
        "--stable",
        "1000",
    )
    assert result.exit_code == 0, result.output
    assert "12.5 GPU (12500000000 base units)" in result.output
    result = run("add-account", "--home", str(home), "0x" + "ab" * 20, "7")
    assert result.exit_code == 0, result.output
    result = run(
        "add-validator",
        "--home",
        str(home),
        "--public-key",
        KEY.public_key.hex(),
        "--power",
        "1000gpu",
        "--operator",
        OPERATOR,
        "--name",
        "v0",
    )
    assert result.exit_code == 0, result.output

    path = genesis_path(home)
    genesis = load_genesis(path)
    assert genesis.chain_id == "gannet-cli"
    assert genesis.genesis_time_ms == 1_700_000_000_000
    assert genesis.accounts[0].gpu == 12_500_000_000
    assert (genesis.accounts[0].licences, genesis.accounts[0].stable) == (5, 1000)
    assert genesis.accounts[1].address == bytes.fromhex("ab" * 20)
    assert genesis.validators[0].power == 1000 * GPU
    assert genesis.validators[0].name == "v0"

    digest = genesis_hash(genesis).hex()
    result = run("validate", str(path))
    assert (result.exit_code, result.output) == (0, f"ok: {digest}\n")
    result = run("hash", str(path))
    assert (result.exit_code, result.output) == (0, f"{digest}\n")


def test_init_defaults_time_to_now_and_refuses_overwrite(tmp_path: Path) -> None:
    result = run("init", "--chain-id", "gannet-now", "--home", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert load_genesis(genesis_path(tmp_path), require_validators=False).genesis_time_ms > 0
    assert_one_line_failure(run("init", "--chain-id", "x", "--home", str(tmp_path)), "--force")
    result = run("init", "--chain-id", "gannet-two", "--home", str(tmp_path), "--force")
    assert result.exit_code == 0, result.output
    assert load_genesis(genesis_path(tmp_path), require_validators=False).chain_id == "gannet-two"


def test_home_from_environment(tmp_path: Path) -> None:
    result = run("init", "--chain-id", "gannet-env", env={"GANNET_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert genesis_path(tmp_path).exists()


def test_init_block_time_rederives_durations(tmp_path: Path) -> None:
    result = run("init", "--chain-id", "fast", "--home", str(tmp_path), "--block-time-ms", "250")
    assert result.exit_code == 0, result.output
    params = load_genesis(genesis_path(tmp_path), require_validators=False).params
    assert params.block.block_time_ms == 250
    assert params.staking.unbonding_period_blocks == 28 * 86_400 * 4


def test_init_with_params_file_and_issuer(tmp_path: Path) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"staking": {"min_validator_stake": 100 * GPU}}))
    result = run(
        "init",
        "--chain-id",
        "testnet",
        "--home",
        str(tmp_path),
        "--params",
        str(params_file),
        "--stable-issuer",
        OTHER,
    )
    assert result.exit_code == 0, result.output
    genesis = load_genesis(genesis_path(tmp_path), require_validators=False)
    assert genesis.params.staking.min_validator_stake == 100 * GPU
    assert genesis.stable_issuer == bytes(range(20))


def test_add_account_with_vesting(home: Path) -> None:
    result = run(
        "add-account", "--home", str(home), OPERATOR, "1000gpu", "--vesting", "node-holder"
    )
    assert result.exit_code == 0, result.output
    account = load_genesis(genesis_path(home), require_validators=False).accounts[0]
    assert account.gpu == 50 * GPU
    assert account.gpu + sum(lock.amount for lock in account.locks) == 1000 * GPU


def test_add_validator_from_key_file(home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "validator_key.json"
    key_file.write_text(json.dumps({"seed": KEY.seed.hex()}))
    result = run(
        "add-validator",
        "--home",
        str(home),
        "--key-file",
        str(key_file),
        "--power",
        str(1000 * GPU),
        "--operator",
        OPERATOR,
    )
    assert result.exit_code == 0, result.output
    genesis = load_genesis(genesis_path(home))
    assert genesis.validators[0].public_key == KEY.public_key


def test_validate_prints_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(
        json.dumps(
            {
                "chain_id": "Bad",
                "genesis_time_ms": -1,
                "accounts": [{"address": "gnt1xyz", "gpu": 1.5}],
                "validators": [],
            }
        )
    )
    result = run("validate", str(path))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "accounts[0].address: address data is 3 characters, shorter than a checksum",
        "accounts[0].gpu: expected an integer, got number 1.5",
        "chain_id: must be 1..64 characters of a-z, 0-9 and '-', got 'Bad'",
        "genesis_time_ms: negative: must be at least 0, got -1",
        "validators: no validators: a chain needs at least one",
    ]


# --- one-line failures --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("gnt1xyz", "bad address 'gnt1xyz'"),
        (OPERATOR[:-1] + ("q" if OPERATOR[-1] != "q" else "p"), "checksum"),
        ("cosmos1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsl6vm0", "prefix"),
        ("0x1234", "hex address"),
    ],
)
def test_bad_address_fails_on_one_line(home: Path, address: str, words: str) -> None:
    assert_one_line_failure(run("add-account", "--home", str(home), address, "1gpu"), words)


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("1.0000000001gpu", "at most 9"),
        ("abc", "not base units"),
        ("1e9", "not base units"),
        ("1,000", "not base units"),
        ("1_000", "not base units"),
        ("1.5", "no unit"),
        ("", "empty"),
        ("18446744073709551616", "maximum"),
        ("18446744073.709551616gpu", "maximum"),
    ],
)
def test_bad_amount_fails_on_one_line(home: Path, amount: str, words: str) -> None:
    assert_one_line_failure(run("add-account", "--home", str(home), OPERATOR, amount), words)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--stable", "-1"], "bad stable amount"),
        (["--licences", "4294967296"], "bad licence count"),
        (["--vesting", "founder"], "unknown vesting schedule"),
    ],
)
def test_bad_account_options_fail_on_one_line(home: Path, args: list[str], words: str) -> None:
    result = run("add-account", "--home", str(home), OPERATOR, "1gpu", *args)
    assert_one_line_failure(result, words)


def test_duplicate_and_oversized_accounts_fail(home: Path) -> None:
    assert run("add-account", "--home", str(home), OPERATOR, "1gpu").exit_code == 0
    result = run("add-account", "--home", str(home), OPERATOR, "1gpu")
    assert_one_line_failure(result, "already in genesis")
    result = run("add-account", "--home", str(home), OTHER, "130000000gpu")
    assert_one_line_failure(result, "network allocation")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "exactly one of --public-key and --key-file"),
        (["--public-key", "zz"], "64 hex digits"),
        (["--public-key", "00" * 32], "Ed25519"),
        (["--public-key", KEY.public_key.hex(), "--key-file", "k.json"], "exactly one"),
        (["--key-file", "/nonexistent/key.json"], "no key file"),
    ],
)
def test_bad_validator_fails_on_one_line(home: Path, args: list[str], words: str) -> None:
    result = run(
        "add-validator", "--home", str(home), "--power", "1000gpu", "--operator", OPERATOR, *args
    )
    assert_one_line_failure(result, words)


def test_validator_below_min_stake_fails(home: Path) -> None:
    result = run(
        "add-validator",
        "--home",
        str(home),
        "--public-key",
        KEY.public_key.hex(),
        "--power",
        "999gpu",
        "--operator",
        OPERATOR,
    )
    assert_one_line_failure(result, "min_validator_stake")
    result = run(
        "add-validator",
        "--home",
        str(home),
        "--public-key",
        KEY.public_key.hex(),
        "--power",
        "1000gpu",
        "--operator",
        "gnt1bad",
    )
    assert_one_line_failure(result, "bad operator")


def test_key_file_seed_and_public_key_must_agree(home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    other = SigningKey.from_seed(bytes(32)).public_key
    key_file.write_text(json.dumps({"seed": KEY.seed.hex(), "public_key": other.hex()}))
    result = run(
        "add-validator",
        "--home",
        str(home),
        "--key-file",
        str(key_file),
        "--power",
        "1000gpu",
        "--operator",
        OPERATOR,
    )
    assert_one_line_failure(result, "does not match")


def test_commands_need_an_existing_genesis(tmp_path: Path) -> None:
    result = run("add-account", "--home", str(tmp_path), OPERATOR, "1gpu")
    assert_one_line_failure(result, "gannet genesis init")
    result = run(
        "add-validator",
        "--home",
        str(tmp_path),
        "--public-key",
        KEY.public_key.hex(),
        "--power",
        "1000gpu",
        "--operator",
        OPERATOR,
    )
    assert_one_line_failure(result, "gannet genesis init")


@pytest.mark.parametrize("command", ["validate", "hash"])
def test_missing_file_fails_on_one_line(tmp_path: Path, command: str) -> None:
    result = run(command, str(tmp_path / "absent.json"))
    assert_one_line_failure(result, "cannot read genesis file")


@pytest.mark.parametrize("command", ["validate", "hash"])
def test_malformed_json_fails_on_one_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "genesis.json"
    path.write_text('{"chain_id": ')
    assert_one_line_failure(run(command, str(path)), "not valid JSON")


def test_hash_of_invalid_genesis_fails_on_one_line(home: Path) -> None:
    # Built but without validators: complete enough to build on, not to hash.
    assert_one_line_failure(run("hash", str(genesis_path(home))), "no validators")


def test_init_rejects_bad_inputs(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert_one_line_failure(run("init", "--chain-id", "Bad_Id", "--home", home), "chain_id")
    result = run("init", "--chain-id", "ok", "--home", home, "--genesis-time-ms", "soon")
    assert_one_line_failure(result, "bad genesis time")
    result = run("init", "--chain-id", "ok", "--home", home, "--block-time-ms", "0")
    assert_one_line_failure(result, "block time")
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"fee": {"min_fee": 1.5}}))
    result = run("init", "--chain-id", "ok", "--home", home, "--params", str(params_file))
    assert_one_line_failure(result, "params.fee.min_fee")
    result = run(
        "init",
        "--chain-id",
        "ok",
        "--home",
        home,
        "--params",
        str(params_file),
        "--block-time-ms",
        "500",
    )
    assert_one_line_failure(result, "not both")
    assert not genesis_path(tmp_path).exists()


# --- numbers ------------------------------------------------------------------


def test_parse_uint_bounds() -> None:
    assert parse_uint("42", "x") == 42
    for bad in ["-1", "4.0", "x", "", "1 2"]:
        with pytest.raises(ValueError, match="bad x"):
            parse_uint(bad, "x")
    with pytest.raises(ValueError):
        parse_uint("11", "x", maximum=10)


# --- the economy: commission, queens, the pool ----------------------------------


def add_key_validator(home: Path, *args: str) -> Result:
    return run(
        "add-validator",
        "--home",
        str(home),
        "--public-key",
        KEY.public_key.hex(),
        "--power",
        "1000gpu",
        "--operator",
        OPERATOR,
        *args,
    )


def test_validator_commission_queen_and_pool(home: Path) -> None:
    result = add_key_validator(home, "--commission-bps", "250", "--queen")
    assert result.exit_code == 0, result.output
    result = run(
        "set-pool", "--home", str(home), "--gpu", "1000000gpu", "--stable", "77", "--owner", OTHER
    )
    assert result.exit_code == 0, result.output
    assert "pool seeded with 1000000 GPU and 77 stable units" in result.output
    genesis = load_genesis(genesis_path(home))
    assert (genesis.validators[0].commission_bps, genesis.validators[0].queen) == (250, True)
    assert genesis.pool is not None
    assert (genesis.pool.gpu, genesis.pool.stable) == (1_000_000 * GPU, 77)
    assert genesis.pool.owner == bytes(range(20))
    assert run("validate", str(genesis_path(home))).exit_code == 0


def test_validator_commission_defaults_to_ten_percent(home: Path) -> None:
    assert add_key_validator(home).exit_code == 0
    genesis = load_genesis(genesis_path(home))
    assert (genesis.validators[0].commission_bps, genesis.validators[0].queen) == (1000, False)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--commission-bps", "10001"], "bad commission"), (["--commission-bps", "-1"], "bad")],
)
def test_bad_commission_fails_on_one_line(home: Path, args: list[str], words: str) -> None:
    assert_one_line_failure(add_key_validator(home, *args), words)


@pytest.mark.parametrize(
    ("gpu", "stable", "owner", "words"),
    [
        ("10000000.000000001gpu", "1", OTHER, "liquidity allocation"),
        ("0", "1", OTHER, "pool.gpu"),
        ("1gpu", "0", OTHER, "pool.stable"),
        ("1gpu", "x", OTHER, "bad stable amount"),
        ("1gpu", "1", "gnt1zz", "bad owner"),
    ],
)
def test_bad_pool_fails_on_one_line(
    home: Path, gpu: str, stable: str, owner: str, words: str
) -> None:
    result = run(
        "set-pool", "--home", str(home), "--gpu", gpu, "--stable", stable, "--owner", owner
    )
    assert_one_line_failure(result, words)


def validate_lines(tmp_path: Path, doc: dict) -> tuple[int, list[str]]:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    result = run("validate", str(path))
    return result.exit_code, result.output.strip().splitlines()


def broken_doc(params: dict) -> dict:
    return {
        "chain_id": "gannet-broken",
        "genesis_time_ms": 0,
        "params": params,
        "accounts": [],
        "validators": [
            {
                "public_key": KEY.public_key.hex(),
                "power": 1000 * GPU,
                "operator": OPERATOR,
                "commission_bps": 20_000,
                "queen": "yes",
            }
        ],
        "pool": {"gpu": 10_000_000 * GPU + 1, "stable": 0, "owner": OTHER},
    }


def test_validate_names_every_violation_on_its_own_line(tmp_path: Path) -> None:
    tiers = [
        {"min_licences": 0, "factor": {"num": 2, "den": 1}},
        {"min_licences": 5, "factor": {"num": 1, "den": 1}},
        {"min_licences": 5, "factor": {"num": 3, "den": 1}},
    ]
    params = {"tokenomics": {"licence_tiers": tiers, "emission_first_period": 70_000_001 * GPU}}
    code, lines = validate_lines(tmp_path, broken_doc(params))
    assert code == 1
    assert [line.split(": ", 1)[0] for line in lines] == [
        "params.tokenomics.emission_first_period",
        "params.tokenomics.licence_tiers[1].factor",
        "params.tokenomics.licence_tiers[2].min_licences",
        "pool.gpu",
        "pool.stable",
        "validators[0].commission_bps",
        "validators[0].queen",
    ]
    assert "70000000000000000" in lines[0]  # the network bucket it may not exceed


def test_validate_names_rules_between_param_groups(tmp_path: Path) -> None:
    params = {"tokenomics": {"queen_min_stake": 999 * GPU}}
    doc = broken_doc(params)
    del doc["pool"]
    doc["validators"][0].update(commission_bps=0, queen=True)
    code, lines = validate_lines(tmp_path, doc)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("params.tokenomics.queen_min_stake: must be at least")


def test_allocating_every_bucket_sums_to_supply_less_the_network_bucket(home: Path) -> None:
    """The plan's five genesis buckets, each to its own address, use up the genesis supply."""
    addresses = [encode_address(bytes([0x40 + i]) * 20) for i in range(5)]
    for bucket, address in zip(("reserve", "foundation", "team", "treasury", "liquidity"),
                               addresses, strict=True):
        vesting = "investor" if bucket == "team" else "none"
        result = run("allocate", "--home", str(home), bucket, address, "--vesting", vesting)
        assert result.exit_code == 0, result.output
    genesis = load_genesis(genesis_path(home), require_validators=False)
    held = [a.gpu + sum(lock.amount for lock in a.locks) for a in genesis.accounts]
    assert held == [50_000_000 * GPU, 30_000_000 * GPU, 20_000_000 * GPU, 20_000_000 * GPU,
                    10_000_000 * GPU]
    assert sum(held) == 130_000_000 * GPU  # 200M less the 35 % emitted over time
    assert genesis.accounts[2].gpu == 0 and len(genesis.accounts[2].locks) > 0  # team vests
    result = run("allocate", "--home", str(home), "team", encode_address(b"\x50" * 20))
    assert_one_line_failure(result, "network allocation")
