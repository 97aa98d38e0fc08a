"""JSON-RPC 2.0 server over HTTP POST `/` and WebSocket `/ws`, knowing nothing of the chain.

The node hands it a mapping of method name to callable. The rules:

* A request is an object with `"jsonrpc": "2.0"`, a string `method`, optional
  `params` (array: positional, object: by name) and an optional `id` (string,
  integer or null; a request without `id` is a notification and gets no reply).
* Params are bound to the method's signature before the call: a mismatch is
  -32602 naming the expected signature, so a TypeError raised inside a method
  is never mistaken for the caller's fault.
* A method raises an `RpcError` subclass to answer with that error; anything
  else is logged with its traceback and answered with a generic -32603.
  Transport failures are JSON-RPC errors too: the server never sends a 500.
* Bodies are capped (`max_body_bytes`), batches are capped (`max_batch`), JSON
  nesting is measured without recursion before parsing (`max_json_depth`), and
  numbers Python cannot represent (over 4300 digits, 1e999, NaN) are -32700.
* Connections are capped and read deadlines enforced by `ConnectionGuard`.
"""

import asyncio
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from itertools import accumulate
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from node.rpc.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    ParseError,
    RpcError,
)
from node.rpc.guard import BodyTimeout, BodyTooLarge, ConnectionGuard, GuardLimits
from node.rpc.subscriptions import SubscriptionHub

log = logging.getLogger("gannet.rpc")

Method = Callable[..., Awaitable[Any] | Any]

JSON_CONTENT_TYPE = "application/json"
WS_PATH = "/ws"
WS_ONLY_METHODS = ("gannet_subscribe", "gannet_unsubscribe")
WS_CLOSE_TIMEOUT_S = 0.5
HTTP_SHUTDOWN_TIMEOUT_S = 0.5

_ESCAPE = re.compile(r"\\[\s\S]")
_STRING = re.compile(r'"[^"]*(?:"|\Z)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean",
                    int: "integer", float: "number", type(None): "null"}


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """Bounds on what one client can make the server hold or do."""

    max_body_bytes: int = 1024 * 1024
    max_batch: int = 100
    max_connections: int = 256
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    keepalive_timeout_s: float = 15.0
    max_json_depth: int = 32
    max_ws_subscriptions: int = 64
    ws_queue_size: int = 1000

    def __post_init__(self) -> None:
        """Every limit must be positive."""
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"RpcLimits.{name} must be a positive number, got {value!r}")

    def guard_limits(self) -> GuardLimits:
        """The connection guard's share of these limits."""
        return GuardLimits(
            max_connections=self.max_connections,
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            keepalive_timeout_s=self.keepalive_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed the structural checks of the specification."""

    method: str
    params: list[Any] | dict[str, Any]
    id: str | int | None
    is_notification: bool


# --- parsing -----------------------------------------------------------------


def compute_json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in `text`, counted without recursion.

    Escapes are dropped first, then string literals (an unterminated one runs
    to the end), so brackets inside strings do not count. Linear time.
    """
    skeleton = _STRING.sub("", _ESCAPE.sub("", text))
    brackets = _NOT_BRACKET.sub("", skeleton)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _parse_finite_float(text: str) -> float:
    """A JSON number must be a finite double."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def parse_json(raw: bytes | str, max_depth: int) -> Any:
    """Decode a request body; ParseError for bad JSON, InvalidRequest when too deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ParseError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    opens = text.count("[") + text.count("{")
    if opens > max_depth and compute_json_depth(text) > max_depth:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          parse_float=_parse_finite_float)
    except RecursionError:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, int digit limit, our hooks
        raise ParseError(f"invalid JSON: {exc}") from None


# --- request validation --------------------------------------------------------


def json_type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def is_valid_id(value: Any) -> bool:
    """A request id is a string, an integer (not a boolean) or null."""
    return value is None or isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool))


def get_reply_id(item: Any) -> str | int | None:
    """The id to answer an invalid request with: its own if usable, else null."""
    if isinstance(item, dict) and is_valid_id(item.get("id")):
        return item.get("id")
    return None


def validate_request(item: Any) -> Request:
    """Check one decoded request against the specification; raises InvalidRequest."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"a request must be a JSON object, got {json_type_name(item)}")
    if "id" in item and not is_valid_id(item["id"]):
        raise InvalidRequest(
            f'"id" must be a string, an integer or null, got {json_type_name(item["id"])}')
    if item.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be exactly "2.0"')
    method = item.get("method")
    if not isinstance(method, str):
        raise InvalidRequest(f'"method" must be a string, got {json_type_name(method)}')
    params = item.get("params", [])
    if not isinstance(params, list | dict):
        raise InvalidRequest(
            f'"params" must be an array or an object, got {json_type_name(params)}')
    return Request(method, params, item.get("id"), "id" not in item)


# --- invocation -----------------------------------------------------------------


def get_signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The method's signature, or None for callables Python cannot introspect."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def validate_params(name: str, fn: Callable[..., Any], params: list[Any] | dict[str, Any]
                    ) -> None:
    """Params must bind to the method's signature; raises InvalidParams saying what fits."""
    signature = get_signature(fn)
    if signature is None:
        return
    try:
        if isinstance(params, list):
            signature.bind(*params)
        else:
            signature.bind(**params)
    except TypeError as exc:
        raise InvalidParams(f"{name} expects params {signature}: {exc}") from None


def get_method(name: str, methods: Mapping[str, Method], extra: Mapping[str, Method]) -> Method:
    """Look a method up, connection-specific ones first; raises MethodNotFound."""
    fn = extra.get(name) or methods.get(name)
    if fn is not None:
        return fn
    if name in WS_ONLY_METHODS:
        raise MethodNotFound(f"{name} is only available over WebSocket at {WS_PATH}")
    raise MethodNotFound(f"method {name[:64]!r} not found")


async def invoke(request: Request, methods: Mapping[str, Method],
                 extra: Mapping[str, Method]) -> Any:
    """Call the method with the request's params and await its result if it is awaitable."""
    fn = get_method(request.method, methods, extra)
    validate_params(request.method, fn, request.params)
    params = request.params
    result = fn(*params) if isinstance(params, list) else fn(**params)
    if inspect.isawaitable(result):
        result = await result
    return result


def make_error(id_: str | int | None, error: RpcError) -> dict[str, Any]:
    """A JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "id": id_, "error": error.to_dict()}


async def process_request(item: Any, methods: Mapping[str, Method],
                          extra: Mapping[str, Method]) -> dict[str, Any] | None:
    """Answer one request: a response object, or None for a notification."""
    try:
        request = validate_request(item)
    except RpcError as exc:
        return make_error(get_reply_id(item), exc)
    try:
        result = await invoke(request, methods, extra)
        response = {"jsonrpc": "2.0", "id": request.id, "result": result}
    except RpcError as exc:
        response = make_error(request.id, exc)
    except Exception:
        log.exception("rpc method %s failed", request.method)
        response = make_error(request.id, InternalError())
    return None if request.is_notification else response


def encode_response(response: dict[str, Any]) -> str:
    """Serialize a response; a result JSON cannot carry becomes -32603 for that id."""
    try:
        return json.dumps(response, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("rpc response for id %r is not JSON-encodable: %s", response.get("id"), exc)
        error = InternalError("result could not be encoded as JSON")
        return json.dumps(make_error(response.get("id"), error), separators=(",", ":"))


# Methods whose batch entries may run together: each hands its work to the node
# before it first suspends, so running them together keeps their order.
CONCURRENT_METHODS = frozenset({"gannet_sendRawTransaction"})


async def process_payload(payload: Any, methods: Mapping[str, Method], limits: RpcLimits,
                          extra: Mapping[str, Method]) -> str | None:
    """Answer a decoded body (one request or a batch); None when nothing is to be sent.

    Entries run in order, each seeing what the earlier ones did, except that a run
    of consecutive `CONCURRENT_METHODS` entries (tx submissions) runs together:
    each reaches admission before the next starts, so one sender's txs are still
    admitted in nonce order, but their signatures are checked in one batch.
    """
    if not isinstance(payload, list):
        response = await process_request(payload, methods, extra)
        return None if response is None else encode_response(response)
    if not payload:
        return encode_response(make_error(None, InvalidRequest("empty batch")))
    if len(payload) > limits.max_batch:
        error = InvalidRequest(
            f"batch of {len(payload)} requests exceeds the limit of {limits.max_batch}")
        return encode_response(make_error(None, error))
    responses: list[dict[str, Any] | None] = []
    for run in _runs(payload):
        responses.extend(await asyncio.gather(*(process_request(item, methods, extra)
                                                for item in run)))
    parts = [encode_response(response) for response in responses if response is not None]
    return "[" + ",".join(parts) + "]" if parts else None


def _runs(payload: list[Any]) -> list[list[Any]]:
    """The batch split into runs: consecutive concurrent-method entries, else singletons."""
    runs: list[list[Any]] = []
    for item in payload:
        if _is_concurrent(item) and runs and _is_concurrent(runs[-1][0]):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _is_concurrent(item: Any) -> bool:
    """A batch entry naming a concurrent method (any other `method`, even unhashable, is not)."""
    method = item.get("method") if isinstance(item, dict) else None
    return isinstance(method, str) and method in CONCURRENT_METHODS


# --- HTTP -------------------------------------------------------------------


def make_http_error(status: int, error: RpcError,
                    headers: Mapping[str, str] | None = None) -> web.Response:
    """An HTTP response whose body is a JSON-RPC error object with id null."""
    body = encode_response(make_error(None, error)).encode()
    return web.Response(status=status, body=body, content_type=JSON_CONTENT_TYPE,
                        headers=headers)


def compute_reject_response() -> bytes:
    """The raw 503 an over-the-cap connection receives before it is closed."""
    body = encode_response(make_error(None, LimitExceeded("too many connections"))).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _WsSession:
    """One WebSocket client: requests in order, replies and notifications through one queue.

    The queue is bounded: a client that stops reading fills it, and is then
    closed with a reason instead of making publishers wait.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest, queue_size: int):
        self.ws = ws
        self._request = request
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.close_reason: str | None = None

    def offer(self, message: str) -> bool:
        """Queue a message without waiting; a full queue closes this slow client."""
        if self.close_reason is not None:
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close(WSCloseCode.POLICY_VIOLATION,
                       f"client too slow: {self._queue.maxsize} messages unread")
            return False
        return True

    async def run(self, answer: Callable[[str | bytes], Awaitable[str | None]]) -> None:
        """Read frames until the client leaves or the session is closed."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        try:
            async for message in self.ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break  # ERROR: aiohttp has already closed (e.g. frame over the size cap)
                reply = await answer(message.data)
                if reply is not None and not self.offer(reply):
                    break
        finally:
            self.close(WSCloseCode.OK, "")
        await self.wait_closed()

    async def _write_forever(self) -> None:
        """Send queued messages in order; a write failure ends the session."""
        try:
            while True:
                await self.ws.send_str(await self._queue.get())
        except Exception as exc:  # the peer is gone or the socket broke: end the session
            self.close(WSCloseCode.ABNORMAL_CLOSURE, f"write failed: {exc!r}"[:100])

    def close(self, code: int, reason: str) -> None:
        """Start closing (once): stop the writer, send a close frame, abort if it stalls."""
        if self._closer is not None:
            return
        self.close_reason = reason or "closed"
        level = logging.WARNING if code == WSCloseCode.POLICY_VIOLATION else logging.DEBUG
        log.log(level, "closing websocket: %s", self.close_reason)
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        """Close politely within WS_CLOSE_TIMEOUT_S, then abort the transport."""
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        try:
            async with asyncio.timeout(WS_CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self._request.transport
            if transport is not None:
                transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the closing started by `close` has finished."""
        if self._closer is not None:
            await asyncio.shield(self._closer)


class RpcServer:
    """The node's JSON-RPC service: HTTP POST at `/`, WebSocket at `/ws`.

    `methods` may be extended with `register` before or after `start`. The
    WebSocket transport adds `gannet_subscribe(topic, *args) -> id` and
    `gannet_unsubscribe(id) -> bool`, backed by `hub` (a fresh
    `SubscriptionHub` unless one is given). Sync methods run on the event loop
    and must be quick; put blocking work in a thread inside the method.
    """

    def __init__(self, methods: Mapping[str, Method], host: str = "127.0.0.1", port: int = 0,
                 limits: RpcLimits | None = None, hub: SubscriptionHub | None = None) -> None:
        self.host = host
        self.limits = limits if limits is not None else RpcLimits()
        self.hub = hub if hub is not None else SubscriptionHub()
        self._methods: dict[str, Method] = {}
        for name, fn in methods.items():
            self.register(name, fn)
        self._requested_port = port
        self._port: int | None = None
        self._guard = ConnectionGuard(self.limits.guard_limits(), compute_reject_response())
        self._web_server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._sessions: set[_WsSession] = set()

    @property
    def port(self) -> int:
        """The port being listened on (known once started)."""
        if self._port is None:
            raise RuntimeError("RpcServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """The HTTP endpoint."""
        return f"http://{self._netloc()}/"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint."""
        return f"ws://{self._netloc()}{WS_PATH}"

    def _netloc(self) -> str:
        """host:port for URLs, with IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def guard(self) -> ConnectionGuard:
        """The connection guard (for metrics: open, refused and expired connections)."""
        return self._guard

    def register(self, name: str, fn: Method) -> None:
        """Add a method; names must be new, non-empty, not `rpc.*` and not WebSocket built-ins."""
        if not isinstance(name, str) or not name or name.startswith("rpc."):
            raise ValueError(f"invalid rpc method name {name!r}")
        if name in WS_ONLY_METHODS or name in self._methods:
            raise ValueError(f"rpc method {name!r} is already defined")
        if not callable(fn):
            raise TypeError(f"rpc method {name!r} is not callable: {fn!r}")
        self._methods[name] = fn

    async def handle_raw(self, raw: bytes | str, extra: Mapping[str, Method] | None = None
                         ) -> str | None:
        """Answer a raw body as the transports do; None when no reply is due."""
        try:
            payload = parse_json(raw, self.limits.max_json_depth)
        except RpcError as exc:
            return encode_response(make_error(None, exc))
        return await process_payload(payload, self._methods, self.limits, extra or {})

    async def start(self) -> None:
        """Listen; returns once the socket is bound (see `port`)."""
        if self._listener is not None:
            raise RuntimeError("RpcServer is already started")
        loop = asyncio.get_running_loop()
        self._web_server = web.Server(
            self._guard.wrap(self._on_http),
            keepalive_timeout=self.limits.keepalive_timeout_s,
            access_log=None,
        )
        factory = self._guard.protocol_factory(self._web_server)
        self._listener = await loop.create_server(factory, self.host, self._requested_port)
        self._port = self._listener.sockets[0].getsockname()[1]
        self._guard.start()
        log.info("rpc listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and close every connection, WebSockets included, within ~1 s."""
        if self._listener is None:
            return
        self._listener.close()
        for session in list(self._sessions):
            session.close(WSCloseCode.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(s.wait_closed() for s in list(self._sessions)))
        assert self._web_server is not None
        self._web_server.pre_shutdown()
        await self._web_server.shutdown(HTTP_SHUTDOWN_TIMEOUT_S)
        await self._guard.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HTTP_SHUTDOWN_TIMEOUT_S):
                await self._listener.wait_closed()
        self._listener = None
        self._web_server = None

    async def _on_http(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route a request; every outcome is a JSON-RPC body, never a 500."""
        try:
            if request.path == WS_PATH:
                return await self._on_websocket(request)
            if request.path != "/":
                return make_http_error(404, MethodNotFound(
                    f"no endpoint at {request.path[:64]}; POST to / or open {WS_PATH}"))
            if request.method != "POST":
                return make_http_error(405, InvalidRequest(
                    f"HTTP {request.method[:16]} is not allowed; POST a JSON-RPC request"),
                    headers={"Allow": "POST"})
            return await self._on_post(request)
        except ConnectionError:
            return make_http_error(400, InvalidRequest("connection lost"))
        except Exception:
            log.exception("rpc transport failed on %s %s", request.method, request.path[:64])
            return make_http_error(200, InternalError())

    async def _on_post(self, request: web.BaseRequest) -> web.Response:
        """Read the body under the guard's limits and answer it (204 when nothing is due)."""
        try:
            body = await self._guard.read_body(request, self.limits.max_body_bytes)
        except BodyTooLarge as exc:
            return make_http_error(413, InvalidRequest(str(exc)))
        except BodyTimeout as exc:
            return make_http_error(408, InvalidRequest(str(exc)))
        reply = await self.handle_raw(body)
        if reply is None:
            return web.Response(status=204, content_type=JSON_CONTENT_TYPE)
        return web.Response(body=reply.encode(), content_type=JSON_CONTENT_TYPE)

    async def _on_websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upgrade and serve one WebSocket session until it ends."""
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_body_bytes, compress=False,
                                   heartbeat=self.limits.keepalive_timeout_s,
                                   timeout=WS_CLOSE_TIMEOUT_S)
        if not ws.can_prepare(request).ok:
            return make_http_error(400, InvalidRequest(f"{WS_PATH} takes WebSocket upgrades"))
        await ws.prepare(request)
        session = _WsSession(ws, request, self.limits.ws_queue_size)
        extra = self._ws_methods(session)
        self._sessions.add(session)
        try:
            await session.run(lambda raw: self.handle_raw(raw, extra))
        finally:
            self._sessions.discard(session)
            self.hub.drop(session)
        return ws

    def _ws_methods(self, session: _WsSession) -> dict[str, Method]:
        """The subscription built-ins, bound to one WebSocket session."""

        def gannet_subscribe(topic: str, *args: Any) -> str:
            return self.hub.subscribe(session, topic, args, self.limits.max_ws_subscriptions)

        def gannet_unsubscribe(subscription: str) -> bool:
            return self.hub.unsubscribe(session, subscription)

        return {"gannet_subscribe": gannet_subscribe, "gannet_unsubscribe": gannet_unsubscribe}
