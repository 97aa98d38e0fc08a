"""`gannet genesis ...`: build a genesis file step by step, validate it, print its hash.

    gannet genesis init --chain-id gannet-dev --home ~/.gannet
    gannet genesis add-account gnt1... 1000000gpu --licences 5
    gannet genesis add-validator --public-key <hex> --power 1000gpu --operator gnt1... \
        --commission-bps 500 --queen
    gannet genesis set-pool --gpu 1000000gpu --stable 500000000000000 --owner gnt1...
    gannet genesis validate ~/.gannet/config/genesis.json
    gannet genesis hash ~/.gannet/config/genesis.json

Commands that build edit HOME/config/genesis.json in place (atomically). Every
failure is a one-line message and a non-zero exit.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from chain.address import AddressError, encode_address, parse_address
from chain.types import UINT64_MAX
from consensus.params import ParamsError, compute_allocation_amount, default_params, from_json
from genesis.document import (
    DEFAULT_COMMISSION_BPS,
    MAX_COMMISSION_BPS,
    Genesis,
    GenesisError,
    add_account,
    add_validator,
    dump_genesis,
    genesis_from_json,
    genesis_hash,
    load_genesis,
    new_genesis,
    read_genesis_json,
    set_pool,
    set_stable_issuer,
    validate_genesis_json,
)
from genesis.vesting import VESTING_SCHEDULES, compute_genesis_vesting
from node.amounts import format_gpu, parse_amount
from node.config import HomePaths
from node.keys import KeyFileError, load_key_file

DEFAULT_HOME = "~/.gannet"
_UINT_RE = re.compile(r"[0-9]+")


# --- parsing and formatting ---------------------------------------------------


def parse_uint(text: str, what: str, maximum: int = UINT64_MAX) -> int:
    """A non-negative decimal integer of at most `maximum`; ValueError naming `what`."""
    if not _UINT_RE.fullmatch(text.strip()) or int(text) > maximum:
        raise ValueError(f"bad {what} {text!r}: expected an integer in 0..{maximum}")
    return int(text)


def genesis_file(home: str) -> Path:
    """HOME/config/genesis.json, with ~ expanded."""
    return HomePaths(Path(home).expanduser()).genesis_file


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn every expected failure into a one-line ClickException."""
    try:
        yield
    except (GenesisError, ParamsError, AddressError, KeyFileError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"{error.filename or ''}: {error.strerror or error}") from None


def _home_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--home",
        envvar="GANNET_HOME",
        default=DEFAULT_HOME,
        show_default=True,
        help="Node home; the genesis file is HOME/config/genesis.json (env GANNET_HOME).",
    )(function)


def _load_building(home: str) -> tuple[Path, Genesis]:
    """The genesis under construction at HOME (validators not required yet)."""
    path = genesis_file(home)
    if not path.exists():
        raise click.ClickException(f"{path} not found; run `gannet genesis init` first")
    with _one_line_errors():
        return path, load_genesis(path, require_validators=False)


# --- commands -----------------------------------------------------------------


@click.group("genesis")
def genesis_group() -> None:
    """Build, validate and hash a genesis file."""


@genesis_group.command("init")
@click.option("--chain-id", required=True, help="1..64 characters of a-z, 0-9 and '-'.")
@_home_option
@click.option("--genesis-time-ms", default=None, help="Chain start, ms since epoch [now].")
@click.option("--block-time-ms", default=None, help="Derive every duration for this block time.")
@click.option("--params", "params_file", default=None, help="JSON file of network parameters.")
@click.option("--stable-issuer", default=None, help="Account that issues the stable unit.")
@click.option("--force", is_flag=True, help="Overwrite an existing genesis file.")
def init_command(
    chain_id: str,
    home: str,
    genesis_time_ms: str | None,
    block_time_ms: str | None,
    params_file: str | None,
    stable_issuer: str | None,
    force: bool,
) -> None:
    """Write a new genesis file with the plan's parameters and no accounts."""
    path = genesis_file(home)
    if path.exists() and not force:
        raise click.ClickException(f"{path} already exists; use --force to overwrite it")
    if block_time_ms is not None and params_file is not None:
        raise click.ClickException("give --block-time-ms or --params, not both")
    with _one_line_errors():
        start = (
            time.time_ns() // 1_000_000
            if genesis_time_ms is None
            else parse_uint(genesis_time_ms, "genesis time")
        )
        if params_file is not None:
            params = from_json(_read_json(params_file, "params file"), "params")
        else:
            block_time = 1000 if block_time_ms is None else parse_uint(block_time_ms, "block time")
            params = default_params(block_time)
        genesis = new_genesis(chain_id, start, params)
        if stable_issuer is not None:
            genesis = set_stable_issuer(genesis, _parse_address_arg(stable_issuer, "issuer"))
        path.parent.mkdir(parents=True, exist_ok=True)
        dump_genesis(genesis, path)
    click.echo(f"wrote {path} (chain {chain_id}, genesis time {genesis.genesis_time_ms} ms)")


@genesis_group.command("add-account")
@_home_option
@click.argument("address")
@click.argument("amount")
@click.option("--stable", default="0", help="Stable-unit base units.")
@click.option("--licences", default="0", help="Node licences held.")
@click.option(
    "--vesting",
    default="none",
    help=f"Lock AMOUNT on a plan schedule: none, {', '.join(VESTING_SCHEDULES)}.",
)
def add_account_command(
    home: str, address: str, amount: str, stable: str, licences: str, vesting: str
) -> None:
    """Fund ADDRESS (bech32 or hex) with AMOUNT: base units, or GPU as in 12.5gpu."""
    with _one_line_errors():
        gpu = parse_amount(amount)
        stable_units = parse_uint(stable, "stable amount")
        licence_count = parse_uint(licences, "licence count", 2**32 - 1)
    _fund(home, address, gpu, stable_units, licence_count, vesting)


ALLOCATION_BUCKETS = ("reserve", "foundation", "team", "treasury", "liquidity")


@genesis_group.command("allocate")
@_home_option
@click.argument("bucket", type=click.Choice(ALLOCATION_BUCKETS))
@click.argument("address")
@click.option(
    "--vesting",
    default="none",
    help=f"Lock the allocation on a plan schedule: none, {', '.join(VESTING_SCHEDULES)}.",
)
def allocate_command(home: str, bucket: str, address: str, vesting: str) -> None:
    """Fund ADDRESS with a whole allocation of the plan: BUCKET's basis points of the supply.

    The liquidity bucket gives what the pool seed leaves of it. With every bucket
    allocated, the genesis GPU is exactly the total supply less the network bucket
    (which emission mints over time), so nothing is left for the reserve module.
    """
    _, genesis = _load_building(home)
    gpu = compute_allocation_amount(genesis.params.tokenomics, bucket)
    if bucket == "liquidity" and genesis.pool is not None:
        gpu -= min(gpu, genesis.pool.gpu)
    _fund(home, address, gpu, 0, 0, vesting)


def _fund(home: str, address: str, gpu: int, stable: int, licences: int, vesting: str) -> None:
    """Add an account holding `gpu` (vested on `vesting`), `stable` and `licences`."""
    path, genesis = _load_building(home)
    with _one_line_errors():
        account = _parse_address_arg(address, "address")
        liquid, locks = gpu, ()
        if vesting != "none":
            liquid, locks = compute_genesis_vesting(genesis, vesting, gpu)
        genesis = add_account(genesis, account, liquid, stable, licences, locks)
        dump_genesis(genesis, path)
    locked = f", {len(locks)} vesting locks" if locks else ""
    click.echo(f"added {encode_address(account)} with {format_gpu(gpu)} ({gpu} base units{locked})")


@genesis_group.command("add-validator")
@_home_option
@click.option("--public-key", default=None, help="Ed25519 consensus key, 64 hex digits.")
@click.option(
    "--key-file", default=None, help="Validator key file (`gannet node init` writes one)."
)
@click.option("--power", required=True, help="Bonded stake: base units, or GPU as in 1000gpu.")
@click.option("--operator", required=True, help="Operator account (bech32 or hex).")
@click.option("--name", default="", help="Moniker, at most 64 characters.")
@click.option(
    "--commission-bps",
    default=str(DEFAULT_COMMISSION_BPS),
    show_default=True,
    help="Share of the validator's rewards to its operator, in basis points (0..10000).",
)
@click.option("--queen", is_flag=True, help="Opt in to the queen committee.")
def add_validator_command(
    home: str,
    public_key: str | None,
    key_file: str | None,
    power: str,
    operator: str,
    name: str,
    commission_bps: str,
    queen: bool,
) -> None:
    """Add a genesis validator whose voting power is its bonded stake."""
    if (public_key is None) == (key_file is None):
        raise click.ClickException("give exactly one of --public-key and --key-file")
    path, genesis = _load_building(home)
    with _one_line_errors():
        key: str | bytes = public_key or ""
        if key_file is not None:
            key = load_key_file(Path(key_file)).public_key
        owner = _parse_address_arg(operator, "operator")
        commission = parse_uint(commission_bps, "commission", MAX_COMMISSION_BPS)
        genesis = add_validator(genesis, key, parse_amount(power), owner, name, commission, queen)
        dump_genesis(genesis, path)
    added = genesis.validators[-1]
    click.echo(
        f"added validator {added.public_key.hex()} with power {format_gpu(added.power)} "
        f"({added.power} base units)"
    )


@genesis_group.command("set-pool")
@_home_option
@click.option("--gpu", required=True, help="Pool GPU from the liquidity allocation (12.5gpu).")
@click.option("--stable", required=True, help="Pool stable, base units issued at genesis.")
@click.option("--owner", required=True, help="Account holding the first LP shares.")
def set_pool_command(home: str, gpu: str, stable: str, owner: str) -> None:
    """Seed the GPU/stable pool at genesis (replaces an earlier seed)."""
    path, genesis = _load_building(home)
    with _one_line_errors():
        lp_owner = _parse_address_arg(owner, "owner")
        gpu_units, stable_units = parse_amount(gpu), parse_uint(stable, "stable amount")
        genesis = set_pool(genesis, gpu_units, stable_units, lp_owner)
        dump_genesis(genesis, path)
    click.echo(f"pool seeded with {format_gpu(gpu_units)} and {stable_units} stable units")


@genesis_group.command("validate")
@click.argument("file")
def validate_command(file: str) -> None:
    """Print every problem of FILE as PATH: MESSAGE (exit 1), or "ok: HASH"."""
    with _one_line_errors():
        doc = read_genesis_json(file)
    problems = validate_genesis_json(doc)
    if problems:
        for problem in problems:
            click.echo(str(problem))
        raise click.exceptions.Exit(1)
    with _one_line_errors():
        click.echo(f"ok: {genesis_hash(genesis_from_json(doc, source=file)).hex()}")


@genesis_group.command("hash")
@click.argument("file")
def hash_command(file: str) -> None:
    """Print the genesis hash (the chain's genesis id) of FILE in hex."""
    with _one_line_errors():
        click.echo(genesis_hash(load_genesis(file)).hex())


def _parse_address_arg(text: str, what: str) -> bytes:
    """An address given as bech32 or hex; ValueError naming `what` otherwise."""
    try:
        return parse_address(text)
    except AddressError as error:
        raise ValueError(f"bad {what} {text!r}: {error}") from None


def _read_json(path: str, what: str) -> Any:
    """The decoded JSON of a file; ValueError with a one-line message otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"cannot read {what} {path}: {reason}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None
