"""`gannet wallet`: keystores, passwords, and what the wallet sends to a node.

The RPC-facing commands run against the node's real JSON-RPC server
(`node.rpc.server.RpcServer`) with a small method table: it decodes every raw
transaction the wallet sends and checks its signature, so these tests check the
bytes the wallet produces, not a canned answer.
"""

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from chain import codec
from chain.address import address_from_public_key, decode_address, encode_address
from chain.crypto import SigningKey
from chain.errors import DecodeError
from chain.keystore import load_keystore
from chain.records import DENOM_GPU, DENOM_STABLE, SignedTx, Transfer, tx_hash
from chain.signing import sender_address, verify_tx_signature
from node.cli_wallet import wallet_group
from node.rpc.errors import InvalidParams, TxRejected
from node.rpc.server import RpcServer

SCRYPT_N = "1024"  # cheap scrypt for tests; real keystores keep the default
SEED = bytes(range(32))
KEY = SigningKey.from_seed(SEED)
ADDRESS = encode_address(address_from_public_key(KEY.public_key))
RECIPIENT = encode_address(bytes(range(100, 120)))
PASSWORD = "correct horse"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner with cheap scrypt and no password or RPC from the environment."""
    monkeypatch.setenv("GANNET_SCRYPT_N", SCRYPT_N)
    monkeypatch.delenv("GANNET_PASSWORD", raising=False)
    monkeypatch.delenv("GANNET_RPC", raising=False)
    return CliRunner()


def invoke(runner: CliRunner, *args: str, **kwargs: Any) -> Result:
    return runner.invoke(wallet_group, list(args), catch_exceptions=False, **kwargs)


def assert_one_line_failure(result: Result, message: str) -> None:
    """A failure is a non-zero exit and one line naming the problem, never a traceback."""
    assert result.exit_code != 0, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0, result.output


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def keystore(runner: CliRunner, tmp_path: Path, password_file: Path) -> Path:
    """A keystore holding KEY under PASSWORD."""
    seed_file = tmp_path / "seed.hex"
    seed_file.write_text(SEED.hex())
    path = tmp_path / "key.json"
    result = invoke(runner, "import", "--keystore", str(path), "--seed-file", str(seed_file),
                    "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    return path


# --- new / import / address ------------------------------------------------------


def test_new_saves_a_keystore_that_opens_with_the_password(
    runner: CliRunner, tmp_path: Path, password_file: Path
) -> None:
    path = tmp_path / "sub" / "new.json"
    result = invoke(runner, "new", "--keystore", str(path), "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    key = load_keystore(path, PASSWORD)
    assert result.output.strip() == encode_address(address_from_public_key(key.public_key))
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == int(SCRYPT_N)


def test_new_keys_differ(runner: CliRunner, tmp_path: Path, password_file: Path) -> None:
    outputs = {
        invoke(runner, "new", "--keystore", str(tmp_path / f"{i}.json"),
               "--password-file", str(password_file)).output
        for i in range(2)
    }
    assert len(outputs) == 2


def test_new_refuses_to_overwrite(runner: CliRunner, keystore: Path, password_file: Path) -> None:
    before = keystore.read_bytes()
    result = invoke(runner, "new", "--keystore", str(keystore), "--password-file",
                    str(password_file))
    assert_one_line_failure(result, f"keystore {keystore} already exists")
    assert keystore.read_bytes() == before


def test_new_prompts_twice_for_the_password(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "prompted.json"
    password = "Obi-1 secret!"  # 'O', 'b', 'i', '1', ' ', '!': never in a bech32 address
    result = invoke(runner, "new", "--keystore", str(path), input=f"{password}\n{password}\n")
    assert result.exit_code == 0, result.output
    assert password not in result.output  # hidden input
    load_keystore(path, password)


def test_new_with_mismatched_prompts_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "prompted.json"
    result = runner.invoke(wallet_group, ["new", "--keystore", str(path)], input="a\nb\n")
    assert result.exit_code != 0
    assert not path.exists()


def test_empty_password_from_env_is_allowed(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANNET_PASSWORD", "")
    path = tmp_path / "devnet.json"
    assert invoke(runner, "new", "--keystore", str(path)).exit_code == 0
    load_keystore(path, "")


def test_password_file_comes_before_env(
    runner: CliRunner, tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANNET_PASSWORD", "from env")
    path = tmp_path / "k.json"
    invoke(runner, "new", "--keystore", str(path), "--password-file", str(password_file))
    load_keystore(path, PASSWORD)


@pytest.mark.parametrize("text", [SEED.hex(), "0x" + SEED.hex() + "\n", SEED.hex().upper()])
def test_import_hex_seed(runner: CliRunner, tmp_path: Path, password_file: Path,
                         text: str) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(text)
    path = tmp_path / "imported.json"
    result = invoke(runner, "import", "--keystore", str(path), "--seed-file", str(seed_file),
                    "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ADDRESS
    assert load_keystore(path, PASSWORD).seed == SEED


def test_import_node_key_file(runner: CliRunner, tmp_path: Path, password_file: Path) -> None:
    key_file = tmp_path / "validator_key.json"
    key_file.write_text(json.dumps(
        {"address": ADDRESS, "public_key": KEY.public_key.hex(), "seed": SEED.hex()}
    ))
    path = tmp_path / "imported.json"
    result = invoke(runner, "import", "--keystore", str(path), "--seed-file", str(key_file),
                    "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ADDRESS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("abcd", "must be 64 hex digits"),
        ("zz" * 32, "is not hex"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"key": SEED.hex()}), 'no "seed" string field'),
        (json.dumps({"seed": SEED.hex(), "address": RECIPIENT}), "but its seed is"),
        (json.dumps({"seed": SEED.hex(), "public_key": "00" * 32}), "public_key does not match"),
    ],
)
def test_import_rejects_bad_seed_files(
    runner: CliRunner, tmp_path: Path, password_file: Path, content: str, message: str
) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(content)
    path = tmp_path / "imported.json"
    result = invoke(runner, "import", "--keystore", str(path), "--seed-file", str(seed_file),
                    "--password-file", str(password_file))
    assert_one_line_failure(result, message)
    assert not path.exists()


def test_address_needs_no_password(runner: CliRunner, keystore: Path) -> None:
    result = invoke(runner, "address", "--keystore", str(keystore), input="")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ADDRESS


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "is not valid JSON"), ("{}", 'no "address" field'),
     (json.dumps({"address": "gnt1qqqq"}), "keystore")],
)
def test_address_of_a_malformed_keystore(
    runner: CliRunner, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert_one_line_failure(invoke(runner, "address", "--keystore", str(path)), message)


def test_address_of_a_missing_keystore(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "address", "--keystore", str(tmp_path / "nope.json"))
    assert_one_line_failure(result, "cannot read keystore")


# --- send: local checks before any network ----------------------------------------


def send_args(keystore: Path, *extra: str, rpc: str = "http://127.0.0.1:9") -> list[str]:
    return ["send", "--keystore", str(keystore), "--to", RECIPIENT, "--rpc", rpc, *extra]


def test_wrong_password(runner: CliRunner, keystore: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    result = invoke(runner, *send_args(keystore, "--amount", "1gpu", "--password-file",
                                       str(wrong)))
    assert_one_line_failure(result, f"wrong password for keystore {keystore}")


def test_wrong_password_from_prompt(runner: CliRunner, keystore: Path) -> None:
    result = invoke(runner, *send_args(keystore, "--amount", "1gpu"), input="nope\n")
    assert result.exit_code != 0
    assert f"wrong password for keystore {keystore}" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--amount", "1.0000000001gpu"], "10 decimals"),
        (["--amount", "-3"], "negative"),
        (["--amount", "0"], "greater than zero"),
        (["--amount", "1gpu", "--denom", "stable"], "stable amounts are given in base units"),
        (["--amount", "1gpu", "--fee", "-1"], "--fee"),
    ],
)
def test_send_checks_inputs_before_the_password(
    runner: CliRunner, keystore: Path, extra: list[str], message: str
) -> None:
    result = invoke(runner, *send_args(keystore, *extra), input="")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "password" not in result.output.lower()


def test_send_rejects_a_mistyped_recipient(runner: CliRunner, keystore: Path) -> None:
    typo = RECIPIENT[:-1] + ("q" if RECIPIENT[-1] != "q" else "p")
    args = ["send", "--keystore", str(keystore), "--to", typo, "--amount", "1"]
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert "bad checksum" in result.output


def test_balance_needs_exactly_one_target(runner: CliRunner, keystore: Path) -> None:
    assert invoke(runner, "balance").exit_code == 2
    assert invoke(runner, "balance", ADDRESS, "--keystore", str(keystore)).exit_code == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_node(runner: CliRunner, keystore: Path, password_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke(runner, "balance", ADDRESS, "--rpc", url)
    assert_one_line_failure(result, f"cannot reach node at {url}: ")
    result = invoke(runner, *send_args(keystore, "--amount", "1gpu", "--password-file",
                                       str(password_file), rpc=url))
    assert_one_line_failure(result, f"cannot reach node at {url}: ")


def test_rpc_url_from_env(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GANNET_RPC", url)
    assert_one_line_failure(invoke(runner, "balance", ADDRESS), f"cannot reach node at {url}")


# --- against the node's JSON-RPC server ----------------------------------------------

CHAIN_ID = "gannet-devnet"
INCLUDED_OK = {"status": "included", "reason": None, "height": 12, "index": 0,
               "receipt": {"status": "ok", "code": 0, "reason": "", "fee_paid": "2000"}}
PENDING = {"status": "pending", "reason": None, "height": None, "index": None, "receipt": None}


@dataclass
class WalletEndpoint:
    """The wallet-facing RPC methods over fixed account data, recording what they receive.

    `gannet_sendRawTransaction` really decodes the raw tx and verifies its
    signature, rejecting it as a node would when either fails.
    """

    account: dict[str, Any] = field(default_factory=lambda: {
        "address": ADDRESS, "gpu": "1500000000", "stable": "42", "spendable_gpu": "500000000",
        "nonce": 5, "pending_nonce": 7, "licences": 0,
        "locks": [{"amount": "1000000000", "release_height": 900}],
    })
    statuses: list[dict[str, Any]] = field(default_factory=lambda: [INCLUDED_OK])
    reject_with: str | None = None
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    received: list[SignedTx] = field(default_factory=list)

    def methods(self) -> dict[str, Any]:
        return {
            "gannet_chainId": self.chain_id,
            "gannet_getAccount": self.get_account,
            "gannet_estimateFee": self.estimate_fee,
            "gannet_sendRawTransaction": self.send_raw_transaction,
            "gannet_getTransaction": self.get_transaction,
        }

    def chain_id(self) -> str:
        self.calls.append(("gannet_chainId", ()))
        return CHAIN_ID

    def get_account(self, address: str) -> dict[str, Any]:
        self.calls.append(("gannet_getAccount", (address,)))
        return self.account

    def estimate_fee(self) -> dict[str, str]:
        self.calls.append(("gannet_estimateFee", ()))
        return {"min_fee": "1000", "fee": "2000"}

    def send_raw_transaction(self, raw: str) -> str:
        self.calls.append(("gannet_sendRawTransaction", (raw,)))
        try:
            stx = codec.decode(SignedTx, bytes.fromhex(raw.removeprefix("0x")))
        except (ValueError, DecodeError) as exc:
            raise InvalidParams(f"raw tx does not decode: {exc}") from None
        if not verify_tx_signature(stx):
            raise TxRejected("invalid signature")
        if self.reject_with is not None:
            raise TxRejected(self.reject_with)
        self.received.append(stx)
        return "0x" + tx_hash(stx).hex()

    def get_transaction(self, hash_hex: str) -> dict[str, Any]:
        self.calls.append(("gannet_getTransaction", (hash_hex,)))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"hash": hash_hex, "tx": None, **status}

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [params for name, params in self.calls if name == method]


@dataclass
class RunningNode:
    endpoint: WalletEndpoint
    url: str


@contextlib.contextmanager
def serve(endpoint: WalletEndpoint, without: tuple[str, ...] = ()) -> Iterator[RunningNode]:
    """An RpcServer with the endpoint's methods (less `without`), on its own loop in a thread."""
    methods = {name: fn for name, fn in endpoint.methods().items() if name not in without}
    server = RpcServer(methods, host="127.0.0.1", port=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="rpc-test", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield RunningNode(endpoint, server.url)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def node() -> Iterator[RunningNode]:
    with serve(WalletEndpoint()) as running:
        yield running


def send(runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode,
         *extra: str) -> Result:
    args = send_args(keystore, "--password-file", str(password_file), *extra, rpc=node.url)
    return invoke(runner, *args)


def test_send_signs_a_transfer_the_node_accepts(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    result = send(runner, keystore, password_file, node, "--amount", "1.5gpu", "--no-wait")
    assert result.exit_code == 0, result.output
    [stx] = node.endpoint.received
    assert result.output.strip() == "0x" + tx_hash(stx).hex()
    assert verify_tx_signature(stx)
    assert encode_address(sender_address(stx)) == ADDRESS
    tx = stx.tx
    assert (tx.chain_id, tx.sender, tx.nonce, tx.fee) == (
        CHAIN_ID.encode(), KEY.public_key, 7, 2000)
    assert tx.body == Transfer(to=decode_address(RECIPIENT), amount=1_500_000_000,
                               denom=DENOM_GPU)
    assert node.endpoint.called("gannet_getAccount") == [(ADDRESS,)]


def test_send_with_explicit_fee_nonce_and_stable_denom(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    result = send(runner, keystore, password_file, node, "--amount", "250", "--denom",
                  "stable", "--fee", "3000", "--nonce", "0", "--no-wait")
    assert result.exit_code == 0, result.output
    [stx] = node.endpoint.received
    assert (stx.tx.nonce, stx.tx.fee) == (0, 3000)
    assert stx.tx.body == Transfer(to=decode_address(RECIPIENT), amount=250, denom=DENOM_STABLE)
    assert node.endpoint.called("gannet_estimateFee") == []
    assert node.endpoint.called("gannet_getAccount") == []


def test_send_password_from_env(
    runner: CliRunner, keystore: Path, node: RunningNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANNET_PASSWORD", PASSWORD)
    monkeypatch.setenv("GANNET_RPC", node.url)
    args = ["send", "--keystore", str(keystore), "--to", RECIPIENT, "--amount", "7", "--no-wait"]
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output
    assert len(node.endpoint.received) == 1


def test_send_reports_the_nodes_rejection(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.reject_with = "nonce too low: account nonce is 9, tx nonce is 7"
    result = send(runner, keystore, password_file, node, "--amount", "1gpu")
    assert_one_line_failure(
        result, "node rejected the transaction: nonce too low: account nonce is 9")


def test_send_waits_until_included(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.statuses = [PENDING, PENDING, INCLUDED_OK]
    result = send(runner, keystore, password_file, node, "--amount", "1gpu", "--wait")
    assert result.exit_code == 0, result.output
    tx_line, status_line = result.output.strip().splitlines()
    assert tx_line == "0x" + tx_hash(node.endpoint.received[0]).hex()
    assert status_line == "included in block 12: ok, fee paid 0.000002 GPU"
    assert node.endpoint.called("gannet_getTransaction") == [(tx_line,)] * 3


def test_send_fails_when_the_receipt_failed(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    failed = {**INCLUDED_OK, "receipt": {"status": "failed", "code": 2, "fee_paid": "2000",
                                         "reason": "insufficient gpu balance: have 0, need 1"}}
    node.endpoint.statuses = [failed]
    result = send(runner, keystore, password_file, node, "--amount", "1gpu")
    assert result.exit_code == 1
    assert "failed in block 12: insufficient gpu balance: have 0, need 1 (code 2" in result.output
    assert "Traceback" not in result.output


def test_send_fails_when_the_tx_is_rejected(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.statuses = [{**PENDING, "status": "rejected", "reason": "fee too low"}]
    result = send(runner, keystore, password_file, node, "--amount", "1gpu")
    assert result.exit_code == 1
    assert "was rejected: fee too low" in result.output


def test_send_wait_times_out(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    node.endpoint.statuses = [PENDING]
    result = send(runner, keystore, password_file, node, "--amount", "1gpu", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "not included after 0.3s (last status: pending)" in result.output


def test_balance(runner: CliRunner, node: RunningNode) -> None:
    result = invoke(runner, "balance", ADDRESS, "--rpc", node.url)
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines == [
        f"address {ADDRESS}",
        "gpu 1.5 GPU (1500000000 base units)",
        "spendable gpu 0.5 GPU (500000000 base units)",
        "stable 42 base units",
        "nonce 5",
        "pending nonce 7",
        "locked 1 GPU until height 900",
    ]


def test_balance_of_keystore_as_json(runner: CliRunner, keystore: Path, node: RunningNode
                                     ) -> None:
    result = invoke(runner, "balance", "--keystore", str(keystore), "--rpc", node.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == node.endpoint.account
    assert node.endpoint.called("gannet_getAccount") == [(ADDRESS,)]


def test_balance_accepts_a_hex_address(runner: CliRunner, node: RunningNode) -> None:
    hex_address = "0x" + address_from_public_key(KEY.public_key).hex()
    assert invoke(runner, "balance", hex_address, "--rpc", node.url).exit_code == 0
    assert node.endpoint.called("gannet_getAccount") == [(ADDRESS,)]


def test_balance_rejects_a_malformed_answer(runner: CliRunner, node: RunningNode) -> None:
    node.endpoint.account = {**node.endpoint.account, "gpu": 1.5}
    result = invoke(runner, "balance", ADDRESS, "--rpc", node.url)
    assert_one_line_failure(result, "node returned a malformed gannet_getAccount result")


def test_rpc_errors_are_one_line(
    runner: CliRunner, keystore: Path, password_file: Path, node: RunningNode
) -> None:
    result = invoke(runner, "balance", ADDRESS, "--rpc", node.url.rstrip("/") + "/nowhere")
    assert_one_line_failure(result, "gannet_getAccount failed: no endpoint at /nowhere")


def test_a_node_without_fee_estimates_needs_an_explicit_fee(
    runner: CliRunner, keystore: Path, password_file: Path
) -> None:
    with serve(WalletEndpoint(), without=("gannet_estimateFee",)) as running:
        result = send(runner, keystore, password_file, running, "--amount", "1gpu")
        assert_one_line_failure(result, "gannet_estimateFee failed: method 'gannet_estimateFee'")
        assert "(code -32601)" in result.output
        result = send(runner, keystore, password_file, running, "--amount", "1gpu",
                      "--fee", "5", "--no-wait")
        assert result.exit_code == 0, result.output
        assert running.endpoint.received[0].tx.fee == 5
