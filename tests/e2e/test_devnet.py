"""A real `gannet devnet` process driven over JSON-RPC and through the `gannet` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode

from chain.records import block_hash
from chain.store import BlockStore
from tests.e2e.harness import (
    DevnetProcess,
    DevSigner,
    NodeProcess,
    account_gpu,
    genesis_account_total,
    hash_hex,
    load_dev_key,
    random_address,
    raw_hex,
    read_genesis,
    run_gannet,
    validator_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
N_TXS = 100
N_RECIPIENTS = 10
CLI_AMOUNT = 1_500_000_000  # "1.5gpu"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")  # a structured log line


def _gpu(node, address: str) -> int:
    return account_gpu(node.rpc("gannet_getAccount", address))


def _wait_included(node, hashes: list[str], timeout_s: float = 30.0) -> dict[str, dict]:
    """Poll until every hash is included; returns getTransaction answers by hash."""
    found: dict[str, dict] = {}

    def all_included() -> bool:
        missing = [h for h in hashes if h not in found]
        for h, info in zip(missing, node.batch([("gannet_getTransaction", [h])
                                                for h in missing]), strict=True):
            assert not isinstance(info, Exception), info
            assert info["status"] in ("pending", "included"), info
            if info["status"] == "included":
                found[h] = info
        return len(found) == len(hashes)

    wait_until(all_included, timeout_s, f"{len(hashes)} txs to be included", 0.1, node)
    return found


def test_transfers_are_included_and_conserve_supply(tmp_path: Path) -> None:
    with DevnetProcess(tmp_path / "devnet", block_time_ms=BLOCK_TIME_MS) as node:
        genesis = read_genesis(node.home)
        supply = genesis_account_total(genesis)
        operator = validator_operator(genesis)
        signer = DevSigner(load_dev_key(node.home), node.rpc("gannet_chainId"))
        min_fee = int(node.rpc("gannet_estimateFee")["min_fee"])
        initial = _gpu(node, signer.address)
        assert _gpu(node, operator) == 0
        recipients = [random_address() for _ in range(N_RECIPIENTS)]

        # Send 100 locally signed transfers with nonces 0..99 and varied amounts and fees.
        sent_to = dict.fromkeys(recipients, 0)
        fees = amounts = 0
        hashes = []
        for nonce in range(N_TXS):
            to, amount, fee = recipients[nonce % N_RECIPIENTS], 1000 * (nonce + 1), min_fee + nonce
            stx = signer.transfer(to, amount, nonce, fee)
            assert node.rpc("gannet_sendRawTransaction", raw_hex(stx)) == hash_hex(stx)
            hashes.append(hash_hex(stx))
            sent_to[to] += amount
            amounts, fees = amounts + amount, fees + fee
        included = _wait_included(node, hashes)

        # Every receipt is ok, in nonce order, and paid exactly its fee.
        places = []
        for nonce, h in enumerate(hashes):
            info = included[h]
            assert info["receipt"]["status"] == "ok", info
            assert int(info["receipt"]["fee_paid"]) == min_fee + nonce
            assert info["tx"]["nonce"] == nonce
            places.append((info["height"], info["index"]))
        assert places == sorted(places), "txs of one sender must be included in nonce order"
        for to, amount in sent_to.items():
            assert _gpu(node, to) == amount
        dev = node.rpc("gannet_getAccount", signer.address)
        assert dev["nonce"] == N_TXS
        assert dev["pending_nonce"] == N_TXS
        assert account_gpu(dev) == initial - amounts - fees
        assert _gpu(node, operator) == fees
        touched = [signer.address, operator, *recipients]
        assert sum(_gpu(node, a) for a in touched) == supply

        # The blocks hold exactly these txs, each where getTransaction says.
        for h, info in included.items():
            block = node.rpc("gannet_getBlockByNumber", info["height"], False)
            assert block["txs"][info["index"]] == h

        # Once more through the wallet CLI, as a user would.
        cli_to = random_address()
        keystore = str(node.home / "dev_account.json")
        sent = run_gannet(["wallet", "send", "--keystore", keystore, "--to", cli_to,
                           "--amount", "1.5gpu", "--rpc", node.url, "--wait", "--timeout", "30"],
                          env={"GANNET_PASSWORD": ""})
        assert sent.returncode == 0, sent.stderr
        cli_hash, cli_report = sent.stdout.splitlines()
        assert cli_report.startswith("included in block ") and ": ok" in cli_report
        cli_info = node.rpc("gannet_getTransaction", cli_hash)
        assert cli_info["status"] == "included"
        assert cli_info["tx"]["nonce"] == N_TXS
        balance = run_gannet(["wallet", "balance", cli_to, "--rpc", node.url])
        assert balance.returncode == 0, balance.stderr
        assert f"({CLI_AMOUNT} base units)" in balance.stdout
        as_json = run_gannet(["wallet", "balance", "--json", cli_to, "--rpc", node.url])
        assert json.loads(as_json.stdout)["gpu"] == str(CLI_AMOUNT)
        cli_fee = int(cli_info["receipt"]["fee_paid"])
        assert _gpu(node, operator) == fees + cli_fee
        assert sum(_gpu(node, a) for a in [*touched, cli_to]) == supply
        assert node.rpc("gannet_getAccount", signer.address)["nonce"] == N_TXS + 1
        assert node.terminate() == 0, node.log_tail()


def _read_head(home: Path):
    store = BlockStore(str(home / "data" / "store"))
    try:
        head = store.head()
        return head, block_hash(store.get_block(head.height))
    finally:
        store.close()


def test_node_start_resumes_the_devnet_chain(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    with DevnetProcess(home, block_time_ms=BLOCK_TIME_MS) as devnet:
        wait_until(lambda: devnet.rpc("gannet_blockNumber") >= 3, 20, "height 3", log=devnet)
        early = devnet.rpc("gannet_getBlockByNumber", 2, False)
        assert devnet.terminate() == 0, devnet.log_tail()
    stored, stored_hash = _read_head(home)
    assert stored.height >= 3

    with NodeProcess(home, devnet.rpc_port, log_path=tmp_path / "node.log") as node:
        status = node.rpc("gannet_status")
        assert status["height"] >= stored.height
        assert node.rpc("gannet_getBlockByNumber", 2, False) == early
        resumed = node.rpc("gannet_getBlockByNumber", stored.height, False)
        assert resumed["hash"] == "0x" + stored_hash.hex()
        wait_until(lambda: node.rpc("gannet_blockNumber") >= stored.height + 3, 20,
                   "the resumed chain to grow", log=node)
        after = node.rpc("gannet_getBlockByNumber", stored.height + 1, False)
        assert after["prev_hash"] == resumed["hash"]
        assert after["last_commit"]["height"] == stored.height
        assert after["last_commit"]["block_hash"] == resumed["hash"]
        assert node.terminate() == 0, node.log_tail()


def test_sigterm_stops_cleanly_with_a_websocket_client(tmp_path: Path) -> None:
    async def subscribe_then_stop(node: DevnetProcess) -> int | None:
        async with aiohttp.ClientSession() as session, session.ws_connect(node.ws_url) as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "gannet_subscribe",
                                "params": ["newHeads"]})
            assert "result" in await ws.receive_json(timeout=10)
            os.killpg(node.proc.pid, signal.SIGTERM)
            async for _ in ws:  # heads until the server closes
                pass
            return ws.close_code

    with DevnetProcess(tmp_path / "devnet", block_time_ms=BLOCK_TIME_MS) as node:
        started = time.monotonic()
        close_code = asyncio.run(subscribe_then_stop(node))
        assert node.proc.wait(timeout=10) == 0, node.log_tail()
        assert time.monotonic() - started < 5
        assert close_code == WSCloseCode.GOING_AWAY


def test_node_refuses_a_modified_genesis(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    with DevnetProcess(home, block_time_ms=BLOCK_TIME_MS) as devnet:
        wait_until(lambda: devnet.rpc("gannet_blockNumber") >= 1, 20, "a block", log=devnet)
    genesis_file = home / "config" / "genesis.json"
    doc = json.loads(genesis_file.read_text())
    doc["genesis_time_ms"] += 1
    genesis_file.write_text(json.dumps(doc, indent=2))
    before = _read_head(home)

    started = time.monotonic()
    result = run_gannet(["node", "start", "--home", str(home)], timeout_s=30)
    assert result.returncode != 0
    assert time.monotonic() - started < 20
    # One line for the operator (log lines aside), naming the problem; no traceback.
    lines = [line for line in result.stderr.splitlines() if line and not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: genesis mismatch"), result.stderr
    assert _read_head(home) == before, "a refused start must not touch the store"
