"""The wallet-facing JSON-RPC methods of a node (Ethereum-style names).

Wire conventions: amounts are decimal strings of base units (they exceed the
integers JSON clients can hold exactly); heights, nonces and counts are numbers;
hashes and keys are 0x-prefixed hex; addresses are bech32 (`gnt1…`; 0x-hex is
accepted on input). Bad input raises `InvalidParams`; a rejected tx `TxRejected`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from chain.address import AddressError, encode_address, parse_address
from chain.codec import ADDRESS, U64, decode
from chain.errors import ChainError
from chain.records import (
    DENOMS,
    KEEP_U8,
    KEEP_U32,
    RECEIPT_OK,
    VOTE_PREVOTE,
    AddLiquidity,
    Attest,
    Block,
    Commit,
    CommitResult,
    CreateValidator,
    Delegate,
    DeregisterProvider,
    DuplicateVoteEvidence,
    EditValidator,
    IssueStable,
    LicenceTransfer,
    PayRevenue,
    Receipt,
    Redelegate,
    RegisterProvider,
    RemoveLiquidity,
    RevealTiles,
    SignedTx,
    StakingValidator,
    SubmitJob,
    Swap,
    Transfer,
    Undelegate,
    Unjail,
    Validator,
    WithdrawRewards,
    block_hash,
    tx_hash,
)
from chain.signing import sender_address
from chain.state import State
from chain.types import UINT64_MAX
from consensus.errors import InvalidEvidence
from consensus.evidence import (
    CommittedEvidence,
    Offence,
    committed_evidence,
    evidence_committed_at,
    evidence_hash,
    offence_of,
    validate_conflict,
)
from consensus.transition import spendable_gpu
from consensus.validators import validator_set_at
from node.api_compute import ComputeApi
from node.api_economy import NO_STAKING, EconomyApi
from node.rpc.errors import InvalidParams, LimitExceeded, NotFound, ServerError, TxRejected
from node.rpc.server import RpcLimits, RpcServer
from p2p.messages import EvidenceMsg

MAX_TX_HEX_CHARS = 2 * 64 * 1024 + 2
MAX_EVIDENCE_HEX_CHARS = 2 * 4096 + 2


class EvidenceRejected(ServerError):
    """-32002: submitted evidence breaks an evidence rule; `data.reason` is the rule's words."""

    code = -32002
    default_message = "evidence rejected"


def build_rpc(node, limits: RpcLimits) -> RpcServer:
    """An `RpcServer` serving this node's methods and subscription topics."""
    api = NodeApi(node)
    server = RpcServer(api.methods(), node.config.rpc.host, node.config.rpc.port, limits)
    server.hub.register_topic("newHeads", _no_params)
    server.hub.register_topic("txStatus", _one_hash)

    async def publish(committed) -> None:
        await server.hub.publish("newHeads", header_json(committed.block, committed.block_hash))
        if not server.hub.count("txStatus"):
            return
        for index, h in enumerate(committed.tx_hashes):
            status = {"hash": _hex(h), "status": "included",
                      "height": committed.head.height, "index": index}
            await server.hub.publish("txStatus", status,
                                     match=lambda wanted, hh=status["hash"]: wanted == hh)

    node.on_commit(publish)
    return server


class NodeApi:
    """Method implementations over a running node."""

    def __init__(self, node) -> None:
        self.node = node
        self.economy = EconomyApi(node)

    def methods(self) -> dict[str, Any]:
        """The method table, by JSON-RPC name."""
        return {
            "gannet_chainId": self.chain_id,
            "gannet_status": self.status,
            "gannet_blockNumber": self.block_number,
            "gannet_getAccount": self.get_account,
            "gannet_sendRawTransaction": self.send_raw_transaction,
            "gannet_getTransaction": self.get_transaction,
            "gannet_getBlockByNumber": self.get_block_by_number,
            "gannet_getBlockByHash": self.get_block_by_hash,
            "gannet_estimateFee": self.estimate_fee,
            "gannet_getCommit": self.get_commit,
            "gannet_getValidators": self.get_validators,
            "gannet_getEvidence": self.get_evidence,
            "gannet_submitEvidence": self.submit_evidence,
            "gannet_netInfo": self.net_info,
            **self.economy.methods(),
            **ComputeApi(self.node).methods(),
        }

    def chain_id(self) -> str:
        """The chain id."""
        return self.node.chain_id

    def status(self) -> dict[str, Any]:
        """Head height and hashes, sync state, mempool size and bytes, own validator address."""
        node = self.node
        head = node.head
        validator = node.validator_address
        syncer = node.syncer
        engine = node.engine
        return {
            "chain_id": node.chain_id,
            "height": head.height,
            "head_hash": _hex(head.block_hash),
            "app_hash": _hex(head.app_hash),
            "time_ms": head.time_ms,
            "syncing": node.syncing,
            "sync_target_height": syncer.target_height if syncer is not None else head.height,
            "consensus": {"height": engine.height, "round": engine.round, "step": engine.step},
            "peers": len(node.switch.peers()) if node.switch is not None else 0,
            "mempool_size": len(node.mempool),
            "mempool_bytes": node.mempool.size_bytes,
            "validator": encode_address(validator) if validator else None,
            "node_id": _hex(node.node_key.public_key),
        }

    def block_number(self) -> int:
        """Height of the latest committed block."""
        return self.node.head.height

    def get_account(self, address: str) -> dict[str, Any]:
        """Committed balances, nonce, locks, and the nonce after pending txs."""
        addr = _address(address)
        account = self.node.committed_account(addr)
        return {
            "address": encode_address(addr),
            "gpu": str(account.gpu),
            "stable": str(account.stable),
            "spendable_gpu": str(spendable_gpu(account, self.node.head.height + 1)),
            "nonce": account.nonce,
            "pending_nonce": self.node.mempool.pending_nonce(addr),
            "licences": account.licences,
            "locks": [{"amount": str(lk.amount), "release_height": lk.release_height}
                      for lk in account.locks],
        }

    async def send_raw_transaction(self, raw: str) -> str:
        """Admit a hex-encoded signed tx to the mempool; its hash, or why not."""
        data = _bytes_param(raw, "raw transaction", MAX_TX_HEX_CHARS)
        try:
            h = await self.node.admission.submit(data)
        except ChainError as exc:
            self._remember_if_decodable(data, str(exc))
            raise TxRejected(str(exc)) from exc
        return _hex(h)

    def _remember_if_decodable(self, data: bytes, reason: str) -> None:
        try:
            stx = decode(SignedTx, data)
        except ChainError:
            return
        h = tx_hash(stx)
        if not self.node.mempool.contains(h) and self.node.store.get_tx_location(h) is None:
            self.node.remember_rejected(h, reason)

    def get_transaction(self, tx_hash_hex: str) -> dict[str, Any]:
        """Status of a tx: unknown, pending, included (with receipt) or rejected."""
        h = _bytes_param(tx_hash_hex, "tx hash", 66, exact=32)
        result: dict[str, Any] = {"hash": _hex(h), "status": "unknown", "reason": None,
                                  "height": None, "index": None, "receipt": None, "tx": None}
        location = self.node.store.get_tx_location(h)
        if location is not None:
            block = self.node.store.get_block(location.height)
            result.update(status="included", height=location.height, index=location.index,
                          receipt=receipt_json(location.receipt),
                          tx=tx_json(block.txs[location.index]))
        elif (stx := self.node.mempool.get(h)) is not None:
            result.update(status="pending", tx=tx_json(stx))
        elif h in self.node.rejected:
            result.update(status="rejected", reason=self.node.rejected[h])
        return result

    def get_block_by_number(self, height: int | str, full: bool = False) -> dict[str, Any]:
        """The block at a height ("latest" for the head), with tx hashes or full txs."""
        if height == "latest":
            height = self.node.head.height
        if type(height) is not int or not 0 <= height <= UINT64_MAX:
            raise InvalidParams(f"height must be an integer from 0 to 2^64-1 or 'latest', got "
                                f"{height!r:.40}")
        return self._block(height, _bool(full))

    def get_block_by_hash(self, block_hash_hex: str, full: bool = False) -> dict[str, Any]:
        """The block with this hash, with tx hashes or full txs."""
        h = _bytes_param(block_hash_hex, "block hash", 66, exact=32)
        height = self.node.store.get_height_by_hash(h)
        if height is None:
            raise NotFound(f"no block with hash {_hex(h)}")
        return self._block(height, _bool(full))

    def _block(self, height: int, full: bool) -> dict[str, Any]:
        block = self.node.store.get_block(height) if height > 0 else None
        if block is None:
            raise NotFound(f"no block at height {height} (head is {self.node.head.height})")
        out = header_json(block, block_hash(block))
        out["txs"] = [tx_json(stx) if full else _hex(tx_hash(stx)) for stx in block.txs]
        out["last_commit"] = commit_json(block.last_commit)
        return out

    def get_commit(self, height: int | str = "latest") -> dict[str, Any]:
        """The +2/3 precommits that finalised the block at a height ("latest": the head)."""
        height = self._height(height)
        commit = self.node.store.get_commit(height) if height > 0 else None
        if commit is None:
            raise NotFound(f"no commit at height {height} (head is {self.node.head.height})")
        return commit_json(commit)

    def get_validators(self, height: int | str = "latest") -> dict[str, Any]:
        """The validator set that signs a height ("latest": the head; history reaches
        head + 2, so the next two sets are visible before they take effect), each with
        its staking, reward and liveness fields, and the candidates outside the set.

        The staking fields are the head's, whatever the height asked about.
        """
        height = max(self._height(height), 1)
        state = State(self.node.store.get_state)
        vset = validator_set_at(state, height)
        if vset is None:
            raise NotFound(f"no validator set for height {height} "
                           f"(head is {self.node.head.height})")
        details = self.economy.validator_details(state)
        members = {v.address for v in vset.validators}
        total = sum(v.power for v in vset.validators)
        return {
            "height": height, "total_power": str(total),
            "validators": [{**validator_json(v), **details.get(v.address, NO_STAKING)}
                           for v in vset.validators],
            "candidates": [{**candidate_json(record), **details[address]}
                           for address, record in self.economy.staking_records(state)
                           if address not in members],
        }

    def get_evidence(self, validator: str | None = None) -> dict[str, Any]:
        """Committed double-sign evidence (of one validator, or all) and the pending count."""
        address = None if validator is None else _address(validator)
        committed = committed_evidence(self.node.store.iter_state, address)
        return {
            "pending": len(self.node.evidence),
            "committed": [offence_json(offence, entry) for offence, entry in committed],
        }

    def submit_evidence(self, evidence_hex: str) -> dict[str, Any]:
        """Check hex-encoded `DuplicateVoteEvidence` against the committed state, pool it
        for a block and gossip it; its hash and "added" (new) or "pending" (known).

        Evidence that breaks a rule is `EvidenceRejected` naming the rule. Two
        answers come before the pool's own checks, as they say more: evidence of
        a height ahead of the chain, and of an offence already committed (with
        the height that committed it, however old the offence is by now).
        """
        data = _bytes_param(evidence_hex, "evidence", MAX_EVIDENCE_HEX_CHARS)
        try:
            evidence = decode(DuplicateVoteEvidence, data)
        except ChainError as exc:
            raise InvalidParams(f"not an encoded DuplicateVoteEvidence: {exc}") from exc
        node = self.node
        try:
            validate_conflict(evidence.vote_a.vote, evidence.vote_b.vote)
            self._check_new(evidence)
            added = node.add_evidence(evidence)
        except InvalidEvidence as exc:
            raise EvidenceRejected(self._evidence_reason(exc.reason),
                                   data={"reason": exc.reason}) from exc
        result = {"hash": _hex(evidence_hash(evidence)), "status": "added"}
        if added:
            if node.switch is not None:
                node.switch.broadcast(EvidenceMsg(evidence=evidence))
            return result
        self._check_pool_room(evidence)
        return {**result, "status": "pending"}

    def _check_new(self, evidence: DuplicateVoteEvidence) -> None:
        """Raise `InvalidEvidence` for an offence ahead of the chain or already committed."""
        offence = offence_of(evidence)
        head = self.node.head.height
        if offence.height > head + 1:
            raise InvalidEvidence(f"evidence height {offence.height} is ahead of the chain: "
                                  f"the head is {head}, so evidence may be of height "
                                  f"{head + 1} at most")
        committed = evidence_committed_at(State(self.node.store.get_state), offence)
        if committed is not None:
            raise InvalidEvidence(f"offence already committed at height {committed}")

    def _evidence_reason(self, reason: str) -> str:
        """The rejection message: the rule broken; a signature failure names our chain,
        since votes signed for another chain (or by another key) fail just so."""
        if reason.endswith("signature does not verify"):
            reason += (f" for chain {self.node.chain_id} with the validator's key "
                       "(signed for another chain, or by another key)")
        return f"invalid evidence: {reason}"

    def _check_pool_room(self, evidence: DuplicateVoteEvidence) -> None:
        """Valid, uncommitted evidence the pool did not take: already pending (fine,
        return) or refused for want of room (`LimitExceeded`)."""
        pool = self.node.evidence
        if len(pool) >= pool.max_pending:
            offence = offence_of(evidence)
            pending = pool.pending(pool.max_pending, self.node.head.height + 2)
            if offence not in {offence_of(piece) for piece in pending}:
                raise LimitExceeded(f"evidence pool is full ({len(pool)} pieces pending)")

    def net_info(self) -> dict[str, Any]:
        """This node's p2p identity and its connected peers."""
        switch = self.node.switch
        peers = switch.peers() if switch is not None else []
        return {
            "node_id": _hex(self.node.node_key.public_key),
            "listen_port": switch.port if switch is not None else None,
            "peer_count": len(peers),
            "peers": [peer_json(p) for p in sorted(peers, key=lambda p: p.node_id)],
        }

    def _height(self, height: Any) -> int:
        if height == "latest":
            return self.node.head.height
        if type(height) is not int or not 0 <= height <= UINT64_MAX:
            raise InvalidParams(f"height must be an integer from 0 to 2^64-1 or 'latest', got "
                                f"{height!r:.40}")
        return height

    def estimate_fee(self) -> dict[str, str]:
        """The network minimum fee and a fee likely to be included soon.

        The suggestion is the minimum while the mempool is under half full, else
        one more than the lowest fee pending (what it takes to outbid eviction).
        """
        min_fee = self.node.min_fee
        mempool = self.node.mempool
        suggested = min_fee
        if 2 * len(mempool) >= mempool.limits.max_txs:
            lowest = mempool.lowest_fee()
            if lowest is not None:
                suggested = max(min_fee, lowest + 1)
        return {"min_fee": str(min_fee), "fee": str(suggested)}


# --- JSON views -------------------------------------------------------------


def header_json(block: Block, block_hash_: bytes) -> dict[str, Any]:
    """A block header as JSON."""
    h = block.header
    return {
        "hash": _hex(block_hash_), "height": h.height, "time_ms": h.time_ms,
        "chain_id": h.chain_id.decode(), "prev_hash": _hex(h.prev_hash),
        "last_commit_hash": _hex(h.last_commit_hash), "tx_root": _hex(h.tx_root),
        "app_hash": _hex(h.app_hash), "results_hash": _hex(h.results_hash),
        "validators_hash": _hex(h.validators_hash), "evidence_hash": _hex(h.evidence_hash),
        "proposer": encode_address(h.proposer), "tx_count": len(block.txs),
    }


def commit_json(commit: Commit) -> dict[str, Any]:
    """A commit (the precommit signatures for one block) as JSON."""
    return {
        "height": commit.height, "round": commit.round,
        "block_hash": _hex(commit.block_hash),
        "signatures": [{"validator": encode_address(s.validator), "signature": _hex(s.signature)}
                       for s in commit.signatures],
    }


def validator_json(v: Validator) -> dict[str, Any]:
    """A validator as JSON."""
    return {"address": encode_address(v.address), "public_key": _hex(v.public_key),
            "power": str(v.power), "operator": encode_address(v.operator)}


def candidate_json(v: StakingValidator) -> dict[str, Any]:
    """A validator with a staking record outside the set: no voting power."""
    return {"address": encode_address(v.address), "public_key": _hex(v.public_key),
            "power": "0", "operator": encode_address(v.operator)}


def offence_json(offence: Offence, entry: CommittedEvidence) -> dict[str, Any]:
    """A committed offence: who, at which height/round/vote type, committed where."""
    return {"validator": encode_address(offence.validator), "height": offence.height,
            "round": offence.round,
            "vote_type": "prevote" if offence.vote_type == VOTE_PREVOTE else "precommit",
            "committed_at": entry.committed_at, "evidence_hash": _hex(entry.evidence_hash)}


def peer_json(peer: Any) -> dict[str, Any]:
    """A connected peer as JSON."""
    status = peer.status
    return {
        "node_id": _hex(peer.node_id), "moniker": peer.moniker, "host": peer.host,
        "port": peer.port, "outbound": peer.outbound, "score": peer.score,
        "height": status.height if status is not None else None,
    }


TX_KINDS = {
    Transfer: "transfer", LicenceTransfer: "licence_transfer",
    CreateValidator: "create_validator", EditValidator: "edit_validator",
    Delegate: "delegate", Undelegate: "undelegate", Redelegate: "redelegate",
    WithdrawRewards: "withdraw_rewards", Unjail: "unjail", Swap: "swap",
    AddLiquidity: "add_liquidity", RemoveLiquidity: "remove_liquidity",
    IssueStable: "issue_stable", PayRevenue: "pay_revenue",
    RegisterProvider: "register_provider", DeregisterProvider: "deregister_provider",
    SubmitJob: "submit_job", CommitResult: "commit_result", RevealTiles: "reveal_tiles",
    Attest: "attest",
}
TEXT_FIELDS = frozenset({(SubmitJob, "kernel"), (RegisterProvider, "gpu")})
KEEP_FIELDS = {"commission_bps": KEEP_U32, "queen": KEEP_U8, "bound_licences": KEEP_U32}


def tx_json(stx: SignedTx) -> dict[str, Any]:
    """A signed tx as JSON: common fields, `kind`, then the body's fields."""
    tx, body = stx.tx, stx.tx.body
    return {
        "hash": _hex(tx_hash(stx)), "from": encode_address(sender_address(stx)),
        "nonce": tx.nonce, "fee": str(tx.fee), "kind": TX_KINDS[type(body)],
        **body_json(body), "signature": _hex(stx.signature),
    }


def body_json(body: Any) -> dict[str, Any]:
    """A tx body's fields: uint64 as decimal strings, smaller ints as numbers, addresses
    bech32, keys hex, denominations by name; an EditValidator field left unchanged is null."""
    hints = typing.get_type_hints(type(body), include_extras=True)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        kind = typing.get_args(hints[f.name])[1]
        if f.name in ("denom", "denom_in"):
            out[f.name] = DENOMS.get(value, str(value))
        elif isinstance(body, EditValidator) and KEEP_FIELDS.get(f.name) == value:
            out[f.name] = None
        elif kind == ADDRESS:
            out[f.name] = encode_address(value)
        elif (type(body), f.name) in TEXT_FIELDS:
            out[f.name] = value.decode("utf-8", "replace")
        elif isinstance(value, tuple):
            out[f.name] = [body_json(v) if dataclasses.is_dataclass(v) else
                           _hex(v) if isinstance(v, bytes) else v for v in value]
        elif isinstance(value, bytes):
            out[f.name] = _hex(value)
        else:
            out[f.name] = str(value) if kind == U64 else value
    return out


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt as JSON."""
    return {"status": "ok" if receipt.status == RECEIPT_OK else "failed", "code": receipt.code,
            "reason": receipt.reason.decode(errors="replace"), "fee_paid": str(receipt.fee_paid)}


# --- parameter checks -------------------------------------------------------


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidParams(f"expected a boolean, got {value!r:.40}")
    return value


def _address(value: Any) -> bytes:
    if type(value) is not str:
        raise InvalidParams(f"address must be a string, got {type(value).__name__}")
    try:
        return parse_address(value)
    except AddressError as exc:
        raise InvalidParams(f"invalid address: {exc}") from exc


def _bytes_param(value: Any, what: str, max_chars: int, exact: int | None = None) -> bytes:
    if type(value) is not str:
        raise InvalidParams(f"{what} must be a hex string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidParams(f"{what} is too long: {len(value)} characters")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        data = bytes.fromhex(text)
    except ValueError as exc:
        raise InvalidParams(f"{what} is not valid hex") from exc
    if exact is not None and len(data) != exact:
        raise InvalidParams(f"{what} must be {exact} bytes, got {len(data)}")
    return data


def _no_params(*args: Any) -> None:
    if args:
        raise InvalidParams("newHeads takes no parameters")


def _one_hash(*args: Any) -> str:
    if len(args) != 1:
        raise InvalidParams("txStatus takes one tx hash")
    return _hex(_bytes_param(args[0], "tx hash", 66, exact=32))
