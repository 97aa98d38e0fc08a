"""`gannet wallet`: keys in encrypted keystores, balances and transfers over JSON-RPC.

Commands: new, import, address, balance, send, and the token-economy tx
commands of `node.cli_wallet_economy` (stake, delegate, swap, ...). Every
failure is one line and a non-zero exit (`click.ClickException`), never a traceback.

Passwords come, in order, from `--password-file` (its first line), the
`GANNET_PASSWORD` environment variable, or a hidden interactive prompt; an
empty password is allowed (devnet keys use it). `GANNET_RPC` sets the default
node URL. The hidden `--scrypt-n` option (env `GANNET_SCRYPT_N`) lowers the
scrypt cost of new keystores and exists for tests only.
"""

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from chain import codec
from chain.address import AddressError, address_from_public_key, encode_address, parse_address
from chain.crypto import SEED_LEN, CryptoError, SigningKey
from chain.errors import EncodeError
from chain.keystore import (
    DEFAULT_SCRYPT_N,
    KeystoreError,
    WrongPassword,
    load_keystore,
    save_keystore,
)
from chain.records import DENOM_GPU, DENOM_STABLE, Transfer, Tx, TxBody
from chain.signing import sign_tx
from chain.types import UINT64_MAX
from node.amounts import GPU_SUFFIX, format_gpu, parse_amount
from node.rpc.client import RpcClient, RpcClientError, RpcConnectionError

DEFAULT_RPC = "http://127.0.0.1:8545"
RPC_ENV = "GANNET_RPC"
PASSWORD_ENV = "GANNET_PASSWORD"
SCRYPT_N_ENV = "GANNET_SCRYPT_N"
RPC_TIMEOUT_S = 10.0
DEFAULT_WAIT_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25
TX_REJECTED_CODE = -32000
DENOM_NAMES = {"gpu": DENOM_GPU, "stable": DENOM_STABLE}


# --- shared options -------------------------------------------------------------


def _keystore_option(required: bool = True) -> Any:
    return click.option(
        "--keystore",
        "keystore",
        type=click.Path(dir_okay=False, path_type=Path),
        required=required,
        help="Keystore file (encrypted key).",
    )


_password_file_option = click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File whose first line is the keystore password (else ${PASSWORD_ENV}, else a prompt).",
)

_rpc_option = click.option(
    "--rpc",
    "rpc_url",
    envvar=RPC_ENV,
    default=DEFAULT_RPC,
    show_default=True,
    help=f"Node JSON-RPC URL (env {RPC_ENV}).",
)

# Tests only: cheap scrypt so a test suite can write many keystores quickly. A real
# key must keep the default cost, so the option is hidden from --help.
_scrypt_n_option = click.option(
    "--scrypt-n",
    "scrypt_n",
    type=int,
    envvar=SCRYPT_N_ENV,
    default=DEFAULT_SCRYPT_N,
    hidden=True,
    help=f"scrypt cost for a new keystore; for tests only (env {SCRYPT_N_ENV}).",
)


_TX_OPTIONS = (
    _keystore_option(),
    click.option("--fee", type=click.IntRange(0, UINT64_MAX),
                 help="Fee in base units (default: the node's suggested fee)."),
    click.option("--nonce", type=click.IntRange(0, UINT64_MAX),
                 help="Nonce (default: the sender's pending nonce)."),
    _rpc_option,
    _password_file_option,
    click.option("--wait/--no-wait", default=True, show_default=True,
                 help="Wait until the tx is included or rejected."),
    click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), show_default=True,
                 default=DEFAULT_WAIT_TIMEOUT_S, help="Seconds to wait with --wait."),
)


def tx_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a tx command the shared signing and sending options, passed as `options=TxOptions`.

    Put it right above the function, under the command's own options, so those
    come first in --help.
    """

    @functools.wraps(command)
    def with_options(*args: Any, keystore: Path, fee: int | None, nonce: int | None,
                     rpc_url: str, password_file: Path | None, wait: bool, timeout_s: float,
                     **kwargs: Any) -> None:
        options = TxOptions(keystore, fee, nonce, rpc_url, password_file, wait, timeout_s)
        command(*args, options=options, **kwargs)

    for option in reversed(_TX_OPTIONS):
        with_options = option(with_options)
    return with_options


@click.group("wallet")
def wallet_group() -> None:
    """Keys, balances, transfers, staking, rewards and the GPU/stable pool."""


# --- new / import / address ---------------------------------------------------------


@wallet_group.command("new")
@_keystore_option()
@_password_file_option
@_scrypt_n_option
def new_command(keystore: Path, password_file: Path | None, scrypt_n: int) -> None:
    """Generate a key, save it encrypted to --keystore and print its address."""
    _refuse_existing(keystore)
    password = read_password(password_file, confirm=True)
    key = SigningKey.generate()
    click.echo(_write_keystore(keystore, key, password, scrypt_n))


@wallet_group.command("import")
@_keystore_option()
@click.option(
    "--seed-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='File holding the 32-byte seed as 64 hex digits, or JSON with a "seed" hex field.',
)
@_password_file_option
@_scrypt_n_option
def import_command(
    keystore: Path, seed_file: Path, password_file: Path | None, scrypt_n: int
) -> None:
    """Encrypt an existing seed into --keystore and print its address."""
    _refuse_existing(keystore)
    key = read_seed_file(seed_file)
    password = read_password(password_file, confirm=True)
    click.echo(_write_keystore(keystore, key, password, scrypt_n))


@wallet_group.command("address")
@_keystore_option()
def address_command(keystore: Path) -> None:
    """Print the address of --keystore (no password needed)."""
    click.echo(read_keystore_address(keystore))


def _refuse_existing(keystore: Path) -> None:
    """A keystore is never overwritten: a lost key is lost funds."""
    if keystore.exists():
        raise click.ClickException(f"keystore {keystore} already exists; refusing to overwrite it")


def _write_keystore(keystore: Path, key: SigningKey, password: str, scrypt_n: int) -> str:
    """Save `key` encrypted at `keystore` (creating its folder); returns the address."""
    try:
        keystore.parent.mkdir(parents=True, exist_ok=True)
        doc = save_keystore(keystore, key, password, scrypt_n=scrypt_n)
    except KeystoreError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write keystore {keystore}: {exc}") from None
    return doc["address"]


def read_seed_file(path: Path) -> SigningKey:
    """The key of a seed file: 64 hex digits (optional 0x), or JSON with a "seed" field."""
    text = _read_text(path, "seed file").strip()
    seed_hex = _seed_hex_from_json(path, text) if text.startswith("{") else text
    seed_hex = seed_hex.removeprefix("0x").removeprefix("0X")
    if len(seed_hex) != 2 * SEED_LEN:
        raise click.ClickException(
            f"seed in {path} must be {2 * SEED_LEN} hex digits, got {len(seed_hex)} characters"
        )
    try:
        return SigningKey.from_seed(bytes.fromhex(seed_hex))
    except (ValueError, CryptoError):
        raise click.ClickException(f"seed in {path} is not hex") from None


def _seed_hex_from_json(path: Path, text: str) -> str:
    """The "seed" of a JSON key file (the node's key file format); its "address" and
    "public_key" fields, when present, must match the seed."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"seed file {path} is not valid JSON: {exc}") from None
    seed = doc.get("seed") if isinstance(doc, dict) else None
    if not isinstance(seed, str):
        raise click.ClickException(f'seed file {path} has no "seed" string field')
    _check_stated_identity(path, seed, doc)
    return seed


def _check_stated_identity(path: Path, seed_hex: str, doc: dict[str, Any]) -> None:
    """A key file's stated address and public key must be those of its seed."""
    try:
        key = SigningKey.from_seed(bytes.fromhex(seed_hex.removeprefix("0x")))
    except (ValueError, CryptoError):
        return  # the caller reports a malformed seed
    address = address_from_public_key(key.public_key)
    stated_address = doc.get("address")
    if isinstance(stated_address, str) and _parsed_or_none(stated_address) != address:
        raise click.ClickException(
            f"seed file {path} says address {stated_address} but its seed is "
            f"{encode_address(address)}"
        )
    stated_key = doc.get("public_key")
    key_hex = key.public_key.hex()
    if isinstance(stated_key, str) and stated_key.lower().removeprefix("0x") != key_hex:
        raise click.ClickException(f"seed file {path}: public_key does not match its seed")


def _parsed_or_none(text: str) -> bytes | None:
    """The address bytes of `text`, or None when it is not an address."""
    try:
        return parse_address(text)
    except AddressError:
        return None


def read_keystore_address(keystore: Path) -> str:
    """The bech32 address field of a keystore file, checked but not decrypted."""
    text = _read_text(keystore, "keystore")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"keystore {keystore} is not valid JSON: {exc}") from None
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str):
        raise click.ClickException(f'keystore {keystore} has no "address" field')
    try:
        return encode_address(parse_address(address))
    except AddressError as exc:
        raise click.ClickException(f"keystore {keystore}: {exc}") from None


def _read_text(path: Path, what: str) -> str:
    """The utf-8 text of `path`, or a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc}") from None


# --- passwords and keys ------------------------------------------------------------


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """The password from --password-file, else $GANNET_PASSWORD, else a hidden prompt.

    A file gives its first line without the line ending; an empty password is
    valid. `confirm` asks twice at the prompt (for a new keystore).
    """
    if password_file is not None:
        lines = _read_text(password_file, "password file").splitlines()
        return lines[0] if lines else ""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    return click.prompt(
        "Keystore password",
        hide_input=True,
        confirmation_prompt=confirm,
        default="",
        show_default=False,
    )


def unlock_keystore(keystore: Path, password_file: Path | None) -> SigningKey:
    """The key in `keystore`, opened with the password from its usual sources."""
    if not keystore.is_file():
        raise click.ClickException(f"keystore {keystore} does not exist")
    password = read_password(password_file)
    try:
        return load_keystore(keystore, password)
    except WrongPassword:
        raise click.ClickException(f"wrong password for keystore {keystore}") from None
    except KeystoreError as exc:
        raise click.ClickException(str(exc)) from None


# --- RPC ------------------------------------------------------------------------------


def rpc_call(client: RpcClient, url: str, method: str, *params: Any) -> Any:
    """`method(*params)` on the node; any failure becomes a one-line ClickException."""
    try:
        return client.call(method, *params)
    except RpcConnectionError as exc:
        text = str(exc)
        if not text.startswith(f"cannot reach node at {url}"):
            text = f"cannot reach node at {url}: {text}"
        raise click.ClickException(text) from None
    except RpcClientError as exc:
        if method == "gannet_sendRawTransaction" and exc.code == TX_REJECTED_CODE:
            raise click.ClickException(f"node rejected the transaction: {exc.message}") from None
        raise click.ClickException(f"{method} failed: {exc.message} (code {exc.code})") from None


def _field(result: Any, method: str, name: str, kind: type) -> Any:
    """result[name] of type `kind`, or a one-line error about the node's answer."""
    value = result.get(name) if isinstance(result, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise click.ClickException(
            f"node returned a malformed {method} result: field {name!r} should be {kind.__name__}"
        )
    return value


def _amount_field(result: Any, method: str, name: str) -> int:
    """A decimal-string amount of base units in the node's answer."""
    text = _field(result, method, name, str)
    if not text.isascii() or not text.isdigit() or int(text) > UINT64_MAX:
        raise click.ClickException(
            f"node returned a malformed {method} result: {name}={text!r} is not base units"
        )
    return int(text)


# --- balance ----------------------------------------------------------------------------


@wallet_group.command("balance")
@click.argument("address", required=False)
@_keystore_option(required=False)
@_rpc_option
@click.option("--json", "as_json", is_flag=True, help="Print the node's account object as JSON.")
def balance_command(
    address: str | None, keystore: Path | None, rpc_url: str, as_json: bool
) -> None:
    """Show the balances and nonces of ADDRESS (or of --keystore's address)."""
    bech32 = _target_address(address, keystore)
    client = RpcClient(rpc_url, timeout=RPC_TIMEOUT_S)
    account = rpc_call(client, rpc_url, "gannet_getAccount", bech32)
    if as_json:
        click.echo(json.dumps(account, indent=2, sort_keys=True))
        return
    for label, value in _balance_lines(account):
        click.echo(f"{label:<15}{value}")


def _target_address(address: str | None, keystore: Path | None) -> str:
    """The bech32 address named by the argument or by --keystore (exactly one of them)."""
    if (address is None) == (keystore is None):
        raise click.UsageError("give either an ADDRESS or --keystore, not both or neither")
    if keystore is not None:
        return read_keystore_address(keystore)
    try:
        return encode_address(parse_address(address))
    except AddressError as exc:
        raise click.ClickException(str(exc)) from None


def _balance_lines(account: Any) -> list[tuple[str, str]]:
    """(label, value) rows of an account answer, amounts formatted for people."""
    method = "gannet_getAccount"
    gpu = _amount_field(account, method, "gpu")
    spendable = _amount_field(account, method, "spendable_gpu")
    rows = [
        ("address", _field(account, method, "address", str)),
        ("gpu", f"{format_gpu(gpu)} ({gpu} base units)"),
        ("spendable gpu", f"{format_gpu(spendable)} ({spendable} base units)"),
        ("stable", f"{_amount_field(account, method, 'stable')} base units"),
        ("nonce", str(_field(account, method, "nonce", int))),
        ("pending nonce", str(_field(account, method, "pending_nonce", int))),
    ]
    for lock in _field(account, method, "locks", list):
        amount = _amount_field(lock, method, "amount")
        release = _field(lock, method, "release_height", int)
        rows.append(("locked", f"{format_gpu(amount)} until height {release}"))
    return rows


# --- send -------------------------------------------------------------------------------


@wallet_group.command("send")
@click.option("--to", "to_text", required=True, help="Recipient address (gnt1... or 40 hex).")
@click.option(
    "--amount", "amount_text", required=True,
    help="Amount: base units (12345) or GPU (1.5gpu); stable amounts in base units.",
)
@click.option(
    "--denom", type=click.Choice(sorted(DENOM_NAMES)), default="gpu", show_default=True,
    help="Which token to send.",
)
@tx_options
def send_command(to_text: str, amount_text: str, denom: str, options: "TxOptions") -> None:
    """Sign a transfer with --keystore's key, send it, and print the tx hash."""
    # Check the inputs before asking for a password or touching the network.
    body = Transfer(to=_recipient(to_text), amount=_send_amount(amount_text, denom),
                    denom=DENOM_NAMES[denom])
    submit_tx(body, options)


@dataclass(frozen=True, slots=True)
class TxOptions:
    """How a tx command signs and sends: the options every tx command shares."""

    keystore: Path
    fee: int | None
    nonce: int | None
    rpc_url: str
    password_file: Path | None
    wait: bool
    timeout_s: float


def submit_tx(body: TxBody, options: TxOptions) -> None:
    """Sign a tx carrying `body` with the keystore's key, send it, print its hash, maybe wait.

    Chain id, and the fee and nonce unless given, come from the node; the caller
    has checked its own inputs, so a typo never costs a password prompt.
    """
    key = unlock_keystore(options.keystore, options.password_file)
    url = options.rpc_url
    client = RpcClient(url, timeout=RPC_TIMEOUT_S)
    tx = Tx(
        chain_id=_chain_id(client, url),
        sender=key.public_key,
        nonce=options.nonce if options.nonce is not None else _pending_nonce(client, url, key),
        fee=options.fee if options.fee is not None else _suggested_fee(client, url),
        body=body,
    )
    tx_hash = _send_signed(client, url, key, tx)
    click.echo(tx_hash)
    if options.wait:
        wait_for_tx(client, url, tx_hash, options.timeout_s)


def _recipient(text: str) -> bytes:
    """The 20-byte address of --to."""
    try:
        return parse_address(text)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None


def _send_amount(text: str, denom: str) -> int:
    """Base units of --amount; stable amounts take no GPU suffix; zero is refused."""
    if denom == "stable" and text.strip().lower().endswith(GPU_SUFFIX):
        raise click.BadParameter("stable amounts are given in base units", param_hint="--amount")
    try:
        amount = parse_amount(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--amount") from None
    if amount == 0:
        raise click.BadParameter("amount must be greater than zero", param_hint="--amount")
    return amount


def _chain_id(client: RpcClient, url: str) -> bytes:
    """The node's chain id as the utf-8 bytes a tx carries."""
    chain_id = rpc_call(client, url, "gannet_chainId")
    if not isinstance(chain_id, str) or not 1 <= len(chain_id.encode("utf-8")) <= 64:
        raise click.ClickException(f"node returned a malformed chain id: {chain_id!r:.80}")
    return chain_id.encode("utf-8")


def _pending_nonce(client: RpcClient, url: str, key: SigningKey) -> int:
    """The sender's next nonce counting its txs already in the node's mempool."""
    address = encode_address(address_from_public_key(key.public_key))
    account = rpc_call(client, url, "gannet_getAccount", address)
    return _field(account, "gannet_getAccount", "pending_nonce", int)


def _suggested_fee(client: RpcClient, url: str) -> int:
    """The node's suggested fee in base units."""
    estimate = rpc_call(client, url, "gannet_estimateFee")
    return _amount_field(estimate, "gannet_estimateFee", "fee")


def _send_signed(client: RpcClient, url: str, key: SigningKey, tx: Tx) -> str:
    """Sign `tx`, submit it, and return the tx hash the node reports."""
    try:
        raw = codec.encode(sign_tx(key, tx))
    except (EncodeError, CryptoError) as exc:
        raise click.ClickException(f"cannot build the transaction: {exc}") from None
    tx_hash = rpc_call(client, url, "gannet_sendRawTransaction", "0x" + raw.hex())
    if not isinstance(tx_hash, str):
        raise click.ClickException(f"node returned a malformed tx hash: {tx_hash!r:.80}")
    return tx_hash


def wait_for_tx(client: RpcClient, url: str, tx_hash: str, timeout_s: float) -> None:
    """Poll the tx until it is included or rejected; fail unless its receipt is ok."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while True:
        info = rpc_call(client, url, "gannet_getTransaction", tx_hash)
        status = _field(info, "gannet_getTransaction", "status", str)
        if status == "included":
            _report_included(tx_hash, info)
            return
        if status == "rejected":
            reason = info.get("reason") or "no reason given"
            raise click.ClickException(f"tx {tx_hash} was rejected: {reason}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise click.ClickException(
                f"tx {tx_hash} not included after {timeout_s:g}s (last status: {status})"
            )
        time.sleep(min(POLL_INTERVAL_S, remaining))


def _report_included(tx_hash: str, info: dict[str, Any]) -> None:
    """Print where the tx landed and its receipt; a failed receipt exits non-zero."""
    method = "gannet_getTransaction"
    height = _field(info, method, "height", int)
    receipt = _field(info, method, "receipt", dict)
    status = _field(receipt, method, "status", str)
    fee_paid = _amount_field(receipt, method, "fee_paid")
    if status != "ok":
        reason = receipt.get("reason") or "no reason given"
        code = receipt.get("code")
        raise click.ClickException(
            f"tx {tx_hash} failed in block {height}: {reason} (code {code}, "
            f"fee paid {format_gpu(fee_paid)})"
        )
    click.echo(f"included in block {height}: ok, fee paid {format_gpu(fee_paid)}")


# The token-economy tx commands (stake, delegate, swap, ...) live in their own module
# and register on `wallet_group` when imported; importing them last lets them use
# everything above.
from node import cli_wallet_economy  # noqa: E402, F401
