"""`gannet wallet` token-economy commands: each builds the right signed tx, or fails in one line.

The commands run against the node's real JSON-RPC server with the wallet test
endpoint of `test_cli_wallet`, which decodes every raw tx and checks its
signature; the tests compare the decoded body with the body the command should
build.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    KEEP_U8,
    KEEP_U32,
    QUEEN_IN,
    QUEEN_OUT,
    AddLiquidity,
    CreateValidator,
    Delegate,
    EditValidator,
    IssueStable,
    LicenceTransfer,
    PayRevenue,
    Redelegate,
    RemoveLiquidity,
    Swap,
    TxBody,
    Undelegate,
    Unjail,
    WithdrawRewards,
)
from chain.signing import sender_address, verify_tx_signature
from node.cli_wallet_economy import parse_cli_amount
from node.keys import save_key_file
from tests.node.test_cli_wallet import (
    ADDRESS,
    CHAIN_ID,
    PASSWORD,
    SCRYPT_N,
    SEED,
    RunningNode,
    WalletEndpoint,
    assert_one_line_failure,
    invoke,
    serve,
)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner with cheap scrypt and no password or RPC from the environment."""
    monkeypatch.setenv("GANNET_SCRYPT_N", SCRYPT_N)
    monkeypatch.delenv("GANNET_PASSWORD", raising=False)
    monkeypatch.delenv("GANNET_RPC", raising=False)
    return CliRunner()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def keystore(runner: CliRunner, tmp_path: Path, password_file: Path) -> Path:
    """A keystore holding the key of SEED (address ADDRESS) under PASSWORD."""
    seed_file = tmp_path / "seed.hex"
    seed_file.write_text(SEED.hex())
    path = tmp_path / "key.json"
    result = invoke(runner, "import", "--keystore", str(path), "--seed-file", str(seed_file),
                    "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def node() -> Iterator[RunningNode]:
    with serve(WalletEndpoint()) as running:
        yield running


VALIDATOR_KEY = SigningKey.from_seed(bytes(range(1, 33)))
VAL = address_from_public_key(VALIDATOR_KEY.public_key)
VAL_TEXT = encode_address(VAL)
OTHER = bytes(range(60, 80))
OTHER_TEXT = encode_address(OTHER)
GPU = 10**9

# (command line after the command's name, the body it must build)
CASES: list[tuple[list[str], TxBody]] = [
    (["stake", "--pubkey", VALIDATOR_KEY.public_key.hex(), "--amount", "1000gpu",
      "--commission-bps", "500"],
     CreateValidator(public_key=VALIDATOR_KEY.public_key, commission_bps=500,
                     self_stake=1000 * GPU, queen=QUEEN_OUT)),
    (["stake", "--pubkey", "0x" + VALIDATOR_KEY.public_key.hex(), "--amount", "12345",
      "--commission-bps", "0", "--queen"],
     CreateValidator(public_key=VALIDATOR_KEY.public_key, commission_bps=0, self_stake=12345,
                     queen=QUEEN_IN)),
    (["edit-validator", "--validator", VAL_TEXT, "--commission-bps", "10000"],
     EditValidator(validator=VAL, commission_bps=10_000, queen=KEEP_U8,
                   bound_licences=KEEP_U32)),
    (["edit-validator", "--validator", "0x" + VAL.hex(), "--queen", "in",
      "--bound-licences", "0"],
     EditValidator(validator=VAL, commission_bps=KEEP_U32, queen=QUEEN_IN, bound_licences=0)),
    (["edit-validator", "--validator", VAL_TEXT, "--queen", "out", "--bound-licences", "3",
      "--commission-bps", "7"],
     EditValidator(validator=VAL, commission_bps=7, queen=QUEEN_OUT, bound_licences=3)),
    (["delegate", "--validator", VAL_TEXT, "--amount", "2.5gpu"],
     Delegate(validator=VAL, amount=2_500_000_000)),
    (["unstake", "--validator", VAL_TEXT, "--amount", "1"], Undelegate(validator=VAL, amount=1)),
    (["redelegate", "--from", VAL_TEXT, "--to", OTHER_TEXT, "--amount", "3gpu"],
     Redelegate(source=VAL, target=OTHER, amount=3 * GPU)),
    (["withdraw", "--validator", VAL_TEXT], WithdrawRewards(validator=VAL)),
    (["unjail", "--validator", VAL_TEXT], Unjail(validator=VAL)),
    (["swap", "--sell", "gpu", "--amount", "1.5gpu", "--min-out", "700"],
     Swap(denom_in=DENOM_GPU, amount_in=1_500_000_000, min_out=700)),
    (["swap", "--sell", "stable", "--amount", "900", "--min-out", "0.25gpu"],
     Swap(denom_in=DENOM_STABLE, amount_in=900, min_out=250_000_000)),
    (["swap", "--sell", "stable", "--amount", "900", "--min-out", "0"],
     Swap(denom_in=DENOM_STABLE, amount_in=900, min_out=0)),
    (["add-liquidity", "--gpu", "10gpu", "--stable", "5000"],
     AddLiquidity(gpu=10 * GPU, stable=5000, min_shares=0)),
    (["add-liquidity", "--gpu", "1", "--stable", "2", "--min-shares", "9"],
     AddLiquidity(gpu=1, stable=2, min_shares=9)),
    (["remove-liquidity", "--shares", "42"],
     RemoveLiquidity(shares=42, min_gpu=0, min_stable=0)),
    (["remove-liquidity", "--shares", "42", "--min-gpu", "1gpu", "--min-stable", "8"],
     RemoveLiquidity(shares=42, min_gpu=GPU, min_stable=8)),
    (["licence-transfer", "--to", OTHER_TEXT, "--count", "2"],
     LicenceTransfer(to=OTHER, count=2)),
    (["issue-stable", "--to", OTHER_TEXT, "--amount", "1000000"],
     IssueStable(to=OTHER, amount=1_000_000)),
    (["pay-revenue", "--amount", "31"], PayRevenue(amount=31)),
]


def tx_args(args: list[str], keystore: Path, password_file: Path, rpc: str) -> list[str]:
    return [*args, "--keystore", str(keystore), "--password-file", str(password_file),
            "--rpc", rpc]


@pytest.mark.parametrize(("args", "body"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_command_signs_the_right_tx(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode,
    args: list[str], body: TxBody,
) -> None:
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url), "--no-wait")
    assert result.exit_code == 0, result.output
    [stx] = node.endpoint.received
    assert verify_tx_signature(stx)
    assert encode_address(sender_address(stx)) == ADDRESS
    assert (stx.tx.chain_id, stx.tx.nonce, stx.tx.fee) == (CHAIN_ID.encode(), 7, 2000)
    assert stx.tx.body == body
    assert result.output.strip().startswith("0x")


def test_explicit_fee_and_nonce_skip_the_node(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    args = ["delegate", "--validator", VAL_TEXT, "--amount", "1gpu", "--fee", "5",
            "--nonce", "0", "--no-wait"]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert result.exit_code == 0, result.output
    [stx] = node.endpoint.received
    assert (stx.tx.nonce, stx.tx.fee) == (0, 5)
    assert node.endpoint.called("gannet_getAccount") == []
    assert node.endpoint.called("gannet_estimateFee") == []


def test_wait_reports_inclusion(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    args = ["withdraw", "--validator", VAL_TEXT]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "included in block 12: ok, fee paid " \
        "0.000002 GPU"


def test_failed_receipt_is_one_line_and_non_zero(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.statuses = [{
        "status": "included", "reason": None, "height": 3, "index": 0,
        "receipt": {"status": "failed", "code": 101, "reason": "validator is jailed",
                    "fee_paid": "2000"}}]
    args = ["delegate", "--validator", VAL_TEXT, "--amount", "1gpu"]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: tx 0x")
    assert "failed in block 3: validator is jailed (code 101" in result.output


def test_node_rejection_is_one_line(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.reject_with = "insufficient fee"
    args = ["pay-revenue", "--amount", "5"]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert_one_line_failure(result, "node rejected the transaction: insufficient fee")


# --- pubkey from a validator key file --------------------------------------------------


def test_stake_reads_the_public_key_from_a_key_file(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode, tmp_path: Path
) -> None:
    key_file = tmp_path / "priv_validator_key.json"
    save_key_file(key_file, VALIDATOR_KEY)
    args = ["stake", "--pubkey", str(key_file), "--amount", "1gpu", "--commission-bps", "1",
            "--no-wait"]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert result.exit_code == 0, result.output
    assert node.endpoint.received[0].tx.body.public_key == VALIDATOR_KEY.public_key


def test_stake_reads_a_key_file_without_a_seed(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode, tmp_path: Path
) -> None:
    key_file = tmp_path / "pub.json"
    key_file.write_text(json.dumps({"public_key": VALIDATOR_KEY.public_key.hex()}))
    args = ["stake", "--pubkey", str(key_file), "--amount", "1gpu", "--commission-bps", "1",
            "--no-wait"]
    result = invoke(runner, *tx_args(args, keystore, password_file, node.url))
    assert result.exit_code == 0, result.output
    assert node.endpoint.received[0].tx.body.public_key == VALIDATOR_KEY.public_key


# --- local checks before any password or network -------------------------------------


def _bad_key_file(tmp_path: Path) -> str:
    path = tmp_path / "bad.json"
    path.write_text('{"public_key": "zz"}')
    return str(path)


BAD_INPUTS: list[tuple[list[str], str]] = [
    (["stake", "--pubkey", "ab" * 31, "--amount", "1", "--commission-bps", "1"],
     "neither 64 hex digits nor a key file"),
    (["stake", "--pubkey", "ff" * 32, "--amount", "1", "--commission-bps", "1"],
     "not a valid Ed25519 public key"),
    (["stake", "--pubkey", VALIDATOR_KEY.public_key.hex(), "--amount", "1",
      "--commission-bps", "10001"], "--commission-bps"),
    (["stake", "--pubkey", VALIDATOR_KEY.public_key.hex(), "--amount", "0",
      "--commission-bps", "1"], "greater than zero"),
    (["edit-validator", "--validator", VAL_TEXT], "give at least one of"),
    (["edit-validator", "--validator", VAL_TEXT, "--queen", "maybe"], "--queen"),
    (["edit-validator", "--validator", VAL_TEXT, "--bound-licences", str(KEEP_U32)],
     "--bound-licences"),
    (["delegate", "--validator", VAL_TEXT[:-1] + "x", "--amount", "1"], "--validator"),
    (["delegate", "--validator", VAL_TEXT, "--amount", "1.5"], "no unit"),
    (["unstake", "--validator", VAL_TEXT, "--amount", "-1"], "negative"),
    (["redelegate", "--from", VAL_TEXT, "--to", "0x" + VAL.hex(), "--amount", "1"],
     "same validator"),
    (["swap", "--sell", "stable", "--amount", "1gpu", "--min-out", "0"],
     "stable amounts are given in base units"),
    (["swap", "--sell", "gpu", "--amount", "1gpu", "--min-out", "1gpu"],
     "stable amounts are given in base units"),
    (["swap", "--sell", "usd", "--amount", "1", "--min-out", "0"], "--sell"),
    (["add-liquidity", "--gpu", "1", "--stable", "0"], "greater than zero"),
    (["remove-liquidity", "--shares", "0"], "--shares"),
    (["licence-transfer", "--to", OTHER_TEXT, "--count", "0"], "--count"),
    (["issue-stable", "--to", OTHER_TEXT, "--amount", "5gpu"],
     "stable amounts are given in base units"),
    (["pay-revenue", "--amount", "18446744073709551616"], "exceeds the maximum"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS,
                         ids=[" ".join(c[0][:1]) + f"-{i}" for i, c in enumerate(BAD_INPUTS)])
def test_bad_input_fails_before_the_password(
    runner: CliRunner, keystore: Path, args: list[str], message: str
) -> None:
    full = [*args, "--keystore", str(keystore), "--rpc", "http://127.0.0.1:9"]
    result = invoke(runner, *full, input="")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "password" not in result.output.lower()
    assert "Traceback" not in result.output


def test_malformed_key_file_is_a_bad_parameter(
    runner: CliRunner, keystore: Path, tmp_path: Path
) -> None:
    args = ["stake", "--pubkey", _bad_key_file(tmp_path), "--amount", "1",
            "--commission-bps", "1", "--keystore", str(keystore)]
    result = invoke(runner, *args, input="")
    assert result.exit_code == 2
    assert "has no 64-hex-digit public_key" in result.output


def test_every_economy_command_needs_a_keystore(runner: CliRunner) -> None:
    result = invoke(runner, "withdraw", "--validator", VAL_TEXT)
    assert result.exit_code == 2
    assert "--keystore" in result.output


# --- amount parsing -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_gpu_amounts_round_trip_both_spellings(units: int) -> None:
    whole, frac = divmod(units, GPU)
    text = f"{whole}.{frac:09d}gpu"
    assert parse_cli_amount(text, "--amount") == units
    assert parse_cli_amount(str(units), "--amount") == units
    assert parse_cli_amount(str(units), "--amount", gpu=False) == units
