"""A small synchronous JSON-RPC 2.0 client for the `gannet` CLI (stdlib only)."""

import http.client
import itertools
import json
import urllib.error
import urllib.request
from typing import Any


class RpcClientError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"rpc error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class RpcConnectionError(Exception):
    """The node could not be reached, or did not answer with JSON-RPC."""


class RpcClient:
    """Calls methods on one node: `RpcClient(url).call("gannet_status")`."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        """Call `method` with positional params and return its result.

        Raises RpcClientError for an error response and RpcConnectionError when
        the node is unreachable, times out or answers with something else.
        """
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": list(params)}).encode()
        response = self._decode(self._post(body))
        return self._unwrap(response, request_id)

    def _post(self, body: bytes) -> bytes:
        """POST a body and return the reply body, whatever the HTTP status."""
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx may still carry a JSON-RPC error
            with exc:
                return exc.read()
        except urllib.error.URLError as exc:
            raise RpcConnectionError(f"cannot reach node at {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise RpcConnectionError(
                f"node at {self.url} did not answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RpcConnectionError(f"cannot reach node at {self.url}: {exc}") from None

    def _decode(self, raw: bytes) -> Any:
        """The reply as JSON; anything else means this is not a JSON-RPC endpoint."""
        try:
            return json.loads(raw)
        except ValueError:
            preview = raw[:80].decode("utf-8", "replace")
            raise RpcConnectionError(
                f"node at {self.url} sent a non-JSON reply: {preview!r}") from None

    def _unwrap(self, response: Any, request_id: int) -> Any:
        """The result of a well-formed response; raises RpcClientError for an error one."""
        if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
            raise RpcConnectionError(f"node at {self.url} sent a non-JSON-RPC reply")
        error = response.get("error")
        if isinstance(error, dict):
            raise RpcClientError(_as_int(error.get("code")), str(error.get("message", "")),
                                 error.get("data"))
        if response.get("id") != request_id or "result" not in response:
            raise RpcConnectionError(
                f"node at {self.url} answered id {response.get('id')!r}, expected {request_id}")
        return response["result"]


def _as_int(value: Any) -> int:
    """An error code as an int; a malformed one reads as -32603 (internal error)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -32603
