"""JSON-RPC 2.0 server: every error path over HTTP, WebSocket subscriptions, the CLI client."""

import asyncio
import base64
import contextlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.rpc.client import RpcClient, RpcClientError, RpcConnectionError
from node.rpc.errors import InvalidParams, NotFound, TxRejected
from node.rpc.server import RpcLimits, RpcServer, compute_json_depth
from node.rpc.subscriptions import SubscriptionHub, UnknownTopic

LIMITS = RpcLimits(max_batch=10, header_timeout_s=2,
                   body_timeout_s=2, keepalive_timeout_s=2)
CALLS: list[Any] = []


def add(a: int, b: int) -> int:
    """Sync method with two positional params."""
    return a + b


async def echo(value: Any = None) -> Any:
    """Async method returning its argument."""
    return value


def greet(name: str, *, shout: bool = False) -> str:
    """Method with a keyword-only param."""
    return f"HELLO {name.upper()}" if shout else f"hello {name}"


def record(value: Any) -> None:
    """Side effect visible to tests, for notifications."""
    CALLS.append(value)


def boom() -> None:
    """A method with a bug."""
    raise RuntimeError("secret detail that must not leak")


def inner_type_error(x: int) -> int:
    """Binds fine, then fails inside: an internal error, not invalid params."""
    return x + "1"  # type: ignore[operator]


def reject() -> None:
    """A method refusing with a server-defined error and data."""
    raise TxRejected("nonce too low", data={"reason": "nonce", "expected": 7})


def missing(height: int) -> None:
    """A lookup that finds nothing."""
    raise NotFound(f"no block at height {height}")


def huge_result() -> int:
    """A result Python cannot print as a decimal string."""
    return 10**5000


def nan_result() -> float:
    """A result JSON cannot carry."""
    return float("nan")


def validate_address(address: Any) -> str:
    """Topic validator for txConfirmed: an address-like string."""
    if not isinstance(address, str) or not address.startswith("gan1"):
        raise InvalidParams(f"expected a gan1… address, got {address!r}")
    return address


METHODS = {"add": add, "echo": echo, "greet": greet, "record": record, "boom": boom,
           "inner_type_error": inner_type_error, "reject": reject, "missing": missing,
           "huge_result": huge_result, "nan_result": nan_result}


def make_hub() -> SubscriptionHub:
    """A hub with the topics the node will publish."""
    hub = SubscriptionHub()
    hub.register_topic("newHeads")
    hub.register_topic("txConfirmed", validate_address)
    return hub


class ServerThread:
    """An RpcServer on its own event loop in a background thread."""

    def __init__(self, limits: RpcLimits) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RpcServer(METHODS, limits=limits, hub=make_hub())
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    with ServerThread(LIMITS) as thread:
        yield thread


def post(live: ServerThread, body: bytes | str, method: str = "POST",
         path: str = "/") -> tuple[int, dict[str, str], Any]:
    """Send one raw HTTP request; returns status, headers and the decoded JSON (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        raw = reply.read()
        headers = {k.lower(): v for k, v in reply.getheaders()}
        return reply.status, headers, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def call(live: ServerThread, method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    """One request with status 200; returns the response object."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        request["params"] = params
    status, headers, reply = post(live, json.dumps(request))
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    return reply


def error_code(reply: dict[str, Any]) -> int:
    """The error code of an error response (asserting the response shape)."""
    assert reply["jsonrpc"] == "2.0" and "result" not in reply
    assert isinstance(reply["error"]["message"], str)
    return reply["error"]["code"]


# --- success paths ------------------------------------------------------------------


def test_positional_and_named_params(live: ServerThread) -> None:
    assert call(live, "add", [2, 3]) == {"jsonrpc": "2.0", "id": 1, "result": 5}
    assert call(live, "add", {"a": 2, "b": 40}, id_="x")["result"] == 42
    assert call(live, "greet", {"name": "ana", "shout": True})["result"] == "HELLO ANA"
    assert call(live, "echo", id_=None) == {"jsonrpc": "2.0", "id": None, "result": None}


def test_ids_echoed_exactly(live: ServerThread) -> None:
    big = 10**200
    assert call(live, "echo", [1], id_=big)["id"] == big
    assert call(live, "echo", [1], id_=-5)["id"] == -5
    assert call(live, "echo", [1], id_="")["id"] == ""


def test_batch_answers_in_order_and_skips_notifications(live: ServerThread) -> None:
    CALLS.clear()
    batch = [{"jsonrpc": "2.0", "method": "add", "params": [1, 1], "id": 1},
             {"jsonrpc": "2.0", "method": "record", "params": ["n1"]},
             {"jsonrpc": "2.0", "method": "nope", "id": 3},
             {"jsonrpc": "2.0", "method": "add", "params": [2, 2], "id": 4}]
    status, _, reply = post(live, json.dumps(batch))
    assert status == 200
    assert [r["id"] for r in reply] == [1, 3, 4]
    assert reply[0]["result"] == 2 and error_code(reply[1]) == -32601 and reply[2]["result"] == 4
    assert CALLS == ["n1"]


def test_notification_gets_204_and_still_runs(live: ServerThread) -> None:
    CALLS.clear()
    status, headers, reply = post(live, '{"jsonrpc":"2.0","method":"record","params":[7]}')
    assert (status, reply, CALLS) == (204, None, [7])
    assert headers["content-type"].startswith("application/json")


def test_notification_only_batch_gets_204(live: ServerThread) -> None:
    CALLS.clear()
    batch = [{"jsonrpc": "2.0", "method": "record", "params": [i]} for i in range(3)]
    batch.append({"jsonrpc": "2.0", "method": "boom"})  # errors of notifications stay silent
    status, _, reply = post(live, json.dumps(batch))
    assert (status, reply, CALLS) == (204, None, [0, 1, 2])


# --- error paths ------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"jsonrpc": "2.0",}', b"\xff\xfe{}",
                                  b"", b"[1,2", b'{"a": NaN}', b'{"a": Infinity}',
                                  b'{"jsonrpc":"2.0","method":"echo","params":[1e999],"id":1}'])
def test_malformed_json_is_parse_error_with_null_id(live: ServerThread, body: bytes) -> None:
    status, _, reply = post(live, body)
    assert status == 200
    assert error_code(reply) == -32700 and reply["id"] is None


@pytest.mark.parametrize("request_obj", [
    1, "x", None, True,
    {"method": "add", "id": 1},  # no jsonrpc member
    {"jsonrpc": "1.0", "method": "add", "id": 1},
    {"jsonrpc": 2.0, "method": "add", "id": 1},
    {"jsonrpc": "2.0", "id": 1},  # no method
    {"jsonrpc": "2.0", "method": 5, "id": 1},
    {"jsonrpc": "2.0", "method": "add", "params": "1,2", "id": 1},
    {"jsonrpc": "2.0", "method": "add", "params": 3, "id": 1},
])
def test_wrong_types_are_invalid_request(live: ServerThread, request_obj: Any) -> None:
    status, _, reply = post(live, json.dumps(request_obj))
    assert status == 200 and error_code(reply) == -32600


@pytest.mark.parametrize("bad_id", [1.5, True, False, [1], {"a": 1}])
def test_bad_id_types_are_invalid_request_with_null_id(live: ServerThread, bad_id: Any) -> None:
    reply = call(live, "add", [1, 2], id_=bad_id)
    assert error_code(reply) == -32600 and reply["id"] is None
    assert "id" in reply["error"]["message"]


def test_unknown_method(live: ServerThread) -> None:
    reply = call(live, "no_such_method", [])
    assert error_code(reply) == -32601 and reply["id"] == 1


def test_subscribe_over_http_says_use_websocket(live: ServerThread) -> None:
    reply = call(live, "gannet_subscribe", ["newHeads"])
    assert error_code(reply) == -32601 and "/ws" in reply["error"]["message"]


@pytest.mark.parametrize(("method", "params"), [
    ("add", [1]), ("add", [1, 2, 3]), ("add", {"a": 1}), ("add", {"a": 1, "b": 2, "c": 3}),
    ("greet", ["ana", True]), ("greet", {"nom": "ana"}), ("echo", {"a-b": 1}),
])
def test_params_not_fitting_signature_are_invalid_params(live: ServerThread, method: str,
                                                          params: Any) -> None:
    reply = call(live, method, params)
    assert error_code(reply) == -32602
    assert "expects params (" in reply["error"]["message"]


def test_type_error_inside_method_is_internal_error(live: ServerThread) -> None:
    assert error_code(call(live, "inner_type_error", [1])) == -32603


def test_internal_exception_is_generic_32603_never_500(live: ServerThread) -> None:
    reply = call(live, "boom")
    assert error_code(reply) == -32603 and reply["id"] == 1
    assert "secret" not in json.dumps(reply)


def test_rpc_error_subclasses_pass_through_with_data(live: ServerThread) -> None:
    reply = call(live, "reject")
    assert reply["error"] == {"code": -32000, "message": "nonce too low",
                              "data": {"reason": "nonce", "expected": 7}}
    reply = call(live, "missing", [9])
    assert reply["error"] == {"code": -32001, "message": "no block at height 9"}


@pytest.mark.parametrize("method", ["huge_result", "nan_result"])
def test_unencodable_result_is_internal_error(live: ServerThread, method: str) -> None:
    assert error_code(call(live, method)) == -32603


def test_huge_integer_literals_do_not_crash(live: ServerThread) -> None:
    digits = "9" * 5000  # over Python's 4300-digit int parsing limit
    body = '{"jsonrpc":"2.0","method":"echo","params":[' + digits + '],"id":1}'
    status, _, reply = post(live, body)
    assert status == 200 and error_code(reply) == -32700
    body = '{"jsonrpc":"2.0","method":"echo","params":[1],"id":' + digits + "}"
    assert error_code(post(live, body)[2]) == -32700
    ok_digits = int("7" * 4000)
    assert call(live, "echo", [ok_digits])["result"] == ok_digits


def test_oversize_body_is_413_with_jsonrpc_error(live: ServerThread) -> None:
    body = '{"jsonrpc":"2.0","method":"echo","params":["' + "a" * LIMITS.max_body_bytes + '"]}'
    status, headers, reply = post(live, body)
    assert status == 413 and headers["content-type"].startswith("application/json")
    assert error_code(reply) == -32600 and "limit" in reply["error"]["message"]


def test_chunked_body_over_limit_is_413(live: ServerThread) -> None:
    chunk = b"a" * 65536
    chunks = [b'{"jsonrpc":"2.0","method":"echo","params":["']
    chunks += [chunk] * (LIMITS.max_body_bytes // len(chunk) + 1) + [b'"]}']
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    try:
        conn.request("POST", "/", body=iter(chunks), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        reply = conn.getresponse()
        assert reply.status == 413 and error_code(json.loads(reply.read())) == -32600
    finally:
        conn.close()


def test_body_just_under_limit_is_served(live: ServerThread) -> None:
    filler = "a" * (LIMITS.max_body_bytes - 100)
    assert call(live, "echo", [filler])["result"] == filler


def test_empty_batch_is_single_invalid_request(live: ServerThread) -> None:
    status, _, reply = post(live, "[]")
    assert status == 200 and isinstance(reply, dict) and error_code(reply) == -32600


@pytest.mark.parametrize("size", [11, 1000])
def test_batch_over_limit_is_single_invalid_request(live: ServerThread, size: int) -> None:
    batch = [{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": i} for i in range(size)]
    status, _, reply = post(live, json.dumps(batch))
    assert status == 200 and isinstance(reply, dict) and error_code(reply) == -32600
    assert f"batch of {size}" in reply["error"]["message"]


def test_batch_at_limit_is_served(live: ServerThread) -> None:
    batch = [{"jsonrpc": "2.0", "method": "add", "params": [i, 1], "id": i} for i in range(10)]
    reply = post(live, json.dumps(batch))[2]
    assert [r["result"] for r in reply] == [i + 1 for i in range(10)]


def test_non_object_batch_entries_each_get_invalid_request(live: ServerThread) -> None:
    valid = '{"jsonrpc":"2.0","method":"add","params":[1,1],"id":9}'
    reply = post(live, '[1, "x", {"foo": "boo"}, [], ' + valid + "]")[2]
    assert [error_code(r) for r in reply[:4]] == [-32600] * 4
    assert all(r["id"] is None for r in reply[:4]) and reply[4]["result"] == 2


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_invalid_request_without_recursion(live: ServerThread,
                                                           opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    status, _, reply = post(live, opener * 100_000 + "1" + closer * 100_000)
    assert status == 200 and error_code(reply) == -32600 and "nested" in reply["error"]["message"]


def test_depth_within_limit_is_served(live: ServerThread) -> None:
    value: Any = 1
    for _ in range(LIMITS.max_json_depth - 3):
        value = [value]
    assert call(live, "echo", [value])["result"] == value


def test_compute_json_depth_ignores_brackets_in_strings() -> None:
    assert compute_json_depth('{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert compute_json_depth(r'["\"[[[", [[]]]') == 3
    assert compute_json_depth('"unterminated [[[[') == 0
    assert compute_json_depth("[" * 100_000) == 100_000
    assert compute_json_depth('"\\' * 100_000) == 0  # linear on pathological escapes


@pytest.mark.parametrize(("verb", "path", "status"), [
    ("GET", "/", 405), ("PUT", "/", 405), ("DELETE", "/", 405),
    ("GET", "/other", 404), ("POST", "/other", 404), ("GET", "/ws", 400),
])
def test_wrong_http_method_or_path_has_jsonrpc_body(live: ServerThread, verb: str, path: str,
                                                   status: int) -> None:
    got, headers, reply = post(live, b"", method=verb, path=path)
    assert got == status and headers["content-type"].startswith("application/json")
    assert reply["jsonrpc"] == "2.0" and reply["id"] is None and "code" in reply["error"]
    if status == 405:
        assert headers["allow"] == "POST"


# --- fuzz ------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                        allow_infinity=False)
json_values = st.recursive(
    json_scalars | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=8,
)
request_like = st.fixed_dictionaries(
    {},
    optional={"jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | json_values,
              "method": st.sampled_from(sorted(METHODS)) | json_values,
              "params": json_values, "id": json_values},
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    request_like.map(lambda v: json.dumps(v).encode()),
    st.lists(request_like | json_values, max_size=12).map(lambda v: json.dumps(v).encode()),
)


def assert_response_shape(reply: Any) -> None:
    """A JSON-RPC 2.0 response object: result xor error, an id member."""
    assert isinstance(reply, dict) and reply["jsonrpc"] == "2.0" and "id" in reply
    assert ("result" in reply) != ("error" in reply)
    if "error" in reply:
        assert isinstance(reply["error"]["code"], int)
        assert isinstance(reply["error"]["message"], str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_fuzzed_bodies_get_valid_jsonrpc_replies(live: ServerThread, body: bytes) -> None:
    status, _, reply = post(live, body)
    assert status in (200, 204)
    if status == 204:
        assert reply is None
    elif isinstance(reply, list):
        assert reply, "an empty batch reply must be 204 instead"
        for item in reply:
            assert_response_shape(item)
    else:
        assert_response_shape(reply)


# --- client ------------------------------------------------------------------------


def test_client_returns_results_and_raises_typed_errors(live: ServerThread) -> None:
    client = RpcClient(live.server.url, timeout=5)
    assert client.call("add", 20, 22) == 42
    with pytest.raises(RpcClientError) as info:
        client.call("reject")
    assert (info.value.code, info.value.data["reason"]) == (-32000, "nonce")
    with pytest.raises(RpcClientError) as info:
        client.call("add", 1)
    assert info.value.code == -32602


def test_client_unreachable_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(RpcConnectionError, match=f"127.0.0.1:{port}"):
        RpcClient(url, timeout=2).call("add", 1, 2)


def test_client_non_rpc_endpoint_is_connection_error(live: ServerThread) -> None:
    with pytest.raises(RpcClientError) as info:  # a 404 with a JSON-RPC body
        RpcClient(live.server.url + "elsewhere", timeout=5).call("add", 1, 2)
    assert info.value.code == -32601


# --- WebSocket -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(limits: RpcLimits = LIMITS) -> AsyncIterator[RpcServer]:
    """An RpcServer on the current loop for the duration of the block."""
    server = RpcServer(METHODS, limits=limits, hub=make_hub())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ws_call(ws: aiohttp.ClientWebSocketResponse, method: str, params: Any,
                  id_: int = 1) -> dict[str, Any]:
    """One request over a WebSocket; returns the response, skipping notifications."""
    await ws.send_json({"jsonrpc": "2.0", "method": method, "params": params, "id": id_})
    while True:
        reply = await asyncio.wait_for(ws.receive_json(), 5)
        if "id" in reply:
            return reply


async def next_notification(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next subscription notification's params."""
    message = await asyncio.wait_for(ws.receive_json(), 5)
    assert message["method"] == "gannet_subscription" and "id" not in message
    return message["params"]


def test_ws_dispatches_like_http() -> None:
    async def scenario() -> None:
        async with serving() as server, aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url) as ws:
            assert (await ws_call(ws, "add", [1, 2]))["result"] == 3
            assert (await ws_call(ws, "boom", []))["error"]["code"] == -32603
            await ws.send_str("[]")
            assert (await ws.receive_json())["error"]["code"] == -32600
            await ws.send_str("{")
            assert (await ws.receive_json())["error"]["code"] == -32700

    asyncio.run(scenario())


def test_ws_subscribe_publish_unsubscribe() -> None:
    async def scenario() -> None:
        async with serving() as server, aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url) as ws:
            heads = (await ws_call(ws, "gannet_subscribe", ["newHeads"]))["result"]
            txs = (await ws_call(ws, "gannet_subscribe", ["txConfirmed", "gan1alice"]))["result"]
            assert heads.startswith("0x") and len(heads) == 34 and heads != txs
            assert await server.hub.publish("newHeads", {"height": 5}) == 1
            assert await next_notification(ws) == {"subscription": heads,
                                                   "result": {"height": 5}}
            # The match filter sees each subscription's validated criteria.
            assert await server.hub.publish("txConfirmed", {"tx": "bob"},
                                            match=lambda addr: addr == "gan1bob") == 0
            assert await server.hub.publish("txConfirmed", {"tx": "a"},
                                            match=lambda addr: addr == "gan1alice") == 1
            assert (await next_notification(ws))["subscription"] == txs
            assert (await ws_call(ws, "gannet_unsubscribe", [heads]))["result"] is True
            assert (await ws_call(ws, "gannet_unsubscribe", [heads]))["result"] is False
            assert await server.hub.publish("newHeads", {"height": 6}) == 0
            assert server.hub.count() == 1
        await asyncio.sleep(0.1)
        assert server.hub.count() == 0  # the closed connection dropped its subscriptions

    asyncio.run(scenario())


def test_ws_subscribe_errors() -> None:
    limits = RpcLimits(max_ws_subscriptions=2)

    async def scenario() -> None:
        async with serving(limits) as server, aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url) as ws:
            assert (await ws_call(ws, "gannet_subscribe", ["nope"]))["error"]["code"] == -32602
            bad = await ws_call(ws, "gannet_subscribe", ["txConfirmed", "0xdead"])
            assert bad["error"]["code"] == -32602
            arity = await ws_call(ws, "gannet_subscribe", ["txConfirmed"])
            assert arity["error"]["code"] == -32602
            extra = await ws_call(ws, "gannet_subscribe", ["newHeads", 1])
            assert extra["error"]["code"] == -32602
            for _ in range(2):
                assert "result" in await ws_call(ws, "gannet_subscribe", ["newHeads"])
            over = await ws_call(ws, "gannet_subscribe", ["newHeads"])
            assert over["error"]["code"] == -32005
            with pytest.raises(UnknownTopic):
                await server.hub.publish("nope", {})

    asyncio.run(scenario())


def test_ws_frame_over_size_limit_closes_connection() -> None:
    limits = RpcLimits(max_body_bytes=1024)

    async def scenario() -> None:
        async with serving(limits) as server, aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url) as ws:
            await ws.send_str(json.dumps({"jsonrpc": "2.0", "method": "echo",
                                          "params": ["a" * 2000], "id": 1}))
            message = await asyncio.wait_for(ws.receive(), 5)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009

    asyncio.run(scenario())


def raw_ws_frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455) for a raw-socket WebSocket client."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_stalled_ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket client with a tiny receive buffer that subscribes, then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(raw_ws_frame('{"jsonrpc":"2.0","method":"gannet_subscribe",'
                              '"params":["newHeads"],"id":1}'))
    await writer.drain()
    return reader, writer


async def wait_for_eof(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Read and discard until the peer closes; False if still open after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_slow_consumer_is_disconnected_without_blocking_publish(
        caplog: pytest.LogCaptureFixture) -> None:
    limits = RpcLimits(ws_queue_size=16)

    async def scenario() -> None:
        async with serving(limits) as server, aiohttp.ClientSession() as http, \
                http.ws_connect(server.ws_url, max_msg_size=0) as fast:
            await ws_call(fast, "gannet_subscribe", ["newHeads"])
            reader, writer = await open_stalled_ws(server.port)
            while server.hub.count("newHeads") < 2:
                await asyncio.sleep(0.01)
            payload = {"blob": "x" * 64 * 1024}
            received = 0
            slowest_publish = 0.0
            for _ in range(300):
                started = time.monotonic()
                assert await server.hub.publish("newHeads", payload) >= 1
                slowest_publish = max(slowest_publish, time.monotonic() - started)
                await next_notification(fast)
                received += 1
            assert received == 300  # the fast client got everything
            assert slowest_publish < 0.05
            assert server.hub.count("newHeads") == 1  # the stalled one was dropped
            assert await wait_for_eof(reader, 5)
            writer.close()

    asyncio.run(scenario())
    assert "client too slow: 16 messages unread" in caplog.text


def test_stop_closes_websockets_promptly() -> None:
    async def scenario() -> None:
        server = RpcServer(METHODS, limits=LIMITS, hub=make_hub())
        await server.start()
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(server.ws_url) for _ in range(5)]
            for ws in sockets:
                await ws_call(ws, "gannet_subscribe", ["newHeads"])
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 2
            for ws in sockets:
                message = await asyncio.wait_for(ws.receive(), 2)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                await ws.close()

    asyncio.run(scenario())


def test_stop_is_prompt_with_a_request_in_flight() -> None:
    async def forever() -> None:
        await asyncio.sleep(60)

    async def scenario() -> None:
        server = RpcServer({"forever": forever})
        await server.start()
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(http.post(server.url, json={
                "jsonrpc": "2.0", "method": "forever", "id": 1}))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(request, 2)

    asyncio.run(scenario())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        RpcLimits(max_batch=0)


def test_register_rejects_reserved_and_duplicate_names() -> None:
    server = RpcServer(METHODS)
    for name in ("rpc.discover", "gannet_subscribe", "add", ""):
        with pytest.raises(ValueError):
            server.register(name, add)
    server.register("add2", add)


def test_batched_tx_submissions_run_together_and_in_order_reads_after_them() -> None:
    from node.rpc.server import process_payload

    events: list[str] = []

    async def submit(tag: str) -> str:
        events.append(f"start {tag}")
        await asyncio.sleep(0)
        events.append(f"end {tag}")
        return tag

    def read() -> list[str]:
        return list(events)

    methods = {"gannet_sendRawTransaction": submit, "gannet_read": read}
    batch = [{"jsonrpc": "2.0", "id": i, "method": "gannet_sendRawTransaction",
              "params": [str(i)]} for i in range(3)]
    batch.append({"jsonrpc": "2.0", "id": "r", "method": "gannet_read"})
    batch.append({"jsonrpc": "2.0", "id": 9, "method": "gannet_sendRawTransaction",
                  "params": ["9"]})
    reply = json.loads(asyncio.run(process_payload(batch, methods, RpcLimits(), {})))
    assert [r["id"] for r in reply] == [0, 1, 2, "r", 9]
    assert events[:3] == ["start 0", "start 1", "start 2"]  # one run, started in order
    seen_by_read = next(r["result"] for r in reply if r["id"] == "r")
    assert seen_by_read == events[:6]  # the read ran after the whole run finished
    assert events[6:] == ["start 9", "end 9"]
