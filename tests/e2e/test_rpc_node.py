"""The JSON-RPC surface of a running devnet: errors for bad input, batches, subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import itertools
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import (
    DevnetProcess,
    DevSigner,
    RpcError,
    hash_hex,
    load_dev_key,
    post_raw,
    random_address,
    raw_hex,
    rpc_call,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
WS_TIMEOUT_S = 10.0
OVERSIZE_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    home = tmp_path_factory.mktemp("rpc") / "devnet"
    with DevnetProcess(home, block_time_ms=BLOCK_TIME_MS) as devnet:
        yield devnet


@pytest.fixture(scope="module")
def signer(node: DevnetProcess) -> DevSigner:
    return DevSigner(load_dev_key(node.home), node.rpc("gannet_chainId"))


def _error(node: DevnetProcess, method: str, *params: Any) -> RpcError:
    with pytest.raises(RpcError) as caught:
        node.rpc(method, *params)
    return caught.value


def _next_nonce(node: DevnetProcess, signer: DevSigner) -> int:
    return node.rpc("gannet_getAccount", signer.address)["pending_nonce"]


def _assert_alive(node: DevnetProcess) -> None:
    assert node.returncode is None, node.log_tail()
    assert isinstance(node.rpc("gannet_blockNumber"), int)


# --- transport-level errors -------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{bad", b'{"jsonrpc": "2.0", "id": 1,', b"\xff\xfe", b"[1,]"])
def test_malformed_json_is_a_parse_error(node: DevnetProcess, body: bytes) -> None:
    status, reply = post_raw(node.url, body)
    assert status != 500
    assert reply["error"]["code"] == -32700, reply
    assert reply["id"] is None


def test_unknown_method(node: DevnetProcess) -> None:
    assert _error(node, "gannet_noSuchMethod").code == -32601
    # Subscriptions exist only on the WebSocket.
    assert _error(node, "gannet_subscribe", "newHeads").code == -32601


@pytest.mark.parametrize(("method", "params"), [
    ("gannet_getAccount", [123]),
    ("gannet_getAccount", ["gnt1notanaddress"]),
    ("gannet_getAccount", []),
    ("gannet_getBlockByNumber", ["abc"]),
    ("gannet_getBlockByNumber", [-1]),
    ("gannet_getBlockByNumber", [1.5]),
    ("gannet_getBlockByNumber", [2**64]),  # beyond uint64: was -32603 and a traceback
    ("gannet_getBlockByNumber", [1, "yes"]),
    ("gannet_getBlockByHash", ["0x1234"]),
    ("gannet_getTransaction", ["0xzz"]),
    ("gannet_getTransaction", [None]),
    ("gannet_getTransaction", ["0x" + "00" * 31]),
    ("gannet_status", [1]),
    ("gannet_getCommit", ["abc"]),
    ("gannet_getCommit", [-1]),
    ("gannet_getValidators", [1.5]),
    ("gannet_getEvidence", ["gnt1notanaddress"]),
    ("gannet_getEvidence", [7]),
    ("gannet_netInfo", [1]),
])
def test_wrong_params_are_invalid_params(node: DevnetProcess, method: str,
                                         params: list[Any]) -> None:
    error = _error(node, method, *params)
    assert error.code == -32602, error


def test_missing_objects_are_not_found(node: DevnetProcess) -> None:
    head = node.rpc("gannet_blockNumber")
    assert _error(node, "gannet_getBlockByNumber", head + 10_000).code == -32001
    assert _error(node, "gannet_getBlockByHash", "0x" + "ab" * 32).code == -32001
    unknown = node.rpc("gannet_getTransaction", "0x" + "cd" * 32)
    assert unknown["status"] == "unknown"


def test_consensus_views_of_a_single_validator_devnet(node: DevnetProcess) -> None:
    wait_until(lambda: node.rpc("gannet_blockNumber") >= 2, 10, "two blocks")
    status = node.rpc("gannet_status")
    assert status["syncing"] is False and status["peers"] == 0
    assert status["consensus"]["height"] >= status["height"]
    validators = node.rpc("gannet_getValidators")
    (only,) = validators["validators"]
    assert only["power"] == validators["total_power"]
    assert only["address"] == status["validator"]
    commit = node.rpc("gannet_getCommit", 1)
    block = node.rpc("gannet_getBlockByNumber", 1)
    assert commit["height"] == 1 and commit["block_hash"] == block["hash"]
    assert [s["validator"] for s in commit["signatures"]] == [status["validator"]]
    assert node.rpc("gannet_getBlockByNumber", 2)["last_commit"]["block_hash"] == block["hash"]
    assert node.rpc("gannet_getEvidence") == {"pending": 0, "committed": []}
    net = node.rpc("gannet_netInfo")
    assert net["node_id"] == status["node_id"] and net["peers"] == []
    assert isinstance(net["listen_port"], int) and net["listen_port"] > 0
    assert _error(node, "gannet_getCommit", status["height"] + 10_000).code == -32001
    assert _error(node, "gannet_getValidators", status["height"] + 10_000).code == -32001


def test_oversize_body_is_a_json_rpc_error(node: DevnetProcess) -> None:
    padding = "a" * OVERSIZE_BYTES
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "gannet_status",
                       "params": [padding]}).encode()
    status, reply = post_raw(node.url, body)
    assert status != 500
    assert reply["error"]["code"] in (-32600, -32005), reply
    _assert_alive(node)


def test_oversize_chunked_body_is_a_json_rpc_error(node: DevnetProcess) -> None:
    """Without a Content-Length the server must count what it reads."""
    conn = http.client.HTTPConnection("127.0.0.1", node.rpc_port, timeout=10)
    chunks = (b"x" * 65536 for _ in range(OVERSIZE_BYTES // 65536))
    try:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/", body=chunks, encode_chunked=True,
                         headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status != 500
        error = json.loads(reply.read())["error"]
        assert error["code"] in (-32600, -32005), error
    finally:
        conn.close()
    _assert_alive(node)


# --- transactions -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0xzz", "0xabc", "nothex", 12, None])
def test_bad_raw_tx_hex_is_invalid_params(node: DevnetProcess, raw: Any) -> None:
    assert _error(node, "gannet_sendRawTransaction", raw).code == -32602


def test_undecodable_raw_tx_is_rejected(node: DevnetProcess) -> None:
    error = _error(node, "gannet_sendRawTransaction", "0x" + "c0" * 40)
    assert error.code == -32000, error
    assert error.message


def _assert_remembered_as_rejected(node: DevnetProcess, tx_hash: str, reason: str) -> None:
    info = node.rpc("gannet_getTransaction", tx_hash)
    assert info["status"] == "rejected", info
    assert reason in info["reason"], info


def test_bad_signature_is_rejected_with_a_reason(node: DevnetProcess, signer: DevSigner) -> None:
    good = signer.transfer(random_address(), 1, _next_nonce(node, signer), 1000)
    flipped = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    bad = dataclasses.replace(good, signature=flipped)
    error = _error(node, "gannet_sendRawTransaction", raw_hex(bad))
    assert error.code == -32000
    assert "signature" in error.message, error
    _assert_remembered_as_rejected(node, hash_hex(bad), "signature")
    # The well-signed original is still accepted: rejection remembered nothing about it.
    assert node.rpc("gannet_sendRawTransaction", raw_hex(good)) == hash_hex(good)


def test_wrong_chain_id_is_rejected(node: DevnetProcess, signer: DevSigner) -> None:
    stx = signer.transfer(random_address(), 1, _next_nonce(node, signer), 1000,
                          chain_id=b"another-chain")
    error = _error(node, "gannet_sendRawTransaction", raw_hex(stx))
    assert error.code == -32000
    assert "wrong chain id" in error.message, error
    _assert_remembered_as_rejected(node, hash_hex(stx), "wrong chain id")


def test_fee_below_minimum_is_rejected(node: DevnetProcess, signer: DevSigner) -> None:
    min_fee = int(node.rpc("gannet_estimateFee")["min_fee"])
    stx = signer.transfer(random_address(), 1, _next_nonce(node, signer), min_fee - 1)
    error = _error(node, "gannet_sendRawTransaction", raw_hex(stx))
    assert error.code == -32000, error
    assert "fee" in error.message, error
    _assert_remembered_as_rejected(node, hash_hex(stx), "fee")


def test_batch_with_good_and_bad_requests(node: DevnetProcess, signer: DevSigner) -> None:
    stx = signer.transfer(random_address(), 7, _next_nonce(node, signer), 1000)
    batch = [
        {"jsonrpc": "2.0", "id": "status", "method": "gannet_status"},
        {"jsonrpc": "2.0", "id": 2, "method": "gannet_noSuchMethod"},
        {"jsonrpc": "2.0", "id": 3, "method": "gannet_getAccount", "params": [123]},
        {"jsonrpc": "2.0", "method": "gannet_blockNumber"},  # a notification: no answer
        {"jsonrpc": "1.0", "id": 5, "method": "gannet_status"},
        "not a request",
        {"jsonrpc": "2.0", "id": 7, "method": "gannet_sendRawTransaction",
         "params": [raw_hex(stx)]},
        {"jsonrpc": "2.0", "id": 8, "method": "gannet_getTransaction",
         "params": [hash_hex(stx)]},
    ]
    status, replies = post_raw(node.url, json.dumps(batch).encode())
    assert status == 200
    assert isinstance(replies, list) and len(replies) == 7, replies
    by_id: dict[Any, list[dict]] = {}
    for reply in replies:
        by_id.setdefault(reply["id"], []).append(reply)
    assert by_id["status"][0]["result"]["chain_id"] == "gannet-devnet"
    assert by_id[2][0]["error"]["code"] == -32601
    assert by_id[3][0]["error"]["code"] == -32602
    assert by_id[5][0]["error"]["code"] == -32600
    assert by_id[None][0]["error"]["code"] == -32600
    assert by_id[7][0]["result"] == hash_hex(stx)
    # Batch entries run in order, so the tx is already known to the node.
    assert by_id[8][0]["result"]["status"] in ("pending", "included")


def test_empty_and_oversize_batches_are_invalid_requests(node: DevnetProcess) -> None:
    _, reply = post_raw(node.url, b"[]")
    assert reply["error"]["code"] == -32600
    many = [{"jsonrpc": "2.0", "id": i, "method": "gannet_blockNumber"} for i in range(1000)]
    status, reply = post_raw(node.url, json.dumps(many).encode())
    assert status != 500
    assert reply["error"]["code"] == -32600, reply


# --- WebSocket subscriptions -----------------------------------------------------------


async def _call_ws(ws: aiohttp.ClientWebSocketResponse, id_: int, method: str,
                   *params: Any) -> Any:
    await ws.send_json({"jsonrpc": "2.0", "id": id_, "method": method, "params": list(params)})
    reply = await ws.receive_json(timeout=WS_TIMEOUT_S)
    assert reply.get("id") == id_, reply
    return reply


async def _next_notification(ws: aiohttp.ClientWebSocketResponse, subscription: str) -> Any:
    message = await ws.receive_json(timeout=WS_TIMEOUT_S)
    assert message["method"] == "gannet_subscription", message
    assert message["params"]["subscription"] == subscription, message
    return message["params"]["result"]


def test_ws_new_heads_arrive_in_order(node: DevnetProcess) -> None:
    async def collect() -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(node.ws_url) as ws:
            sub = (await _call_ws(ws, 1, "gannet_subscribe", "newHeads"))["result"]
            return [await _next_notification(ws, sub) for _ in range(3)]

    heads = asyncio.run(collect())
    for before, after in itertools.pairwise(heads):
        assert after["height"] == before["height"] + 1
        assert after["prev_hash"] == before["hash"]
    for head in heads:
        block = node.rpc("gannet_getBlockByNumber", head["height"], False)
        assert block["hash"] == head["hash"]


def test_ws_bad_subscriptions_are_errors(node: DevnetProcess) -> None:
    async def attempt() -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(node.ws_url) as ws:
            return [await _call_ws(ws, 1, "gannet_subscribe", "noSuchTopic"),
                    await _call_ws(ws, 2, "gannet_subscribe", "txStatus", "0xzz"),
                    await _call_ws(ws, 3, "gannet_subscribe", "newHeads", 1),
                    await _call_ws(ws, 4, "gannet_unsubscribe", "0x" + "00" * 16)]

    replies = asyncio.run(attempt())
    assert [r.get("error", {}).get("code") for r in replies[:3]] == [-32602] * 3, replies
    assert replies[3]["result"] is False


def test_ws_tx_status_reports_inclusion(node: DevnetProcess, signer: DevSigner) -> None:
    stx = signer.transfer(random_address(), 42, _next_nonce(node, signer), 1000)

    async def watch() -> dict:
        async with aiohttp.ClientSession() as session, session.ws_connect(node.ws_url) as ws:
            sub = (await _call_ws(ws, 1, "gannet_subscribe", "txStatus", hash_hex(stx)))
            sent = await asyncio.to_thread(rpc_call, node.url, "gannet_sendRawTransaction",
                                           raw_hex(stx))
            assert sent == hash_hex(stx)
            return await _next_notification(ws, sub["result"])

    event = asyncio.run(watch())
    assert event["hash"] == hash_hex(stx)
    assert event["status"] == "included"
    info = wait_until(lambda: (i := node.rpc("gannet_getTransaction", hash_hex(stx)))
                      ["status"] == "included" and i, 5, "the tx to be included")
    assert (event["height"], event["index"]) == (info["height"], info["index"])
    assert info["receipt"]["status"] == "ok"
