"""Helpers for tests that run real `gannet` processes on 127.0.0.1.

- `free_port()` picks a port nobody listens on.
- `GannetProcess` runs one `gannet ...` command in its own process group with
  its output in a log file; `DevnetProcess` is `gannet devnet`, `NodeProcess`
  is `gannet node start`. Both wait until `gannet_status` answers and always
  kill the whole process group on exit, even when the test failed.
- `rpc_call` / `rpc_batch` / `post_raw` speak JSON-RPC over urllib.
- `DevSigner` signs transfers (or any tx body, `sign`) locally with one key.
- `wait_until` polls a condition with a deadline and a useful failure message.
- `wait_included` polls tx hashes until included; `read_at_one_height` reads
  several methods while no block commits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chain import codec
from chain.address import address_from_public_key, encode_address, parse_address
from chain.crypto import SigningKey
from chain.keystore import load_keystore
from chain.records import DENOM_GPU, SignedTx, Transfer, Tx, TxBody, tx_hash
from chain.signing import sign_tx
from node.config import HomePaths

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000
PORT_ATTEMPTS = 3
DEV_KEYSTORE = "dev_account.json"
_ids = itertools.count(1)


# --- processes -------------------------------------------------------------------


def gannet_executable() -> str:
    """The `gannet` console script of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "gannet"
    if beside.exists():
        return str(beside)
    found = shutil.which("gannet")
    if found is None:
        raise RuntimeError("the gannet console script is not installed (pip install -e .)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last `chars` characters of a log file ('' if it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-chars:].decode("utf-8", "replace")


class GannetProcess:
    """A `gannet` subprocess in its own process group, logging to `log_path`.

    Use as a context manager: entering starts it and waits until its RPC answers
    `gannet_status`; leaving stops the whole group (SIGTERM, then SIGKILL).
    """

    def __init__(self, args: Sequence[str], rpc_port: int, log_path: Path,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.args = [gannet_executable(), *args]
        self.set_port(rpc_port)
        self.log_path = log_path
        self.log_start = 0  # where this run's output begins in the log
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}  # added to the environment of the next start

    def set_port(self, rpc_port: int) -> None:
        """Where the RPC of this process listens."""
        self.rpc_port = rpc_port
        self.url = f"http://127.0.0.1:{rpc_port}/"
        self.ws_url = f"ws://127.0.0.1:{rpc_port}/ws"

    def __enter__(self) -> GannetProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def start(self) -> None:
        """Start the process and wait until it serves `gannet_status`."""
        assert self.proc is None, "already started"
        with open(self.log_path, "ab") as log:
            self.log_start = log.tell()
            log.write(f"\n=== {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill9()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.describe()} exited with {self.proc.returncode} before its RPC "
                    f"answered; log tail:\n{self.log_tail()}")
            try:
                rpc_call(self.url, "gannet_status", timeout=1.0)
                return
            except (OSError, RpcError) as exc:
                last_error = exc
            except (ValueError, AssertionError) as exc:
                # Not JSON-RPC: another process took our port before we bound it (a lost
                # port race); ours fails to bind and exits, which the poll above reports.
                last_error = exc
            time.sleep(0.05)
        raise AssertionError(
            f"{self.describe()} did not answer gannet_status within {self.ready_timeout_s:g} s "
            f"(last error: {last_error}); log tail:\n{self.log_tail()}")

    def describe(self) -> str:
        """The command line, for messages."""
        return " ".join(self.args[1:])

    def log_tail(self) -> str:
        """The end of this process's log."""
        return read_tail(self.log_path)

    def log_of_this_run(self) -> str:
        """What the process wrote since its last start."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode("utf-8", "replace")

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while running (or never started)."""
        return None if self.proc is None else self.proc.poll()

    def rpc(self, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
        """Call a method on this node; RpcError for an error answer."""
        return rpc_call(self.url, method, *params, timeout=timeout)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]],
              timeout: float = RPC_TIMEOUT_S) -> list[Any]:
        """Call several methods in one batch; results (or RpcError objects) in order."""
        return rpc_batch(self.url, calls, timeout=timeout)

    def kill9(self) -> None:
        """SIGKILL the whole process group and reap the process (no cleanup runs in it)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, wait for a clean exit, SIGKILL if it takes too long.

        Returns the exit status of the main process.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._signal_group(signal.SIGKILL)  # stragglers of the group, if any
        return self.proc.returncode

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


class DevnetProcess(GannetProcess):
    """`gannet devnet --home HOME --rpc-port P --block-time MS` (creates HOME if absent).

    Without `provider=True` it runs with --no-provider: no provider account at genesis and
    no provider worker, so the ledger holds only the dev account and what tests do.

    `params` (genesis parameter overrides, e.g. {"tokenomics": {"halving_period_blocks":
    30}}) is written beside the home and passed as `--params` while the home is new.
    """

    def __init__(self, home: Path, rpc_port: int | None = None, block_time_ms: int = 200,
                 log_path: Path | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
                 params: dict[str, Any] | None = None, provider: bool = False) -> None:
        self.home = Path(home)
        self.block_time_ms = block_time_ms
        self.provider = provider  # run the devnet's provider worker (and fund it at genesis)
        self.params_file: Path | None = None
        if params is not None:
            self.params_file = self.home.parent / f"{self.home.name}.params.json"
            self.params_file.write_text(json.dumps(params))
        self._pick_port = rpc_port is None
        port = free_port() if rpc_port is None else rpc_port
        log = log_path if log_path is not None else self.home.parent / f"{self.home.name}.log"
        super().__init__(self._args(port), port, log, ready_timeout_s)

    def _args(self, port: int) -> list[str]:
        new_home = not HomePaths(self.home).config_file.exists()
        params = ["--params", str(self.params_file)] if self.params_file and new_home else []
        provider = [] if self.provider else ["--no-provider"]
        return ["devnet", "--home", str(self.home), "--rpc-port", str(port),
                "--block-time", str(self.block_time_ms), "--p2p-port", "0", *params, *provider]

    def start(self) -> None:
        """Start; when the port we picked was taken meanwhile, try another one."""
        self.args = [self.args[0], *self._args(self.rpc_port)]
        for attempt in range(PORT_ATTEMPTS):
            try:
                super().start()
                return
            except AssertionError:
                lost_race = self._pick_port and "address already in use" in self.log_of_this_run()
                if not lost_race or attempt == PORT_ATTEMPTS - 1:
                    raise
            self.proc = None
            self.set_port(free_port())
            self.args = [self.args[0], *self._args(self.rpc_port)]

    @property
    def paths(self) -> HomePaths:
        """The files of this devnet's home."""
        return HomePaths(self.home)


class NodeProcess(GannetProcess):
    """`gannet node start --home HOME`, serving RPC on the port its config names."""

    def __init__(self, home: Path, rpc_port: int, log_path: Path | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.home = Path(home)
        log = log_path if log_path is not None else self.home.parent / f"{self.home.name}.log"
        super().__init__(["node", "start", "--home", str(self.home)], rpc_port, log,
                         ready_timeout_s)


def run_gannet(args: Sequence[str], timeout_s: float = 60.0,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short `gannet` command to completion, capturing its output."""
    return subprocess.run(
        [gannet_executable(), *args], capture_output=True, text=True, timeout=timeout_s,
        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, check=False,
    )


# --- JSON-RPC ----------------------------------------------------------------------


class RpcError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"rpc error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def post_raw(url: str, body: bytes, timeout: float = RPC_TIMEOUT_S,
             content_type: str = "application/json") -> tuple[int, Any]:
    """POST `body`; returns (HTTP status, decoded JSON body or None when empty)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    return status, (json.loads(raw) if raw else None)


def _request(method: str, params: Sequence[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}


def _unwrap(response: Any) -> Any:
    if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
        raise AssertionError(f"not a JSON-RPC response: {response!r:.300}")
    if "error" in response:
        error = response["error"]
        return RpcError(error.get("code"), error.get("message", ""), error.get("data"))
    return response["result"]


def rpc_call(url: str, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
    """`method(*params)` over HTTP; raises RpcError for an error answer, OSError if unreachable."""
    request = _request(method, params)
    _, response = post_raw(url, json.dumps(request).encode(), timeout=timeout)
    result = _unwrap(response)
    if isinstance(result, RpcError):
        raise result
    assert response["id"] == request["id"], f"answer id {response['id']} != {request['id']}"
    return result


def rpc_batch(url: str, calls: Sequence[tuple[str, Sequence[Any]]],
              timeout: float = RPC_TIMEOUT_S) -> list[Any]:
    """Several calls in one JSON-RPC batch; each result, or an RpcError object, in order."""
    if not calls:
        return []
    requests = [_request(method, params) for method, params in calls]
    _, responses = post_raw(url, json.dumps(requests).encode(), timeout=timeout)
    if not isinstance(responses, list):
        raise AssertionError(f"batch answered with a non-list: {responses!r:.300}")
    by_id = {r.get("id"): r for r in responses}
    return [_unwrap(by_id[r["id"]]) for r in requests]


def rpc_batch_chunked(url: str, calls: Sequence[tuple[str, Sequence[Any]]],
                      chunk: int = 100) -> list[Any]:
    """`rpc_batch` in chunks under the node's batch limit."""
    out: list[Any] = []
    for start in range(0, len(calls), chunk):
        out.extend(rpc_batch(url, calls[start:start + chunk]))
    return out


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.05, log: GannetProcess | None = None) -> Any:
    """Poll `condition()` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"; log tail:\n{log.log_tail()}" if log is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{tail}")
        time.sleep(interval_s)


SNAPSHOT_ATTEMPTS = 50


def read_at_one_height(url: str, calls: Sequence[tuple[str, Sequence[Any]]]
                       ) -> tuple[int, list[Any]]:
    """(height, results) of `calls` answered while no block committed: one batch between
    two `gannet_blockNumber` reads, retried until both reads agree."""
    batch = [("gannet_blockNumber", []), *calls, ("gannet_blockNumber", [])]
    for _ in range(SNAPSHOT_ATTEMPTS):
        first, *results, last = rpc_batch(url, batch)
        if first == last:
            for result in results:
                if isinstance(result, RpcError):
                    raise result
            return last, results
        time.sleep(0.02)
    raise AssertionError(f"{url}: no two head reads agreed in {SNAPSHOT_ATTEMPTS} attempts")


def wait_included(url: str, hashes: Sequence[str], timeout_s: float = 30.0
                  ) -> list[dict[str, Any]]:
    """Poll until every tx hash is included; their gannet_getTransaction answers, in order.

    A tx that is rejected or unknown (dropped) fails at once.
    """
    found: dict[str, dict[str, Any]] = {}

    def all_included() -> bool:
        missing = [h for h in hashes if h not in found]
        answers = rpc_batch(url, [("gannet_getTransaction", [h]) for h in missing])
        for h, info in zip(missing, answers, strict=True):
            assert not isinstance(info, Exception), info
            assert info["status"] in ("pending", "included"), info
            if info["status"] == "included":
                found[h] = info
        return len(found) == len(hashes)

    wait_until(all_included, timeout_s, f"{len(hashes)} tx(s) to be included", 0.05)
    return [found[h] for h in hashes]


# --- keys, transfers, genesis ---------------------------------------------------------


def load_dev_key(home: Path) -> SigningKey:
    """The devnet's funded dev key (its keystore has an empty password)."""
    return load_keystore(Path(home) / DEV_KEYSTORE, "")


def random_address() -> str:
    """A fresh bech32 address nobody holds a key for."""
    return encode_address(os.urandom(20))


def address_of(key: SigningKey) -> str:
    """The bech32 account address of a key."""
    return encode_address(address_from_public_key(key.public_key))


class DevSigner:
    """Builds and signs transfers from one key, locally (what a wallet does)."""

    def __init__(self, key: SigningKey, chain_id: str) -> None:
        self.key = key
        self.chain_id = chain_id.encode()
        self.address = address_of(key)

    def transfer(self, to: str, amount: int, nonce: int, fee: int, denom: int = DENOM_GPU,
                 chain_id: bytes | None = None) -> SignedTx:
        """A signed transfer of `amount` base units to `to`."""
        body = Transfer(to=parse_address(to), amount=amount, denom=denom)
        return self.sign(body, nonce, fee, chain_id)

    def sign(self, body: TxBody, nonce: int, fee: int,
             chain_id: bytes | None = None) -> SignedTx:
        """A signed tx carrying any body (Delegate, Swap, PayRevenue, Unjail, ...)."""
        tx = Tx(chain_id=self.chain_id if chain_id is None else chain_id,
                sender=self.key.public_key, nonce=nonce, fee=fee, body=body)
        return sign_tx(self.key, tx)


def raw_hex(stx: SignedTx) -> str:
    """The 0x-hex canonical encoding a node's gannet_sendRawTransaction takes."""
    return "0x" + codec.encode(stx).hex()


def hash_hex(stx: SignedTx) -> str:
    """The 0x-hex tx hash of a signed tx."""
    return "0x" + tx_hash(stx).hex()


def read_genesis(home: Path) -> dict[str, Any]:
    """The decoded genesis.json of a home."""
    return json.loads(HomePaths(Path(home)).genesis_file.read_text())


def genesis_account_total(genesis: dict[str, Any]) -> int:
    """GPU held by accounts at genesis: balances plus locked amounts."""
    return sum(int(a["gpu"]) + sum(int(lk["amount"]) for lk in a.get("locks", []))
               for a in genesis["accounts"])


def account_gpu(account: dict[str, Any]) -> int:
    """All GPU of a gannet_getAccount answer; locked GPU is part of "gpu" (unlike in the
    genesis file, where a lock comes on top of the balance)."""
    return int(account["gpu"])


def validator_operator(genesis: dict[str, Any]) -> str:
    """The operator address of the devnet's only validator (it receives the fees)."""
    (validator,) = genesis["validators"]
    return validator["operator"]
