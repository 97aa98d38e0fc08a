"""An in-process chain for node-side proof-of-compute tests: the real block rules, no network.

`ComputeChain` holds committed state in a dict and applies blocks with the
real transition (`consensus.transition`: begin block, each signed tx, end
block, the supply invariant). Its `call(method, *params)` answers the JSON-RPC
methods a provider worker uses, the compute ones through the node's own
`node.api_compute.ComputeApi`, so the worker and verifier under test build
txs that the real rules must accept.

Genesis: one validator (its key signs attestations; its address holds GPU for
their fees), a client with stable units, and two provider keys with GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from chain import codec
from chain.address import address_from_public_key, encode_address, parse_address
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    RECEIPT_OK,
    Attest,
    Commit,
    CommitSig,
    Receipt,
    SignedTx,
    Tx,
    TxBody,
    tx_hash,
)
from chain.signing import sign_tx
from chain.state import State
from consensus import transition
from consensus.context import ChainRules
from consensus.params import NetworkParams, default_params, params_with_overrides
from genesis.document import add_account, add_validator, new_genesis
from genesis.state import genesis_writes
from node.api_compute import ComputeApi
from tests.committed import commit_writes

CHAIN_ID = "gannet-compute-test"
GPU = 10**9
VALIDATOR_KEY = SigningKey(bytes(range(32)))
CLIENT_KEY = SigningKey(bytes(range(1, 33)))
PROVIDER_KEYS = (SigningKey(bytes(range(2, 34))), SigningKey(bytes(range(3, 35))))
SIGNATURE = bytes(64)
MIN_FEE = 1000
COMPUTE = {"challenge_delay_blocks": 1, "reveal_window_blocks": 4, "attest_window_blocks": 3,
           "provider_min_collateral": 100 * GPU}


def address(key: SigningKey) -> bytes:
    """The account address of a key."""
    return address_from_public_key(key.public_key)


def chain_params(**compute: Any) -> NetworkParams:
    """Default parameters with short compute windows (and any `compute` overrides)."""
    return params_with_overrides(default_params(), {"compute": {**COMPUTE, **compute}})


@dataclass
class Included:
    """Where a tx landed and its receipt."""

    height: int
    receipt: Receipt


@dataclass
class ComputeChain:
    """Committed state in a dict, blocks applied by the real rules, a JSON-RPC facade."""

    params: NetworkParams = field(default_factory=chain_params)
    committed: dict[bytes, bytes] = field(default_factory=dict)
    height: int = 0
    pending: list[SignedTx] = field(default_factory=list)
    included: dict[bytes, Included] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = new_genesis(CHAIN_ID, 0, self.params)
        g = add_validator(g, VALIDATOR_KEY.public_key, 1000 * GPU, address(VALIDATOR_KEY), "v")
        g = add_account(g, address(VALIDATOR_KEY), 1000 * GPU)
        g = add_account(g, address(CLIENT_KEY), 1000 * GPU, stable=1_000_000 * GPU)
        for key in PROVIDER_KEYS:
            g = add_account(g, address(key), 10_000 * GPU)
        self.genesis = g
        _, writes = genesis_writes(g)
        self.committed = {k: v for k, v in writes.items() if v}
        self.rules = ChainRules(CHAIN_ID, self.params, g.initial_height)
        self.height = g.initial_height - 1
        node = SimpleNamespace(store=SimpleNamespace(get_state=self.committed.get), genesis=g,
                               config=SimpleNamespace(mempool=SimpleNamespace(
                                   max_tx_bytes=self.params.block.max_tx_bytes)))
        self.api = ComputeApi(node)

    # --- blocks ------------------------------------------------------------------------

    def state(self) -> State:
        """A read-only view of committed state."""
        return State(self.committed.get)

    def apply_block(self) -> list[Receipt]:
        """Apply the next block with every pending tx; their receipts."""
        h = self.height + 1
        state = self.state()
        ctx = self.rules.context(h, address(VALIDATOR_KEY), sha256(b"parent %d" % h))
        commit = Commit(height=h - 1, round=0, block_hash=sha256(b"%d" % (h - 1)),
                        signatures=(CommitSig(validator=address(VALIDATOR_KEY),
                                              signature=SIGNATURE),))
        transition.begin_block(state, ctx, commit, ())
        txs, self.pending = self.pending, []
        receipts = []
        for stx in txs:
            receipt = transition.apply_tx(state, stx, ctx)
            self.included[tx_hash(stx)] = Included(h, receipt)
            receipts.append(receipt)
        transition.end_block(state, ctx)
        commit_writes(self.committed, state.write_set())
        self.height = h
        return receipts

    def apply_blocks(self, count: int) -> None:
        """Apply `count` blocks."""
        for _ in range(count):
            self.apply_block()

    def sign(self, key: SigningKey, body: TxBody) -> SignedTx:
        """A tx from `key` at its next pending nonce."""
        tx = Tx(chain_id=CHAIN_ID.encode(), sender=key.public_key,
                nonce=self.pending_nonce(address(key)), fee=MIN_FEE, body=body)
        return sign_tx(key, tx)

    def submit(self, key: SigningKey, body: TxBody) -> bytes:
        """Queue a tx from `key` for the next block; its hash."""
        stx = self.sign(key, body)
        self.pending.append(stx)
        return tx_hash(stx)

    def submit_attest(self, body: Attest) -> None:
        """What a validator node's verifier does with an attestation."""
        self.submit(VALIDATOR_KEY, body)

    def pending_nonce(self, addr: bytes) -> int:
        """The account's nonce counting its queued txs."""
        queued = sum(1 for stx in self.pending if address_from_public_key(stx.tx.sender) == addr)
        return self.state().get_account(addr).nonce + queued

    # --- JSON-RPC ------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """Answer a JSON-RPC method the way a node does."""
        compute = self.api.methods()
        if method in compute:
            return compute[method](*params)
        return getattr(self, "rpc_" + method.removeprefix("gannet_"))(*params)

    def rpc_blockNumber(self) -> int:
        return self.height

    def rpc_chainId(self) -> str:
        return CHAIN_ID

    def rpc_estimateFee(self) -> dict[str, str]:
        return {"min_fee": str(MIN_FEE), "fee": str(MIN_FEE)}

    def rpc_getAccount(self, bech32: str) -> dict[str, Any]:
        addr = parse_address(bech32)
        account = self.state().get_account(addr)
        return {"address": encode_address(addr), "gpu": str(account.gpu),
                "stable": str(account.stable), "nonce": account.nonce,
                "pending_nonce": self.pending_nonce(addr)}

    def rpc_sendRawTransaction(self, raw: str) -> str:
        stx = codec.decode(SignedTx, bytes.fromhex(raw.removeprefix("0x")))
        self.pending.append(stx)
        return "0x" + tx_hash(stx).hex()

    def rpc_getTransaction(self, h: str) -> dict[str, Any]:
        raw = bytes.fromhex(h.removeprefix("0x"))
        if raw in self.included:
            found = self.included[raw]
            ok = found.receipt.status == RECEIPT_OK
            return {"hash": h, "status": "included", "height": found.height,
                    "receipt": {"status": "ok" if ok else "failed", "code": found.receipt.code,
                                "reason": found.receipt.reason.decode()}}
        if any(tx_hash(stx) == raw for stx in self.pending):
            return {"hash": h, "status": "pending"}
        return {"hash": h, "status": "unknown"}
