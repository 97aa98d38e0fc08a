"""JSON-RPC 2.0 transport of the node: server, connection guard, subscriptions, CLI client."""

from node.rpc.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    NotFound,
    ParseError,
    RpcError,
    ServerError,
    TxRejected,
)
from node.rpc.server import Method, RpcLimits, RpcServer
from node.rpc.subscriptions import SubscriptionHub

__all__ = [
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "LimitExceeded",
    "Method",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "RpcError",
    "RpcLimits",
    "RpcServer",
    "ServerError",
    "SubscriptionHub",
    "TxRejected",
]
