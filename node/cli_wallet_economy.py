"""`gannet wallet` commands of the token economy: staking, rewards, the pool, the stable unit.

Each command checks its own inputs first (a typo never costs a password prompt
or a fee), builds one tx body (`chain.records`) and hands it to
`node.cli_wallet.submit_tx`, which signs it with --keystore's key, sends it and
prints the tx hash (and, with --wait, where it landed). GPU amounts take base
units or GPU (`1.5gpu`); stable amounts and LP shares are base units.

Commands: stake, edit-validator, delegate, unstake, redelegate, withdraw,
unjail, swap, add-liquidity, remove-liquidity, licence-transfer, issue-stable,
pay-revenue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from nacl.bindings import crypto_core_ed25519_is_valid_point

from chain.address import AddressError, parse_address
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
    Undelegate,
    Unjail,
    WithdrawRewards,
)
from chain.types import PUBLIC_KEY_LEN, UINT64_MAX
from node.amounts import GPU_SUFFIX, parse_amount
from node.cli_wallet import TxOptions, submit_tx, tx_options, wallet_group
from node.keys import KeyFileError, load_key_file

MAX_COMMISSION_BPS = 10_000
MAX_LICENCES = KEEP_U32 - 1  # KEEP_U32 itself means "unchanged" in EditValidator
QUEEN_CHOICES = {"in": QUEEN_IN, "out": QUEEN_OUT}


# --- input checks ---------------------------------------------------------------


def parse_cli_amount(text: str, option: str, *, gpu: bool = True,
                     allow_zero: bool = False) -> int:
    """Base units of an amount option: GPU amounts take a `gpu` suffix, stable ones do not."""
    if not gpu and text.strip().lower().endswith(GPU_SUFFIX):
        raise click.BadParameter("stable amounts are given in base units", param_hint=option)
    try:
        amount = parse_amount(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if amount == 0 and not allow_zero:
        raise click.BadParameter("amount must be greater than zero", param_hint=option)
    return amount


def parse_cli_address(text: str, option: str) -> bytes:
    """The 20-byte address of an address option (gnt1... or 40 hex digits)."""
    try:
        return parse_address(text)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def read_validator_public_key(text: str) -> bytes:
    """A consensus public key: 64 hex digits, or a validator key file holding one.

    A key file is the node's plaintext key JSON (`public_key`, or `seed` to derive
    it from); only the public key is read out of it. The key must be a valid
    Ed25519 point, as the chain requires.
    """
    stripped = text.strip().removeprefix("0x").removeprefix("0X")
    if len(stripped) == 2 * PUBLIC_KEY_LEN and _is_hex(stripped):
        key = bytes.fromhex(stripped)
    else:
        key = _public_key_from_file(Path(text))
    if not crypto_core_ed25519_is_valid_point(key):
        raise click.BadParameter(f"{key.hex()} is not a valid Ed25519 public key",
                                 param_hint="--pubkey")
    return key


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _public_key_from_file(path: Path) -> bytes:
    """The public key in a validator key file (its `public_key`, else derived from `seed`)."""
    if not path.is_file():
        raise click.BadParameter(
            f"{str(path)!r} is neither 64 hex digits nor a key file", param_hint="--pubkey")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"cannot read key file {path}: {exc}",
                                 param_hint="--pubkey") from None
    if isinstance(doc, dict) and "seed" in doc:
        try:
            return load_key_file(path).public_key
        except KeyFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--pubkey") from None
    hex_key = doc.get("public_key") if isinstance(doc, dict) else None
    if not isinstance(hex_key, str) or len(hex_key) != 2 * PUBLIC_KEY_LEN or not _is_hex(hex_key):
        raise click.BadParameter(f"key file {path} has no 64-hex-digit public_key",
                                 param_hint="--pubkey")
    return bytes.fromhex(hex_key)


def _validator_option(name: str = "--validator", dest: str = "validator",
                      what: str = "Validator address (gnt1... or 40 hex).") -> Any:
    return click.option(name, dest, required=True, help=what)


_gpu_amount_help = "GPU amount: base units (12345) or GPU (1.5gpu)."


# --- staking ------------------------------------------------------------------------


@wallet_group.command("stake")
@click.option("--pubkey", "pubkey_text", required=True,
              help="The validator's consensus public key: 64 hex digits or its key file.")
@click.option("--amount", "amount_text", required=True, help="Self-stake; " + _gpu_amount_help)
@click.option("--commission-bps", type=click.IntRange(0, MAX_COMMISSION_BPS), required=True,
              help="Commission on the validator's rewards, in basis points (0-10000).")
@click.option("--queen/--no-queen", default=False, show_default=True,
              help="Opt in to the queen committee.")
@tx_options
def stake_command(pubkey_text: str, amount_text: str, commission_bps: int, queen: bool,
                  options: TxOptions) -> None:
    """Create a validator operated by --keystore's account, bonding --amount of its GPU."""
    body = CreateValidator(
        public_key=read_validator_public_key(pubkey_text),
        commission_bps=commission_bps,
        self_stake=parse_cli_amount(amount_text, "--amount"),
        queen=QUEEN_IN if queen else QUEEN_OUT,
    )
    submit_tx(body, options)


@wallet_group.command("edit-validator")
@_validator_option()
@click.option("--commission-bps", type=click.IntRange(0, MAX_COMMISSION_BPS),
              help="New commission in basis points (default: unchanged).")
@click.option("--queen", type=click.Choice(sorted(QUEEN_CHOICES)),
              help="Opt in to or out of the queen committee (default: unchanged).")
@click.option("--bound-licences", type=click.IntRange(0, MAX_LICENCES),
              help="Node licences of the operator bound to the validator (default: unchanged).")
@tx_options
def edit_validator_command(validator: str, commission_bps: int | None, queen: str | None,
                           bound_licences: int | None, options: TxOptions) -> None:
    """Change the commission, queen opt-in or bound licences of your validator."""
    if commission_bps is None and queen is None and bound_licences is None:
        raise click.UsageError("give at least one of --commission-bps, --queen, --bound-licences")
    body = EditValidator(
        validator=parse_cli_address(validator, "--validator"),
        commission_bps=KEEP_U32 if commission_bps is None else commission_bps,
        queen=KEEP_U8 if queen is None else QUEEN_CHOICES[queen],
        bound_licences=KEEP_U32 if bound_licences is None else bound_licences,
    )
    submit_tx(body, options)


@wallet_group.command("delegate")
@_validator_option()
@click.option("--amount", "amount_text", required=True, help=_gpu_amount_help)
@tx_options
def delegate_command(validator: str, amount_text: str, options: TxOptions) -> None:
    """Bond --amount of your spendable GPU to a validator."""
    body = Delegate(validator=parse_cli_address(validator, "--validator"),
                    amount=parse_cli_amount(amount_text, "--amount"))
    submit_tx(body, options)


@wallet_group.command("unstake")
@_validator_option()
@click.option("--amount", "amount_text", required=True, help=_gpu_amount_help)
@tx_options
def unstake_command(validator: str, amount_text: str, options: TxOptions) -> None:
    """Start unbonding --amount of your stake with a validator (paid out after unbonding)."""
    body = Undelegate(validator=parse_cli_address(validator, "--validator"),
                      amount=parse_cli_amount(amount_text, "--amount"))
    submit_tx(body, options)


@wallet_group.command("redelegate")
@_validator_option("--from", "source", "Validator the stake leaves (gnt1... or 40 hex).")
@_validator_option("--to", "target", "Validator the stake moves to (gnt1... or 40 hex).")
@click.option("--amount", "amount_text", required=True, help=_gpu_amount_help)
@tx_options
def redelegate_command(source: str, target: str, amount_text: str, options: TxOptions) -> None:
    """Move --amount of your stake from one validator to another at once."""
    source_address = parse_cli_address(source, "--from")
    target_address = parse_cli_address(target, "--to")
    if source_address == target_address:
        raise click.BadParameter("--from and --to name the same validator", param_hint="--to")
    body = Redelegate(source=source_address, target=target_address,
                      amount=parse_cli_amount(amount_text, "--amount"))
    submit_tx(body, options)


@wallet_group.command("withdraw")
@_validator_option()
@tx_options
def withdraw_command(validator: str, options: TxOptions) -> None:
    """Withdraw your rewards from a validator (and its commission if you operate it)."""
    submit_tx(WithdrawRewards(validator=parse_cli_address(validator, "--validator")), options)


@wallet_group.command("unjail")
@_validator_option()
@tx_options
def unjail_command(validator: str, options: TxOptions) -> None:
    """Return your jailed validator to the candidates once its jail time is over."""
    submit_tx(Unjail(validator=parse_cli_address(validator, "--validator")), options)


# --- pool -----------------------------------------------------------------------------


@wallet_group.command("swap")
@click.option("--sell", type=click.Choice(["gpu", "stable"]), required=True,
              help="Which token you pay in; you receive the other one.")
@click.option("--amount", "amount_text", required=True,
              help="Amount sold: GPU as base units or 1.5gpu; stable in base units.")
@click.option("--min-out", "min_out_text", required=True,
              help="Least you accept of the other token (0 accepts any price).")
@tx_options
def swap_command(sell: str, amount_text: str, min_out_text: str, options: TxOptions) -> None:
    """Swap through the GPU/stable pool; fails on chain if it would pay out under --min-out."""
    selling_gpu = sell == "gpu"
    body = Swap(
        denom_in=DENOM_GPU if selling_gpu else DENOM_STABLE,
        amount_in=parse_cli_amount(amount_text, "--amount", gpu=selling_gpu),
        min_out=parse_cli_amount(min_out_text, "--min-out", gpu=not selling_gpu,
                                 allow_zero=True),
    )
    submit_tx(body, options)


@wallet_group.command("add-liquidity")
@click.option("--gpu", "gpu_text", required=True, help="Most GPU to deposit; " + _gpu_amount_help)
@click.option("--stable", "stable_text", required=True,
              help="Most stable to deposit, in base units.")
@click.option("--min-shares", type=click.IntRange(0, UINT64_MAX), default=0, show_default=True,
              help="Least LP shares you accept.")
@tx_options
def add_liquidity_command(gpu_text: str, stable_text: str, min_shares: int,
                          options: TxOptions) -> None:
    """Deposit GPU and stable into the pool for LP shares (at the pool's current ratio)."""
    body = AddLiquidity(gpu=parse_cli_amount(gpu_text, "--gpu"),
                        stable=parse_cli_amount(stable_text, "--stable", gpu=False),
                        min_shares=min_shares)
    submit_tx(body, options)


@wallet_group.command("remove-liquidity")
@click.option("--shares", type=click.IntRange(1, UINT64_MAX), required=True,
              help="LP shares to redeem.")
@click.option("--min-gpu", "min_gpu_text", default="0", show_default=True,
              help="Least GPU you accept; " + _gpu_amount_help)
@click.option("--min-stable", "min_stable_text", default="0", show_default=True,
              help="Least stable you accept, in base units.")
@tx_options
def remove_liquidity_command(shares: int, min_gpu_text: str, min_stable_text: str,
                             options: TxOptions) -> None:
    """Redeem LP shares for their part of the pool's GPU and stable."""
    body = RemoveLiquidity(
        shares=shares,
        min_gpu=parse_cli_amount(min_gpu_text, "--min-gpu", allow_zero=True),
        min_stable=parse_cli_amount(min_stable_text, "--min-stable", gpu=False,
                                    allow_zero=True),
    )
    submit_tx(body, options)


# --- licences, stable unit, revenue ------------------------------------------------


@wallet_group.command("licence-transfer")
@click.option("--to", "to_text", required=True, help="Recipient address (gnt1... or 40 hex).")
@click.option("--count", type=click.IntRange(1, KEEP_U32), required=True,
              help="Node licences to give (unbound ones).")
@tx_options
def licence_transfer_command(to_text: str, count: int, options: TxOptions) -> None:
    """Give node licences you hold (not bound to a validator) to another account."""
    submit_tx(LicenceTransfer(to=parse_cli_address(to_text, "--to"), count=count), options)


@wallet_group.command("issue-stable")
@click.option("--to", "to_text", required=True, help="Recipient address (gnt1... or 40 hex).")
@click.option("--amount", "amount_text", required=True, help="Stable base units to mint.")
@tx_options
def issue_stable_command(to_text: str, amount_text: str, options: TxOptions) -> None:
    """As the genesis stable issuer, mint stable units to an account."""
    body = IssueStable(to=parse_cli_address(to_text, "--to"),
                       amount=parse_cli_amount(amount_text, "--amount", gpu=False))
    submit_tx(body, options)


@wallet_group.command("pay-revenue")
@click.option("--amount", "amount_text", required=True, help="Stable base units to pay.")
@tx_options
def pay_revenue_command(amount_text: str, options: TxOptions) -> None:
    """Pay GPU-rental revenue (stable units) to the buyback treasury."""
    submit_tx(PayRevenue(amount=parse_cli_amount(amount_text, "--amount", gpu=False)), options)
