"""The token economy's JSON-RPC methods against a real node store.

A chain is built once per module from a genesis (two validators' keys, a
seeded pool, a stable issuer, a locked account) by the real block producer
and transition: delegations, an undelegation, a redelegation, a new validator,
swaps, revenue and a reward withdrawal, each block committed to the store
with a commit signed by its validator set. A real `Node` then opens that
store, and the tests call its RPC method table directly, and over the real
JSON-RPC server for the error codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    QUEEN_IN,
    VOTE_PRECOMMIT,
    Commit,
    CommitSig,
    CreateValidator,
    Delegate,
    IssueStable,
    PayRevenue,
    Redelegate,
    SignedTx,
    Swap,
    Tx,
    TxBody,
    TxLocation,
    Undelegate,
    Vote,
    WithdrawRewards,
    block_hash,
)
from chain.signing import sign_tx, vote_signing_bytes
from chain.state import MODULE_ADDRESSES, State
from chain.store import Head
from chain.types import BASE_UNITS_PER_GPU
from consensus import distribution, exchange, projection, staking
from consensus.commit import EMPTY_COMMIT
from consensus.context import ChainRules
from consensus.emission import block_emission
from consensus.params import NetworkParams, Ratio
from consensus.producer import build_block
from consensus.supply import get_supply
from consensus.transition import signers_of
from genesis.document import (
    Genesis,
    GenesisLock,
    add_account,
    add_validator,
    new_genesis,
    set_pool,
    set_stable_issuer,
)
from node.api import NodeApi
from node.config import HomePaths, NodeConfig
from node.rpc.server import RpcServer
from node.service import Node, open_store

GPU = BASE_UNITS_PER_GPU
CHAIN_ID = "gannet-api-test"
GENESIS_TIME_MS = 1_700_000_000_000
KEYS = {name: SigningKey.from_seed(bytes([i]) * 32)
        for i, name in enumerate(("v1", "v2", "v3", "op1", "op2", "op3", "alice", "issuer", "lp"),
                                 start=1)}


def addr(name: str) -> bytes:
    return address_from_public_key(KEYS[name].public_key)


V1, V2, V3, OP1, OP2, OP3, ALICE, ISSUER, LP = (
    addr(n) for n in ("v1", "v2", "v3", "op1", "op2", "op3", "alice", "issuer", "lp"))
STAKE = 2000 * GPU
LOCKED = 7 * GPU
LOCK_HEIGHT = 1_000_000
POOL_GPU, POOL_STABLE = 1000 * GPU, 500 * GPU
REVENUE = 40 * GPU


def chain_params() -> NetworkParams:
    """Default parameters with short buyback periods, so slices happen within the chain."""
    params = NetworkParams()
    tokenomics = dataclasses.replace(params.tokenomics, buyback_period_blocks=4,
                                     buyback_interval_blocks=2, buyback_max_slippage_bps=10_000)
    return dataclasses.replace(params, tokenomics=tokenomics)


def make_genesis() -> Genesis:
    genesis = new_genesis(CHAIN_ID, GENESIS_TIME_MS, chain_params())
    genesis = add_account(genesis, OP1, 100 * GPU)
    genesis = add_account(genesis, OP2, 5000 * GPU)
    genesis = add_account(genesis, OP3, 5000 * GPU)
    genesis = add_account(genesis, ALICE, 1000 * GPU, stable=100 * GPU,
                          locks=(GenesisLock(LOCKED, LOCK_HEIGHT),))
    genesis = add_account(genesis, ISSUER, 1 * GPU)
    genesis = add_validator(genesis, KEYS["v1"].public_key, STAKE, OP1, "v1",
                            commission_bps=500, queen=True)
    genesis = set_stable_issuer(genesis, ISSUER)
    return set_pool(genesis, POOL_GPU, POOL_STABLE, LP)


# --- building the chain -------------------------------------------------------------


@dataclass
class Chain:
    """What the module's chain did, for the tests to check the RPC answers against."""

    node: Node
    api: NodeApi
    methods: dict[str, Any]
    txs: dict[str, tuple[bytes, TxBody]]  # label -> (tx hash, body)
    emitted: int  # Σ block emission over the chain's heights


class Producer:
    """Builds, signs and commits blocks into a store, as the node would."""

    def __init__(self, store, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        self.rules = ChainRules(CHAIN_ID, genesis.params, genesis.initial_height)
        self.head: Head = store.head()
        self.last_commit: Commit = EMPTY_COMMIT
        self.nonces: dict[bytes, int] = {}
        self.txs: dict[str, tuple[bytes, TxBody]] = {}
        self.emitted = 0

    def tx(self, signer: str, body: TxBody) -> SignedTx:
        sender = addr(signer)
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        tx = Tx(chain_id=CHAIN_ID.encode(), sender=KEYS[signer].public_key, nonce=nonce,
                fee=self.genesis.params.fee.min_fee, body=body)
        return sign_tx(KEYS[signer], tx)

    def block(self, **labelled: tuple[str, TxBody]) -> None:
        """One block with the labelled txs, in order; each must succeed."""
        state = State(self.store.get_state)
        height = self.head.height + 1
        minted_before = get_supply(state).minted
        self.emitted += block_emission(self.genesis.params.tokenomics, 1, height, minted_before)
        proposer = state.get_validator_set().validators[0].address
        txs = [self.tx(signer, body) for signer, body in labelled.values()]
        built = build_block(state, self.head, self.rules, proposer,
                            self.head.time_ms + 1000, self.last_commit, txs)
        assert not built.rejected, built.rejected
        result, block = built.result, built.block
        for receipt in result.receipts:
            assert receipt.status == 0, receipt
        for label, h, stx in zip(labelled, result.tx_hashes, block.txs, strict=True):
            self.txs[label] = (h, stx.tx.body)
        bh = block_hash(block)
        commit = self.sign_commit(State(self.store.get_state), height, bh)
        head = Head(height=height, block_hash=bh, time_ms=block.header.time_ms,
                    app_hash=result.app_hash, results_hash=result.results_hash)
        locations = [(h, TxLocation(height=height, index=i, receipt=r))
                     for i, (h, r) in enumerate(zip(result.tx_hashes, result.receipts,
                                                    strict=True))]
        self.store.commit_block(block, commit, locations, result.writes, head)
        self.head, self.last_commit = head, commit

    def sign_commit(self, state: State, height: int, bh: bytes) -> Commit:
        """Precommits for `bh` by every member of the set that signs `height`."""
        keys = {address_from_public_key(k.public_key): k for k in KEYS.values()}
        sigs = []
        for member in signers_of(state, height).validators:
            vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=0, block_hash=bh,
                        validator=member.address)
            signature = keys[member.address].sign(vote_signing_bytes(CHAIN_ID, vote))
            sigs.append(CommitSig(validator=member.address, signature=signature))
        return Commit(height=height, round=0, block_hash=bh, signatures=tuple(sigs))


def build_chain(producer: Producer) -> None:
    """The chain's blocks: every kind of economy activity the RPC methods report."""
    p = producer
    p.block(delegate=("alice", Delegate(validator=V1, amount=300 * GPU)),
            stake=("op2", CreateValidator(public_key=KEYS["v2"].public_key,
                                          commission_bps=1000, self_stake=STAKE,
                                          queen=QUEEN_IN)))
    p.block(undelegate=("alice", Undelegate(validator=V1, amount=50 * GPU)),
            swap=("alice", Swap(denom_in=DENOM_STABLE, amount_in=10 * GPU, min_out=0)),
            revenue=("alice", PayRevenue(amount=REVENUE)))
    p.block(redelegate=("alice", Redelegate(source=V1, target=V2, amount=20 * GPU)),
            issue=("issuer", IssueStable(to=ALICE, amount=5 * GPU)))
    p.block(swap_gpu=("alice", Swap(denom_in=DENOM_GPU, amount_in=3 * GPU, min_out=1)))
    p.block()
    p.block(withdraw=("alice", WithdrawRewards(validator=V1)))
    for _ in range(3):
        p.block()
    # The last block creates V3: a candidate until the set takes it in two heights.
    p.block(stake3=("op3", CreateValidator(public_key=KEYS["v3"].public_key,
                                           commission_bps=0, self_stake=STAKE, queen=0)))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    home = tmp_path_factory.mktemp("api-economy")
    paths = HomePaths(home)
    genesis = make_genesis()
    store = open_store(paths, genesis, 8 << 20)
    producer = Producer(store, genesis)
    try:
        build_chain(producer)
    finally:
        store.close()
    node = Node(paths, NodeConfig(), genesis, None)
    try:
        api = NodeApi(node)
        yield Chain(node, api, api.methods(), producer.txs, producer.emitted)
    finally:
        node.close()


def committed(chain: Chain) -> State:
    return State(chain.node.store.get_state)


def call(chain: Chain, method: str, *params: Any, **named: Any) -> Any:
    """Call a method as the RPC server would, then round-trip the result through JSON."""
    return json.loads(json.dumps(chain.methods[method](*params, **named)))


# --- gannet_getSupply ---------------------------------------------------------------------


def test_supply_adds_up(chain: Chain) -> None:
    supply = call(chain, "gannet_getSupply")
    totals = get_supply(committed(chain))
    total = int(supply["total"])
    assert total == int(supply["genesis"]) + int(supply["minted"]) - int(supply["burned"])
    assert int(supply["minted"]) == chain.emitted > 0
    assert int(supply["burned"]) == totals.burned > 0  # the buyback burned bought GPU
    assert int(supply["genesis"]) == totals.genesis_gpu
    # Every account sums to the total (the chain's own invariant, seen through RPC).
    assert totals.balances_gpu == total
    modules = {name: int(v) for name, v in supply["modules"].items()}
    assert set(modules) == set(MODULE_ADDRESSES)
    state = committed(chain)
    for name, address in MODULE_ADDRESSES.items():
        assert modules[name] == state.get_account(address).gpu
    assert int(supply["locked"]) >= LOCKED
    assert int(supply["circulating"]) == total - sum(modules.values()) - int(supply["locked"])


def test_supply_bonded_and_unbonding_match_the_staking_records(chain: Chain) -> None:
    supply = call(chain, "gannet_getSupply")
    state = committed(chain)
    validators = staking.list_validators(state)
    assert int(supply["bonded"]) == sum(v.tokens for v in validators)
    assert int(supply["bonded"]) == state.get_account(MODULE_ADDRESSES["bonded"]).gpu
    assert int(supply["unbonding"]) == state.get_account(MODULE_ADDRESSES["unbonding"]).gpu
    assert int(supply["unbonding"]) == 50 * GPU


def test_supply_emission_and_halving(chain: Chain) -> None:
    supply = call(chain, "gannet_getSupply")
    tokenomics = chain.node.genesis.params.tokenomics
    emission = supply["emission"]
    head = chain.node.head.height
    assert supply["height"] == head
    assert int(emission["next_block"]) == block_emission(tokenomics, 1, head + 1,
                                                          int(supply["minted"]))
    assert emission["halving_period"] == 0
    assert emission["next_halving_height"] == 1 + tokenomics.halving_period_blocks
    assert int(emission["period_emission"]) == tokenomics.emission_first_period
    assert int(emission["allocation_left"]) == (int(emission["network_allocation"])
                                                - int(supply["minted"]))
    assert int(supply["stable_issued"]) == POOL_STABLE + 100 * GPU + 5 * GPU


# --- gannet_getValidators ----------------------------------------------------------------


def test_validators_carry_staking_fields(chain: Chain) -> None:
    answer = call(chain, "gannet_getValidators")
    state = committed(chain)
    by_address = {v["address"]: v for v in answer["validators"] + answer["candidates"]}
    assert set(by_address) == {encode_address(V1), encode_address(V2), encode_address(V3)}
    weights = {a: (n, d) for a, n, d in distribution.validator_weights(
        state, chain.node.genesis.params)}
    queens = distribution.queens(state)
    for address in (V1, V2):
        row = by_address[encode_address(address)]
        record = staking.get_validator(state, address)
        assert int(row["tokens"]) == record.tokens
        assert row["commission_bps"] == record.commission_bps
        assert row["queen"] == {"opted_in": True, "selected": address in queens}
        assert (row["jailed"], row["tombstoned"], row["jailed_until"]) == (False, False, 0)
        assert row["missed_blocks"] == 0
        assert row["bound_licences"] == 0
        if address in weights:
            num, den = weights[address]
            assert row["reward_weight"]["num"] == str(num)
            assert row["reward_weight"]["den"] == str(den)
    v1 = by_address[encode_address(V1)]
    assert v1["commission_bps"] == 500
    assert v1["operator"] == encode_address(OP1)
    assert int(v1["operator_rewards"]) > 0  # its commission
    assert answer["total_power"] == str(sum(int(v["power"]) for v in answer["validators"]))


def test_validators_of_a_height_before_the_new_validator(chain: Chain) -> None:
    answer = call(chain, "gannet_getValidators", 1)
    assert [v["address"] for v in answer["validators"]] == [encode_address(V1)]


def test_a_new_validator_is_a_candidate_until_the_set_takes_it(chain: Chain) -> None:
    head = chain.node.head.height
    latest = call(chain, "gannet_getValidators")
    assert latest["height"] == head
    [candidate] = latest["candidates"]
    assert candidate["address"] == encode_address(V3)
    assert (candidate["power"], candidate["tokens"]) == ("0", str(STAKE))
    assert candidate["operator"] == encode_address(OP3)
    assert candidate["reward_weight"] is None  # not paid before it is in the set
    later = call(chain, "gannet_getValidators", head + 2)
    assert encode_address(V3) in {v["address"] for v in later["validators"]}
    assert later["candidates"] == []


# --- gannet_getDelegations ----------------------------------------------------------------


def test_delegations_of_alice(chain: Chain) -> None:
    answer = call(chain, "gannet_getDelegations", encode_address(ALICE))
    state = committed(chain)
    assert answer["address"] == encode_address(ALICE)
    rows = {row["validator"]: row for row in answer["delegations"]}
    assert set(rows) == {encode_address(V1), encode_address(V2)}
    for address in (V1, V2):
        row = rows[encode_address(address)]
        validator = staking.get_validator(state, address)
        assert int(row["tokens"]) == staking.delegation_tokens(validator, int(row["shares"]))
        assert int(row["pending_rewards"]) == staking.pending_rewards(state, ALICE, address)
    # 300 delegated, 50 unbonding, 20 moved to V2 (no slashing: tokens track shares exactly).
    assert int(rows[encode_address(V1)]["tokens"]) == 230 * GPU
    assert int(rows[encode_address(V2)]["tokens"]) == 20 * GPU
    [unbonding] = answer["unbonding"]
    assert unbonding["validator"] == encode_address(V1)
    assert unbonding["initial_balance"] == unbonding["balance"] == str(50 * GPU)
    period = chain.node.genesis.params.staking.unbonding_period_blocks
    assert unbonding["completion_height"] == unbonding["creation_height"] + period
    [redelegation] = answer["redelegations"]
    assert (redelegation["source"], redelegation["target"]) == (encode_address(V1),
                                                                encode_address(V2))
    assert redelegation["initial_balance"] == str(20 * GPU)


def test_delegations_of_an_unknown_address_are_empty(chain: Chain) -> None:
    answer = call(chain, "gannet_getDelegations", encode_address(bytes(20)))
    assert answer["delegations"] == answer["unbonding"] == answer["redelegations"] == []


# --- gannet_getRewards -------------------------------------------------------------------


def test_rewards_of_the_operator_include_commission(chain: Chain) -> None:
    answer = call(chain, "gannet_getRewards", encode_address(OP1))
    state = committed(chain)
    [row] = answer["rewards"]
    v1 = staking.get_validator(state, V1)
    assert row["validator"] == encode_address(V1)
    assert int(row["operator_rewards"]) == v1.operator_rewards > 0
    assert int(row["total"]) == staking.pending_rewards(state, OP1, V1)
    assert int(row["total"]) == int(row["delegation_rewards"]) + int(row["operator_rewards"])
    assert answer["total_pending"] == row["total"]


def test_rewards_of_alice_and_her_locks(chain: Chain) -> None:
    answer = call(chain, "gannet_getRewards", encode_address(ALICE))
    state = committed(chain)
    rows = {row["validator"]: row for row in answer["rewards"]}
    assert set(rows) == {encode_address(V1), encode_address(V2)}
    for address in (V1, V2):
        row = rows[encode_address(address)]
        assert int(row["total"]) == staking.pending_rewards(state, ALICE, address)
        assert row["operator_rewards"] == "0"
    assert answer["total_pending"] == str(sum(int(r["total"]) for r in rows.values()))
    account = state.get_account(ALICE)
    head = chain.node.head.height
    live = [lk for lk in account.locks if lk.release_height > head + 1]
    assert answer["locks"] == [{"amount": str(lk.amount), "release_height": lk.release_height}
                               for lk in live]
    assert int(answer["locked"]) == sum(lk.amount for lk in live)
    assert {"amount": str(LOCKED), "release_height": LOCK_HEIGHT} in answer["locks"]


# --- gannet_getPool ----------------------------------------------------------------------


def test_pool_matches_the_pool_account(chain: Chain) -> None:
    answer = call(chain, "gannet_getPool")
    account = committed(chain).get_account(MODULE_ADDRESSES["pool"])
    assert answer["live"] is True
    assert (int(answer["gpu"]), int(answer["stable"])) == (account.gpu, account.stable)
    assert (int(answer["gpu"]), int(answer["stable"])) != (POOL_GPU, POOL_STABLE)
    price = answer["spot_price"]
    assert int(price["num"]) * int(answer["gpu"]) == int(price["den"]) * int(answer["stable"])
    whole, _, frac = price["decimal"].partition(".")
    assert int(whole + frac.ljust(9, "0")) == account.stable * GPU // account.gpu
    assert answer["fee_bps"] == chain.node.genesis.params.tokenomics.pool_fee_bps
    assert "owner" not in answer


def test_pool_with_an_owner_shows_its_shares(chain: Chain) -> None:
    answer = call(chain, "gannet_getPool", encode_address(LP))
    assert answer["owner"] == encode_address(LP)
    # The seeder is the only provider: it holds the shares in issue (less any the pool
    # keeps locked for good).
    owner_shares = int(answer["owner_shares"])
    assert owner_shares == exchange.get_lp_shares(committed(chain), LP)
    assert 0 < owner_shares <= int(answer["lp_shares"])
    assert call(chain, "gannet_getPool", encode_address(ALICE))["owner_shares"] == "0"


# --- gannet_getBuyback -------------------------------------------------------------------


def test_buyback_totals_and_history(chain: Chain) -> None:
    answer = call(chain, "gannet_getBuyback")
    state = committed(chain)
    assert answer["revenue_total"] == str(REVENUE)
    assert answer["treasury_stable"] == str(state.get_account(MODULE_ADDRESSES["treasury"]).stable)
    assert answer["slices_per_period"] == 2
    history = answer["history"]
    assert history, "slices were taken"
    heights = [s["height"] for s in history]
    assert heights == sorted(heights, reverse=True)
    bought = [s for s in history if not s["skipped"]]
    assert bought and all(s["reason"] == "bought" for s in bought)
    assert sum(int(s["gpu_burned"]) for s in history) == int(answer["burned_total"])
    assert answer["burned_total"] == call(chain, "gannet_getSupply")["burned"]
    assert sum(int(s["stable_in"]) for s in bought) + int(answer["treasury_stable"]) == REVENUE


def test_buyback_history_limit(chain: Chain) -> None:
    full = call(chain, "gannet_getBuyback")["history"]
    assert call(chain, "gannet_getBuyback", 1)["history"] == full[:1]
    assert call(chain, "gannet_getBuyback", 0)["history"] == []


# --- gannet_projectSupply ----------------------------------------------------------------


def test_project_supply_rows(chain: Chain) -> None:
    answer = call(chain, "gannet_projectSupply", 5, str(10**6 * GPU), "0.5")
    params = chain.node.genesis.params
    expected = projection.project_supply(params, 1, 5, 10**6 * GPU, Ratio(1, 2))
    assert [row["year"] for row in answer["rows"]] == [1, 2, 3, 4, 5]
    for row, want in zip(answer["rows"], expected, strict=True):
        assert int(row["supply"]) == want.supply
        assert int(row["supply"]) == (int(answer["genesis_supply"]) + int(row["minted_total"])
                                      - int(row["burned_total"]))
        assert int(row["burned"]) == 2 * 10**6 * GPU
    assert answer["price"] == {"num": "1", "den": "2", "decimal": "0.5"}
    assert answer["halving_heights"][0] == 1 + params.tokenomics.halving_period_blocks


def test_project_supply_price_spellings_agree(chain: Chain) -> None:
    by_decimal = call(chain, "gannet_projectSupply", 3, "1000", "0.25")
    by_ratio = call(chain, "gannet_projectSupply", years=3, revenue_per_year=1000,
                    price={"num": "1", "den": "4"})
    assert by_decimal["rows"] == by_ratio["rows"]
    pool = exchange.get_pool(committed(chain))
    by_pool = call(chain, "gannet_projectSupply", 2, "1000")
    assert int(by_pool["price"]["num"]) * pool.gpu == int(by_pool["price"]["den"]) * pool.stable
    assert len(by_pool["rows"]) == 2


# --- txs of every kind in blocks ---------------------------------------------------------


def test_included_economy_txs_show_their_kind_and_fields(chain: Chain) -> None:
    expected_kinds = {"delegate": "delegate", "stake": "create_validator",
                      "undelegate": "undelegate", "swap": "swap", "revenue": "pay_revenue",
                      "redelegate": "redelegate", "issue": "issue_stable",
                      "withdraw": "withdraw_rewards"}
    for label, kind in expected_kinds.items():
        h, _body = chain.txs[label]
        answer = call(chain, "gannet_getTransaction", "0x" + h.hex())
        assert answer["status"] == "included"
        assert answer["receipt"]["status"] == "ok"
        assert answer["tx"]["kind"] == kind
    stake = call(chain, "gannet_getTransaction", "0x" + chain.txs["stake"][0].hex())["tx"]
    assert stake["public_key"] == "0x" + KEYS["v2"].public_key.hex()
    assert stake["self_stake"] == str(STAKE)
    assert (stake["commission_bps"], stake["queen"]) == (1000, QUEEN_IN)
    swap = call(chain, "gannet_getTransaction", "0x" + chain.txs["swap"][0].hex())["tx"]
    assert (swap["denom_in"], swap["amount_in"], swap["min_out"]) == ("stable", str(10 * GPU),
                                                                       "0")
    redelegate = call(chain, "gannet_getTransaction",
                      "0x" + chain.txs["redelegate"][0].hex())["tx"]
    assert (redelegate["source"], redelegate["target"]) == (encode_address(V1),
                                                            encode_address(V2))
    block = call(chain, "gannet_getBlockByNumber", 1, True)
    assert {tx["kind"] for tx in block["txs"]} == {"delegate", "create_validator"}


# --- JSON-RPC errors through the real server ---------------------------------------------


@pytest.fixture(scope="module")
def server_url(chain: Chain) -> Iterator[str]:
    server = RpcServer(chain.methods, host="127.0.0.1", port=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="rpc-test", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server.url
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def rpc(url: str, method: str, params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize(("method", "params"), [
    ("gannet_getDelegations", ["gnt1notanaddress"]),
    ("gannet_getDelegations", [42]),
    ("gannet_getDelegations", []),
    ("gannet_getRewards", ["0x1234"]),
    ("gannet_getPool", [7]),
    ("gannet_getBuyback", [-1]),
    ("gannet_getBuyback", [10_001]),
    ("gannet_getBuyback", ["5"]),
    ("gannet_getSupply", [1]),
    ("gannet_projectSupply", [-1]),
    ("gannet_projectSupply", [1001]),
    ("gannet_projectSupply", [1, "-5", "1"]),
    ("gannet_projectSupply", [1, "5", "0"]),
    ("gannet_projectSupply", [1, "5", "abc"]),
    ("gannet_projectSupply", [1, "5", {"num": 1}]),
    ("gannet_projectSupply", [1, "5", {"num": "1", "den": "0"}]),
    ("gannet_projectSupply", {"years": 1, "price": "1", "bogus": 2}),
    ("gannet_getValidators", ["earliest"]),
])
def test_invalid_params_are_jsonrpc_errors(server_url: str, method: str, params: Any) -> None:
    reply = rpc(server_url, method, params)
    assert reply["error"]["code"] == -32602, reply


def test_methods_answer_over_the_server(server_url: str, chain: Chain) -> None:
    for method in ("gannet_getSupply", "gannet_getPool", "gannet_getBuyback",
                   "gannet_getValidators"):
        reply = rpc(server_url, method, [])
        assert "result" in reply, reply
    reply = rpc(server_url, "gannet_getDelegations", [encode_address(ALICE)])
    assert len(reply["result"]["delegations"]) == 2
