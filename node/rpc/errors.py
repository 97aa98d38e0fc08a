"""JSON-RPC 2.0 error objects, one class per error code.

A method registered on the RPC server raises one of these to answer with that
error object; anything else it raises becomes `InternalError` with a generic
message (the traceback goes to the log, never to the client). Codes -32768 to
-32000 are reserved by the specification: -32700 to -32600 for the five spec
errors, -32099 to -32000 for server-defined errors such as `TxRejected`.
"""

from typing import Any

MAX_MESSAGE_CHARS = 300


class RpcError(Exception):
    """An error the server answers with: `{"code": code, "message": message, "data": data}`."""

    code: int = -32603
    default_message: str = "internal error"

    def __init__(self, message: str | None = None, data: Any = None) -> None:
        text = message if message is not None else self.default_message
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(text)
        self.message = text
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """The JSON-RPC error object; `data` is present only when not None."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError):
    """-32700: the body is not valid JSON (bad syntax, bad UTF-8, out-of-range number)."""

    code = -32700
    default_message = "parse error"


class InvalidRequest(RpcError):
    """-32600: valid JSON but not a valid request (wrong shape, bad id, too big, too deep)."""

    code = -32600
    default_message = "invalid request"


class MethodNotFound(RpcError):
    """-32601: no method of that name is registered on this transport."""

    code = -32601
    default_message = "method not found"


class InvalidParams(RpcError):
    """-32602: the params do not fit the method's signature or fail its checks."""

    code = -32602
    default_message = "invalid params"


class InternalError(RpcError):
    """-32603: the server failed while handling a valid request (our bug, not the caller's)."""

    code = -32603
    default_message = "internal error"


class ServerError(RpcError):
    """-32000 to -32099: base of the server-defined errors below."""

    code = -32000
    default_message = "server error"


class TxRejected(ServerError):
    """-32000: a transaction was not accepted; `data` carries the machine-readable reason."""

    code = -32000
    default_message = "transaction rejected"


class NotFound(ServerError):
    """-32001: the requested object (block, tx, account, job) does not exist."""

    code = -32001
    default_message = "not found"


class LimitExceeded(ServerError):
    """-32005: a server limit was hit (connections, subscriptions, queue); retry later."""

    code = -32005
    default_message = "limit exceeded"
