"""Topic subscriptions pushed to WebSocket clients as JSON-RPC notifications.

The node registers topics (`newHeads`, `txConfirmed`, ...) and publishes to
them; clients subscribe with `gannet_subscribe(topic, *args)` and receive

    {"jsonrpc": "2.0", "method": "gannet_subscription",
     "params": {"subscription": "<id>", "result": <payload>}}

Publishing never waits on a client: each subscriber (a WebSocket session)
takes messages through a bounded queue, and a subscriber whose queue is full
is a slow consumer that gets disconnected rather than slowing the node down.
"""

import inspect
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.rpc.errors import InvalidParams, LimitExceeded, RpcError

log = logging.getLogger("gannet.rpc.subscriptions")

NOTIFICATION_METHOD = "gannet_subscription"

Validator = Callable[..., Any]
Match = Callable[[Any], bool]


class UnknownTopic(LookupError):
    """A publisher named a topic nobody registered (a bug in the publisher)."""


class Subscriber(Protocol):
    """A connection that takes notifications without making the publisher wait."""

    def offer(self, message: str) -> bool:
        """Queue `message`; False when the subscriber overflowed and is being closed."""
        ...


@dataclass(frozen=True, slots=True)
class Subscription:
    """One client's interest in one topic; `criteria` is what the topic validator returned."""

    id: str
    topic: str
    subscriber: Subscriber
    criteria: Any


@dataclass(frozen=True, slots=True)
class Topic:
    """A registered topic; `validator(*args)` checks subscribe args and returns the criteria."""

    name: str
    validator: Validator | None


def compute_notification(subscription_id: str, payload_json: str) -> str:
    """The notification text for one subscription, around an already-encoded payload."""
    return (
        '{"jsonrpc":"2.0","method":"' + NOTIFICATION_METHOD + '","params":{"subscription":'
        + json.dumps(subscription_id) + ',"result":' + payload_json + "}}"
    )


def validate_subscribe_args(topic: Topic, args: Sequence[Any]) -> Any:
    """Run the topic's validator on the subscribe args; bad args raise InvalidParams."""
    if topic.validator is None:
        if args:
            raise InvalidParams(f"topic {topic.name!r} takes no parameters, got {len(args)}")
        return None
    try:
        inspect.signature(topic.validator).bind(*args)
    except TypeError as exc:
        raise InvalidParams(f"topic {topic.name!r} expects parameters "
                            f"{inspect.signature(topic.validator)}: {exc}") from None
    except ValueError:
        pass  # no introspectable signature: let the call decide
    try:
        return topic.validator(*args)
    except RpcError:
        raise
    except ValueError as exc:
        raise InvalidParams(f"bad parameters for topic {topic.name!r}: {exc}") from None


class SubscriptionHub:
    """Registry of topics and live subscriptions; a long-lived service of the node.

    Subscription ids are random 128-bit hex strings ("0x" + 32 digits), so a
    client cannot guess or cancel another client's subscription.
    """

    def __init__(self) -> None:
        self._topics: dict[str, Topic] = {}
        self._by_topic: dict[str, dict[str, Subscription]] = {}
        self._by_subscriber: dict[Subscriber, dict[str, Subscription]] = {}

    @property
    def topics(self) -> list[str]:
        """Registered topic names, sorted."""
        return sorted(self._topics)

    def register_topic(self, name: str, params_validator: Validator | None = None) -> None:
        """Register a topic; `params_validator(*args)` returns the subscription's criteria.

        The validator raises InvalidParams (or ValueError) for bad arguments.
        With no validator, the topic takes no arguments and criteria is None.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic name must be a non-empty string, got {name!r}")
        if name in self._topics:
            raise ValueError(f"topic {name!r} is already registered")
        self._topics[name] = Topic(name, params_validator)
        self._by_topic[name] = {}

    def count(self, topic: str | None = None) -> int:
        """Live subscriptions, on one topic or on all."""
        if topic is not None:
            return len(self._by_topic.get(topic, {}))
        return sum(len(subs) for subs in self._by_topic.values())

    def subscribe(self, subscriber: Subscriber, topic: Any, args: Sequence[Any],
                  max_per_subscriber: int) -> str:
        """Add a subscription and return its id; InvalidParams or LimitExceeded on refusal."""
        if not isinstance(topic, str) or topic not in self._topics:
            raise InvalidParams(f"unknown topic {topic!r}; topics: {', '.join(self.topics)}")
        held = self._by_subscriber.setdefault(subscriber, {})
        if len(held) >= max_per_subscriber:
            raise LimitExceeded(f"at most {max_per_subscriber} subscriptions per connection")
        criteria = validate_subscribe_args(self._topics[topic], args)
        sub = Subscription("0x" + secrets.token_hex(16), topic, subscriber, criteria)
        held[sub.id] = sub
        self._by_topic[topic][sub.id] = sub
        return sub.id

    def unsubscribe(self, subscriber: Subscriber, subscription_id: Any) -> bool:
        """Cancel one of this subscriber's subscriptions; False if it holds no such id."""
        held = self._by_subscriber.get(subscriber, {})
        sub = held.pop(subscription_id, None) if isinstance(subscription_id, str) else None
        if sub is None:
            return False
        self._by_topic[sub.topic].pop(sub.id, None)
        return True

    def drop(self, subscriber: Subscriber) -> int:
        """Cancel every subscription of a subscriber that went away; returns how many."""
        held = self._by_subscriber.pop(subscriber, {})
        for sub in held.values():
            self._by_topic[sub.topic].pop(sub.id, None)
        return len(held)

    async def publish(self, topic: str, payload: Any, match: Match | None = None) -> int:
        """Send `payload` to every subscriber of `topic` whose criteria pass `match`.

        Never waits on a subscriber: a full queue disconnects that subscriber.
        Returns how many notifications were queued. Raises UnknownTopic for an
        unregistered topic and TypeError/ValueError if `payload` is not JSON.
        """
        if topic not in self._by_topic:
            raise UnknownTopic(f"no topic {topic!r} is registered")
        payload_json = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        delivered = 0
        for sub in list(self._by_topic[topic].values()):
            if not is_match(match, sub):
                continue
            if sub.subscriber.offer(compute_notification(sub.id, payload_json)):
                delivered += 1
            else:
                self.drop(sub.subscriber)
        return delivered


def is_match(match: Match | None, sub: Subscription) -> bool:
    """Whether a subscription wants this event; a failing `match` is logged and skipped."""
    if match is None:
        return True
    try:
        return bool(match(sub.criteria))
    except Exception:
        log.exception("subscription filter failed on topic %s", sub.topic)
        return False
