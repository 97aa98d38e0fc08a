"""The node's real JSON-RPC server under abuse, and evidence submission over RPC.

A small chain (four validators whose keys the test holds, `HEAD` blocks, two
of them carrying evidence: against V4 early, against V3 late) is built into a store with the real
block producer; a real `Node` opens it and its own server (`node.api.build_rpc`
with the limits a default node config sets: the node's method table, the
connection guard) listens on 127.0.0.1.

- Campaign: hypothesis-generated HTTP bodies (garbage bytes, truncated and
  deeply nested JSON, huge numbers, wrong envelope types, unknown methods,
  every real method with random params, batches of 0 / 1..11 / 100 / 101 /
  1000 entries, notifications). Every answer is HTTP 200 (204 when only
  notifications were sent) with valid JSON-RPC 2.0 responses carrying the
  code the input calls for; no HTTP 500 and no -32603 (a method that crashed
  on its input). `ABUSE_BODIES` bodies in CI (over 10^4 JSON-RPC requests); the slow test
  sends `SLOW_ABUSE_BODIES`.
  The figures (bodies, JSON-RPC requests, codes) are printed (`-s`).
- `gannet_submitEvidence`: valid evidence is pooled (then reported as
  pending); invalid evidence is refused with -32002 and the rule it breaks:
  wrong chain, not a validator, the same vote twice, different heights, bad
  signature, too old, already committed, not canonical, a future height;
  bytes that are not evidence are -32602.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key, encode_address
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    Vote,
    block_hash,
)
from chain.signing import sign_vote, vote_signing_bytes
from chain.state import State
from chain.store import Head
from consensus.commit import EMPTY_COMMIT
from consensus.context import ChainRules
from consensus.params import NetworkParams
from consensus.producer import build_block
from consensus.transition import signers_of
from genesis.document import Genesis, add_account, add_validator, new_genesis
from node.api import NodeApi, build_rpc
from node.config import HomePaths, NodeConfig, RpcConfig
from node.rpc.server import RpcServer
from node.service import Node, open_store, rpc_limits

CHAIN_ID = "gannet-abuse-test"
GENESIS_TIME_MS = 1_700_000_000_000
GPU = 10**9
STAKE = 2000 * GPU
MAX_AGE = 4  # params.staking.evidence_max_age_blocks
HEAD = 8  # committed blocks
OFFENCE_HEIGHT = 6  # V3's offence, committed in block OFFENCE_HEIGHT + 1
OLD_OFFENCE_HEIGHT = 2  # V4's offence, committed in block 3: too old by now
KEYS = [SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3, 4)]
V1, V2, V3, V4 = KEYS
STRANGER = SigningKey.from_seed(b"\x09" * 32)
CONFIG = NodeConfig(rpc=RpcConfig(port=0))
LIMITS = rpc_limits(CONFIG)
ABUSE_BODIES = 1_500  # HTTP bodies in CI (~15,000 JSON-RPC requests with the batches)
SLOW_ABUSE_BODIES = 10_000  # the slow test's (~100,000 JSON-RPC requests)
MIN_REQUESTS = 10_000
SPEC_CODES = {-32700, -32600, -32601, -32602}
SERVER_CODES = range(-32099, -32000 + 1)
RESULT = "result"


def address(key: SigningKey) -> bytes:
    return address_from_public_key(key.public_key)


# --- the chain ---------------------------------------------------------------------------


def make_genesis() -> Genesis:
    params = NetworkParams()
    params = dataclasses.replace(params, staking=dataclasses.replace(
        params.staking, evidence_max_age_blocks=MAX_AGE))
    genesis = new_genesis(CHAIN_ID, GENESIS_TIME_MS, params)
    for i, key in enumerate(KEYS):
        operator = sha256(b"operator" + bytes([i]))[:20]
        genesis = add_account(genesis, operator, 10 * GPU)
        genesis = add_validator(genesis, key.public_key, STAKE, operator, f"v{i + 1}")
    return genesis


def conflicting(key: SigningKey, height: int, round_: int = 0, vote_type: int = VOTE_PREVOTE,
                chain_id: str = CHAIN_ID, hashes: tuple[bytes, bytes] | None = None
                ) -> DuplicateVoteEvidence:
    """Evidence of `key` signing two votes for different blocks, in canonical order."""
    a, b = hashes if hashes is not None else sorted(
        (sha256(b"a" + height.to_bytes(8, "big")), sha256(b"b" + height.to_bytes(8, "big"))))
    votes = [sign_vote(key, chain_id, Vote(vote_type=vote_type, height=height, round=round_,
                                           block_hash=h, validator=address(key)))
             for h in (a, b)]
    return DuplicateVoteEvidence(vote_a=votes[0], vote_b=votes[1])


def build_chain(paths: HomePaths, genesis: Genesis) -> None:
    """`HEAD` blocks, each finalised by every member of its set; block OFFENCE_HEIGHT + 1
    carries evidence of V3's offence at OFFENCE_HEIGHT, block OLD_OFFENCE_HEIGHT + 1 of
    V4's at OLD_OFFENCE_HEIGHT."""
    store = open_store(paths, genesis, 8 << 20)
    try:
        rules = ChainRules(CHAIN_ID, genesis.params, genesis.initial_height)
        head, last_commit = store.head(), EMPTY_COMMIT
        for height in range(1, HEAD + 1):
            state = State(store.get_state)
            evidence = {OFFENCE_HEIGHT + 1: (conflicting(V3, OFFENCE_HEIGHT),),
                        OLD_OFFENCE_HEIGHT + 1: (conflicting(V4, OLD_OFFENCE_HEIGHT),),
                        }.get(height, ())
            proposer = state.get_validator_set().validators[0].address
            built = build_block(state, head, rules, proposer, head.time_ms + 1000,
                                last_commit, [], evidence=evidence)
            assert not built.rejected_evidence, built.rejected_evidence
            bh = block_hash(built.block)
            commit = sign_commit(State(store.get_state), height, bh)
            result = built.result
            head = Head(height=height, block_hash=bh, time_ms=built.block.header.time_ms,
                        app_hash=result.app_hash, results_hash=result.results_hash)
            store.commit_block(built.block, commit, [], result.writes, head)
            last_commit = commit
    finally:
        store.close()


def sign_commit(state: State, height: int, bh: bytes) -> Commit:
    """Precommits for `bh` by every member of the set that signs `height`."""
    keys = {address(k): k for k in KEYS}
    sigs = []
    for member in signers_of(state, height).validators:
        vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=0, block_hash=bh,
                    validator=member.address)
        sigs.append(CommitSig(validator=member.address,
                              signature=keys[member.address].sign(
                                  vote_signing_bytes(CHAIN_ID, vote))))
    return Commit(height=height, round=0, block_hash=bh, signatures=tuple(sigs))


@dataclass
class Served:
    """The node and its own RPC server, listening on a loop thread."""

    node: Node
    server: RpcServer
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port

    def on_loop(self, fn: Any) -> Any:
        """Run `fn()` on the server's loop thread (the node's objects live there)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    paths = HomePaths(tmp_path_factory.mktemp("rpc-abuse"))
    genesis = make_genesis()
    build_chain(paths, genesis)
    node = Node(paths, CONFIG, genesis, None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="rpc-abuse", daemon=True)
    thread.start()
    server = build_rpc(node, LIMITS)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield Served(node, server, loop)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        node.close()


# --- HTTP ------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP connection to the server, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        """POST `body` to `/`: (HTTP status, body)."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", "/", body, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def call(port: int, method: str, *params: Any) -> dict[str, Any]:
    """One request over a fresh connection; the decoded response object."""
    client = Client(port)
    try:
        status, data = client.post(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode())
    finally:
        client.close()
    assert status == 200, (status, data)
    return json.loads(data)


# --- gannet_submitEvidence -------------------------------------------------------------------


def submit(served: Served, evidence: DuplicateVoteEvidence | str) -> dict[str, Any]:
    raw = evidence if isinstance(evidence, str) else "0x" + encode(evidence).hex()
    return call(served.port, "gannet_submitEvidence", raw)


def rejected(served: Served, evidence: DuplicateVoteEvidence, words: str) -> str:
    """Submit; assert the -32002 error names the rule (`words`) and nothing was pooled."""
    pending = len(served.node.evidence)
    reply = submit(served, evidence)
    assert "error" in reply, reply
    error = reply["error"]
    assert error["code"] == -32002, error
    assert error["message"].startswith("invalid evidence: "), error
    assert words in error["message"], error
    assert words in error["data"]["reason"] or words.startswith(" for chain"), error
    assert len(served.node.evidence) == pending
    return error["message"]


def test_valid_evidence_is_pooled_then_reported_pending(served: Served) -> None:
    evidence = conflicting(V1, HEAD - 1, round_=1, vote_type=VOTE_PRECOMMIT)
    first = submit(served, evidence)
    assert first["result"]["status"] == "added", first
    assert first["result"]["hash"] == "0x" + sha256(encode(evidence)).hex()
    proposable = served.on_loop(lambda: served.node.evidence.pending(10, HEAD + 1))
    assert evidence in proposable
    again = submit(served, evidence)
    assert again["result"] == {**first["result"], "status": "pending"}
    pending = call(served.port, "gannet_getEvidence")["result"]["pending"]
    assert pending == len(served.node.evidence) >= 1


def test_evidence_of_the_height_in_progress_is_pooled(served: Served) -> None:
    reply = submit(served, conflicting(V2, HEAD + 1, round_=3))
    assert reply["result"]["status"] == "added", reply


def test_evidence_signed_for_another_chain_is_rejected(served: Served) -> None:
    message = rejected(served, conflicting(V1, HEAD - 1, chain_id="another-chain"),
                       "vote_a signature does not verify")
    assert f"for chain {CHAIN_ID}" in message and "another chain" in message


def test_evidence_against_a_non_validator_is_rejected(served: Served) -> None:
    rejected(served, conflicting(STRANGER, HEAD - 1),
             f"{address(STRANGER).hex()} is not a validator at height {HEAD - 1}")


def test_the_same_vote_twice_is_rejected(served: Served) -> None:
    h = sha256(b"one block")
    rejected(served, conflicting(V1, HEAD - 1, hashes=(h, h)),
             "votes do not conflict: same block hash")


def test_votes_of_different_heights_are_rejected(served: Served) -> None:
    a = conflicting(V1, HEAD - 1)
    b = conflicting(V1, HEAD - 2)
    rejected(served, DuplicateVoteEvidence(vote_a=a.vote_a, vote_b=b.vote_b),
             f"votes differ in height: {HEAD - 1} vs {HEAD - 2}")


def test_votes_of_different_validators_are_rejected(served: Served) -> None:
    a = conflicting(V1, HEAD - 1)
    b = conflicting(V2, HEAD - 1)
    rejected(served, DuplicateVoteEvidence(vote_a=a.vote_a, vote_b=b.vote_b),
             "votes differ in validator")


def test_a_bad_signature_is_rejected(served: Served) -> None:
    evidence = conflicting(V2, HEAD - 1)
    signature = bytearray(evidence.vote_b.signature)
    signature[7] ^= 1
    bad = dataclasses.replace(evidence, vote_b=dataclasses.replace(
        evidence.vote_b, signature=bytes(signature)))
    rejected(served, bad, "vote_b signature does not verify")


def test_another_validators_signature_is_rejected(served: Served) -> None:
    """V2's vote carrying V1's signature over the same bytes: not V2's signature."""
    evidence = conflicting(V2, HEAD - 1)
    forged = V1.sign(vote_signing_bytes(CHAIN_ID, evidence.vote_a.vote))
    bad = dataclasses.replace(evidence, vote_a=dataclasses.replace(
        evidence.vote_a, signature=forged))
    rejected(served, bad, "vote_a signature does not verify")


def test_too_old_evidence_is_rejected(served: Served) -> None:
    old = HEAD + 1 - MAX_AGE - 1
    rejected(served, conflicting(V1, old),
             f"evidence is too old: height {old}, block height {HEAD + 1}, max age {MAX_AGE}")


def test_evidence_at_the_age_limit_is_accepted(served: Served) -> None:
    reply = submit(served, conflicting(V2, HEAD + 1 - MAX_AGE))
    assert reply["result"]["status"] == "added", reply


def test_already_committed_evidence_is_rejected(served: Served) -> None:
    """The very evidence block OFFENCE_HEIGHT + 1 carries, and another proof of that offence."""
    words = f"offence already committed at height {OFFENCE_HEIGHT + 1}"
    rejected(served, conflicting(V3, OFFENCE_HEIGHT), words)
    other = conflicting(V3, OFFENCE_HEIGHT, hashes=tuple(sorted((sha256(b"x"), sha256(b"y")))))
    rejected(served, other, words)


def test_committed_evidence_is_named_so_even_once_too_old(served: Served) -> None:
    assert HEAD + 1 - OLD_OFFENCE_HEIGHT > MAX_AGE
    rejected(served, conflicting(V4, OLD_OFFENCE_HEIGHT),
             f"offence already committed at height {OLD_OFFENCE_HEIGHT + 1}")


def test_evidence_not_in_canonical_order_is_rejected(served: Served) -> None:
    evidence = conflicting(V1, HEAD - 1)
    swapped = DuplicateVoteEvidence(vote_a=evidence.vote_b, vote_b=evidence.vote_a)
    rejected(served, swapped, "votes not in canonical order")


def test_future_evidence_is_rejected(served: Served) -> None:
    rejected(served, conflicting(V1, HEAD + 2),
             f"evidence height {HEAD + 2} is ahead of the chain: the head is {HEAD}")


def test_an_unknown_vote_type_is_rejected(served: Served) -> None:
    rejected(served, conflicting(V1, HEAD - 1, vote_type=7), "unknown vote type 7")


@pytest.mark.parametrize("raw", ["0x", "0x00", "zz", "0x" + "ab" * 100, 42, None,
                                 "0x" + "00" * 5000])
def test_bytes_that_are_not_evidence_are_invalid_params(served: Served, raw: Any) -> None:
    reply = call(served.port, "gannet_submitEvidence", raw)
    assert reply["error"]["code"] == -32602, reply


def test_a_full_pool_is_a_limit_not_a_rejection(served: Served) -> None:
    pool = served.node.evidence
    evidence = conflicting(V1, HEAD - 2, round_=9)
    before = pool.max_pending
    pool.max_pending = len(pool)
    try:
        reply = submit(served, evidence)
    finally:
        pool.max_pending = before
    assert reply["error"]["code"] == -32005 and "pool is full" in reply["error"]["message"]
    assert submit(served, evidence)["result"]["status"] == "added"


# --- the campaign --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What one JSON-RPC request must be answered with: RESULT and/or error codes."""

    kind: str
    allowed: frozenset[Any]
    id: Any = None
    notification: bool = False
    method: str = ""


@dataclass(frozen=True)
class Body:
    """One HTTP body and what its answer must be."""

    kind: str
    raw: bytes
    single: Expect | None = None  # one response (a single request, or a refused batch)
    batch: tuple[Expect, ...] | None = None  # one response per non-notification entry
    entries: int = 1  # JSON-RPC requests in the body (a batch's length)
    loose: bool = False  # random bytes that happen to be JSON: any well-formed answer


@dataclass
class Stats:
    """The campaign's figures."""

    bodies: int = 0
    requests: int = 0
    http: Counter[int] = field(default_factory=Counter)
    codes: Counter[Any] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(
            self.codes.items(), key=lambda item: str(item[0])))
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.kinds.items()))
        return (f"rpc abuse: {self.bodies} HTTP bodies, {self.requests} JSON-RPC requests in "
                f"{self.seconds:.1f} s; HTTP statuses {dict(sorted(self.http.items()))}; "
                f"codes {{{codes}}}; kinds {{{kinds}}}")


LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(-2**80, 2**80)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
          | st.sampled_from(["latest", "0x", "0x00", "0x" + "11" * 32, "0x" + "00" * 20,
                             encode_address(address(V1)), "gnt1", "", "1", "-1", "0.5",
                             "x" * 5000, "0x" + "ab" * 20_000, 2**64, 2**64 - 1, -1, 0]))
JSON = (LEAVES | LEAVES | st.lists(LEAVES, max_size=3)
        | st.dictionaries(st.sampled_from(["num", "den", "limit", "a", ""]), LEAVES, max_size=2))
PARAM_NAMES = st.sampled_from(["address", "height", "full", "raw", "validator", "limit",
                               "years", "price", "filters", "job_id", "evidence_hex", "x"])
NOT_STRING = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2)
NOT_PARAMS = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
VALID_CODES = frozenset({RESULT, -32602, -32001, -32000, -32002, -32005})
SHAPE_CODES = frozenset({-32600})
ANY_OUTCOME = VALID_CODES | SHAPE_CODES | {-32601}


def method_names(served: Served) -> list[str]:
    return sorted(NodeApi(served.node).methods())


@st.composite
def real_call(draw: st.DrawFn, methods: list[str], id_: int) -> tuple[dict[str, Any], Expect]:
    """A real method with random params (positional or named); maybe a notification."""
    method = draw(st.sampled_from(methods))
    params = draw(st.lists(JSON, max_size=4) | st.dictionaries(PARAM_NAMES, JSON, max_size=3))
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    notification = draw(st.integers(0, 9)) == 0
    if not notification:
        request["id"] = id_
    return request, Expect("method", VALID_CODES, id_, notification, method)


@st.composite
def unknown_call(draw: st.DrawFn, methods: list[str], id_: int
                 ) -> tuple[dict[str, Any], Expect]:
    method = draw(st.text(max_size=30) | st.sampled_from(["gannet_subscribe", "rpc.x",
                                                           "gannet_", "eth_call"]))
    if method in methods:
        method += "_nope"
    return ({"jsonrpc": "2.0", "id": id_, "method": method, "params": []},
            Expect("unknown", frozenset({-32601}), id_))


@st.composite
def bad_envelope(draw: st.DrawFn, methods: list[str], id_: int
                 ) -> tuple[Any, Expect]:
    """A request object with one field of the wrong type or value (or not an object)."""
    base: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": methods[0], "params": []}
    flaw = draw(st.sampled_from(["jsonrpc", "no_jsonrpc", "method", "no_method", "params",
                                 "id", "not_object"]))
    reply_id: Any = id_
    if flaw == "jsonrpc":
        base["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, 2, None, "", "2.0 "]))
    elif flaw == "no_jsonrpc":
        del base["jsonrpc"]
    elif flaw == "method":
        base["method"] = draw(NOT_STRING)
    elif flaw == "no_method":
        del base["method"]
    elif flaw == "params":
        base["params"] = draw(NOT_PARAMS)
    elif flaw == "id":
        base["id"] = draw(st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
                          | st.lists(st.integers(), max_size=2) | st.just({}))
        reply_id = None
    else:
        reply_id = None
        return draw(JSON.filter(lambda v: not isinstance(v, dict | list))), Expect(
            "envelope", SHAPE_CODES, None)
    return base, Expect("envelope", SHAPE_CODES, reply_id)


def entry(methods: list[str], id_: int) -> st.SearchStrategy[tuple[Any, Expect]]:
    return st.one_of(real_call(methods, id_), real_call(methods, id_),
                     unknown_call(methods, id_), bad_envelope(methods, id_))


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def single_body(draw: st.DrawFn, methods: list[str]) -> Body:
    request, expect = draw(entry(methods, draw(st.integers(0, 2**53))))
    if expect.notification:
        return Body("notification", dumps(request), batch=())
    return Body(expect.kind, dumps(request), single=expect)


@st.composite
def batch_body(draw: st.DrawFn, methods: list[str]) -> Body:
    """A batch; one over the limit (or empty) is refused whole. Entries past the 11th
    repeat the drawn ones under new ids (drawing 100 would dominate the campaign's time)."""
    size = draw(st.sampled_from([0, 1, 2, 5, 11, 11, 100, 101, 1000]))
    if size == 0 or size > LIMITS.max_batch:
        items = [{"jsonrpc": "2.0", "id": i, "method": methods[i % len(methods)]}
                 for i in range(size)]
        return Body(f"batch{size}", dumps(items), single=Expect("batch", SHAPE_CODES),
                    entries=size)
    drawn = [draw(entry(methods, i)) for i in range(min(size, 11))]
    pairs = [renumber(*drawn[i % len(drawn)], i) for i in range(size)]
    return Body(f"batch{size}", dumps([request for request, _ in pairs]),
                batch=tuple(expect for _, expect in pairs), entries=size)


def renumber(request: Any, expect: Expect, id_: int) -> tuple[Any, Expect]:
    """A copy of a batch entry under another id (an entry answered with id null stays so)."""
    if expect.id is None or expect.notification:
        return request, expect
    return {**request, "id": id_}, dataclasses.replace(expect, id=id_)


@st.composite
def garbage_body(draw: st.DrawFn) -> Body:
    raw = draw(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
               | st.sampled_from([b"", b"{", b"[", b'{"jsonrpc":', b"nul", b"\xff\xfe",
                                  b'{"a":1,}', b"[1,2", b'"\\ud800"', b"{'a': 1}",
                                  b"\x000", b"NaN", b"1e999"]))
    try:
        rfc_8259_json(raw)
    except ValueError:
        return Body("garbage", raw, single=Expect("garbage", frozenset({-32700})))
    return Body("garbage-json", raw, loose=True)


def rfc_8259_json(raw: bytes) -> object:
    """Parse as RFC 8259 JSON between systems: UTF-8 only (json.loads alone would take
    b"\\x000" for UTF-16 "0"), no NaN or Infinity, finite numbers; ValueError if not."""
    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"{text} is out of range")
        return value

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_float=finite, parse_constant=no_constant)


@st.composite
def truncated_body(draw: st.DrawFn, methods: list[str]) -> Body:
    request, _ = draw(real_call(methods, 1))
    raw = dumps(request)
    cut = draw(st.integers(1, len(raw) - 1))
    return Body("truncated", raw[:cut], single=Expect("truncated", frozenset({-32700})))


@st.composite
def deep_body(draw: st.DrawFn, methods: list[str]) -> Body:
    depth = draw(st.integers(LIMITS.max_json_depth + 1, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    closed = draw(st.booleans())  # unclosed: the depth is refused before the syntax
    nest = opener * depth + ("1" + closer * depth if closed else "")
    where = draw(st.sampled_from(["top", "params"]))
    text = nest if where == "top" else (
        f'{{"jsonrpc":"2.0","id":1,"method":"{methods[0]}","params":[{nest}]}}')
    return Body("deep", text.encode(), single=Expect("deep", frozenset({-32600})))


@st.composite
def huge_number_body(draw: st.DrawFn, methods: list[str]) -> Body:
    number = draw(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
                  | st.integers(4301, 50_000).map(lambda n: "9" * n))
    where = draw(st.sampled_from(["id", "params", "top"]))
    method = draw(st.sampled_from(methods))
    text = {"id": f'{{"jsonrpc":"2.0","id":{number},"method":"{method}"}}',
            "params": f'{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[{number}]}}',
            "top": number}[where]
    return Body("huge-number", text.encode(), single=Expect("huge", frozenset({-32700})))


def bodies(methods: list[str]) -> st.SearchStrategy[Body]:
    return st.one_of(
        single_body(methods), single_body(methods), single_body(methods),
        batch_body(methods), garbage_body(), truncated_body(methods),
        deep_body(methods), huge_number_body(methods))


def check_response(response: Any, expect: Expect, stats: Stats) -> None:
    """One JSON-RPC 2.0 response object that fits `expect`."""
    assert isinstance(response, dict), response
    assert response.get("jsonrpc") == "2.0", response
    assert set(response) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), response
    if "result" in response:
        outcome: Any = RESULT
    else:
        error = response["error"]
        assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, error
        assert type(error["code"]) is int and isinstance(error["message"], str), error
        assert error["message"], error
        outcome = error["code"]
        assert outcome in SPEC_CODES or outcome in SERVER_CODES, (
            f"code {outcome} is neither a spec code nor server-defined (-32603 is a crash "
            f"inside a method): {response}")
    stats.codes[outcome] += 1
    assert outcome in expect.allowed, (expect, response)
    assert response["id"] == expect.id, (expect, response)


def check_answer(body: Body, status: int, data: bytes, stats: Stats) -> None:
    """The HTTP answer to `body`: 200 with the response(s) it calls for, or 204 for none."""
    stats.bodies += 1
    stats.http[status] += 1
    stats.kinds[body.kind] += 1
    stats.requests += body.entries
    assert status != 500, data
    if len(body.raw) > LIMITS.max_body_bytes:
        assert status == 413, (status, data[:200])
        check_response(json.loads(data), Expect("oversize", SHAPE_CODES), stats)
        return
    if body.loose:
        check_loose(status, data, stats)
        return
    if body.single is not None:
        stats.methods[body.single.method] += bool(body.single.method)
        assert status == 200, (status, data)
        check_response(json.loads(data), body.single, stats)
        return
    assert body.batch is not None
    expected = [e for e in body.batch if not e.notification]
    stats.methods.update(e.method for e in body.batch if e.method)
    if not expected:
        assert status == 204 and data == b"", (status, data)
        return
    assert status == 200, (status, data)
    reply = json.loads(data)
    if body.raw.startswith(b"["):
        assert isinstance(reply, list) and len(reply) == len(expected), (body, reply)
    else:
        reply = [reply]
    for response, expect in zip(reply, expected, strict=True):
        check_response(response, expect, stats)


def check_loose(status: int, data: bytes, stats: Stats) -> None:
    """Random bytes that parse as JSON: 204, or well-formed responses with spec codes."""
    assert status in (200, 204), (status, data)
    if status == 204:
        assert data == b""
        return
    reply = json.loads(data)
    for response in reply if isinstance(reply, list) else [reply]:
        check_response(response, Expect("loose", ANY_OUTCOME, response.get("id")), stats)


def run_campaign(port: int, methods: list[str], n: int) -> Stats:
    """Send `n` generated bodies to the server at `port` serving `methods`; every answer
    checked. Deterministic (derandomized)."""
    stats = Stats()
    client = Client(port)

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies(methods))
    def one(body: Body) -> None:
        status, data = client.post(body.raw)
        if status in (408, 413):  # the server closes such a connection: start a new one
            client.close()
        check_answer(body, status, data, stats)

    started = time.monotonic()
    try:
        one()
    finally:
        client.close()
        stats.seconds = time.monotonic() - started
        print(stats.summary())
    return stats


def check_campaign(stats: Stats, methods: list[str], n: int, min_requests: int) -> None:
    """The campaign sent what it should have and got no 500 and no -32603."""
    assert stats.bodies >= n and stats.requests >= min_requests and stats.http[500] == 0
    missed = set(methods) - set(stats.methods)
    assert not missed, f"methods never called: {sorted(missed)}"
    assert stats.codes[-32603] == 0
    for code in (-32700, -32600, -32601, -32602, RESULT):
        assert stats.codes[code] > 0, f"the campaign never produced {code}: {stats.summary()}"
    for kind in ("batch0", "batch11", "batch1000", "deep", "huge-number", "garbage"):
        assert stats.kinds[kind] > 0, f"the campaign never sent {kind}: {stats.summary()}"


def test_abuse_campaign_gets_spec_answers_and_no_500(served: Served) -> None:
    methods = method_names(served)
    stats = run_campaign(served.port, methods, ABUSE_BODIES)
    check_campaign(stats, methods, ABUSE_BODIES, MIN_REQUESTS)
    assert call(served.port, "gannet_blockNumber")["result"] == HEAD


@pytest.mark.slow
def test_abuse_campaign_of_ten_thousand_bodies(served: Served) -> None:
    methods = method_names(served)
    stats = run_campaign(served.port, methods, SLOW_ABUSE_BODIES)
    check_campaign(stats, methods, SLOW_ABUSE_BODIES, MIN_REQUESTS)
    assert call(served.port, "gannet_blockNumber")["result"] == HEAD


@pytest.mark.parametrize("method", [[], ["gannet_sendRawTransaction"], {"a": 1}])
def test_batch_entry_with_an_unhashable_method_is_one_invalid_request(served: Served,
                                                                      method: Any) -> None:
    """Found by the campaign: such an entry made the whole batch a -32603 (a TypeError
    while grouping tx submissions); now only that entry is -32600."""
    client = Client(served.port)
    try:
        status, data = client.post(dumps([
            {"jsonrpc": "2.0", "id": 1, "method": method},
            {"jsonrpc": "2.0", "id": 2, "method": "gannet_blockNumber"}]))
    finally:
        client.close()
    assert status == 200
    first, second = json.loads(data)
    assert first["id"] == 1 and first["error"]["code"] == -32600, first
    assert second == {"jsonrpc": "2.0", "id": 2, "result": HEAD}
