"""The testnet generator: keys, ports, peers and a genesis every node can start from."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.crypto import SigningKey
from consensus.params import GPU, default_params
from genesis.document import (
    DEFAULT_COMMISSION_BPS,
    GenesisError,
    GenesisPool,
    genesis_from_json,
    genesis_hash,
    genesis_to_json,
    validate_genesis,
)
from genesis.testnet import (
    FAUCET_GPU,
    MAX_NODES,
    OPERATOR_GPU,
    TestnetError,
    TestnetSpec,
    build_testnet,
    compute_node_ports,
    format_peer,
    seeded_key_source,
)

SPEC = TestnetSpec(nodes=4, genesis_time_ms=1_700_000_000_000, chain_id="gannet-t",
                   block_time_ms=500, base_port=30000, funded_accounts=2)


def build(spec: TestnetSpec = SPEC, seed: bytes = b"seed"):
    return build_testnet(spec, seeded_key_source(seed))


def test_nodes_have_ports_monikers_and_distinct_keys() -> None:
    testnet = build()
    assert [n.moniker for n in testnet.nodes] == ["node0", "node1", "node2", "node3"]
    assert [(n.p2p_port, n.rpc_port) for n in testnet.nodes] == [
        (30000, 30001), (30002, 30003), (30004, 30005), (30006, 30007)]
    keys = [n.validator_key.public_key for n in testnet.nodes]
    keys += [n.node_key.public_key for n in testnet.nodes]
    keys += [k.public_key for k in testnet.faucets]
    assert len(set(keys)) == len(keys) == 4 + 4 + 2


def test_every_node_peers_with_every_other_node() -> None:
    testnet = build()
    for node in testnet.nodes:
        expected = [f"{other.node_id.hex()}@127.0.0.1:{other.p2p_port}"
                    for other in testnet.nodes if other is not node]
        assert list(node.persistent_peers) == expected
        assert len(expected) == 3
    assert format_peer(b"\x01" * 32, "h", 7) == "01" * 32 + "@h:7"


def test_genesis_has_equal_min_stake_validators_and_funded_operators() -> None:
    testnet = build()
    genesis = testnet.genesis
    validate_genesis(genesis)
    min_stake = default_params(500).staking.min_validator_stake
    assert genesis.chain_id == "gannet-t"
    assert genesis.genesis_time_ms == SPEC.genesis_time_ms
    assert genesis.params == default_params(500)
    assert [v.power for v in genesis.validators] == [min_stake] * 4
    balances = {a.address: a.gpu for a in genesis.accounts}
    for node, validator in zip(testnet.nodes, genesis.validators, strict=True):
        operator = address_from_public_key(node.validator_key.public_key)
        assert validator.public_key == node.validator_key.public_key
        assert validator.operator == operator
        assert validator.name == node.moniker
        assert balances[operator] == OPERATOR_GPU
    for faucet in testnet.faucets:
        assert balances[address_from_public_key(faucet.public_key)] == FAUCET_GPU
    assert len(genesis.accounts) == 4 + 2


def test_genesis_round_trips_through_json() -> None:
    genesis = build().genesis
    assert genesis_from_json(genesis_to_json(genesis)) == genesis


def test_same_seed_same_testnet_other_seed_other_keys() -> None:
    a, b, c = build(seed=b"one"), build(seed=b"one"), build(seed=b"two")
    assert genesis_hash(a.genesis) == genesis_hash(b.genesis)
    assert a.nodes == b.nodes
    assert genesis_hash(a.genesis) != genesis_hash(c.genesis)


def test_keys_come_from_the_source_in_order() -> None:
    drawn: list[SigningKey] = []
    source = seeded_key_source(b"order")

    def recording() -> SigningKey:
        drawn.append(source())
        return drawn[-1]

    testnet = build_testnet(dataclasses.replace(SPEC, nodes=2, funded_accounts=1), recording)
    n0, n1 = testnet.nodes
    assert drawn == [n0.validator_key, n0.node_key, n1.validator_key, n1.node_key,
                     testnet.faucets[0]]


def test_one_node_has_no_peers_and_no_faucets_is_allowed() -> None:
    testnet = build(dataclasses.replace(SPEC, nodes=1, funded_accounts=0))
    assert testnet.nodes[0].persistent_peers == ()
    assert testnet.faucets == ()
    assert len(testnet.genesis.validators) == 1


def test_max_nodes_fit_the_genesis_rules() -> None:
    testnet = build(dataclasses.replace(SPEC, nodes=MAX_NODES, base_port=1024))
    validate_genesis(testnet.genesis)
    assert len(testnet.genesis.validators) == MAX_NODES


@pytest.mark.parametrize(("change", "words"), [
    ({"nodes": 0}, "node count must be 1..100, got 0"),
    ({"nodes": MAX_NODES + 1}, "node count must be 1..100, got 101"),
    ({"base_port": 0}, "outside 1..65535"),
    ({"base_port": 65530}, "ports 65530..65537"),
    ({"funded_accounts": -1}, "funded accounts"),
    ({"funded_accounts": 101}, "funded accounts"),
    ({"host": ""}, "host"),
])
def test_bad_spec_is_refused(change: dict, words: str) -> None:
    with pytest.raises(TestnetError, match=words.replace(".", r"\.")):
        build(dataclasses.replace(SPEC, **change))


def test_bad_chain_id_is_a_genesis_error() -> None:
    with pytest.raises(GenesisError, match="chain_id"):
        build(dataclasses.replace(SPEC, chain_id="Not Valid"))


def test_last_port_may_be_65535() -> None:
    testnet = build(dataclasses.replace(SPEC, nodes=2, base_port=65532))
    assert testnet.nodes[-1].rpc_port == 65535


@settings(max_examples=50, deadline=None)
@given(base=st.integers(1, 60000), index=st.integers(0, MAX_NODES - 1))
def test_ports_of_different_nodes_never_overlap(base: int, index: int) -> None:
    p2p, rpc = compute_node_ports(base, index)
    assert rpc == p2p + 1
    for other in range(index):
        assert not {p2p, rpc} & set(compute_node_ports(base, other))


def test_validators_take_the_default_commission_or_the_spec_s() -> None:
    assert {v.commission_bps for v in build().genesis.validators} == {DEFAULT_COMMISSION_BPS}
    assert not any(v.queen for v in build().genesis.validators)
    genesis = build(dataclasses.replace(SPEC, commission_bps=0)).genesis
    assert {v.commission_bps for v in genesis.validators} == {0}
    with pytest.raises(GenesisError, match="commission_bps"):
        build(dataclasses.replace(SPEC, commission_bps=10_001))


def test_pool_is_seeded_when_asked_with_lp_shares_to_the_first_faucet() -> None:
    assert build().genesis.pool is None
    testnet = build(dataclasses.replace(SPEC, pool_gpu=1000 * GPU, pool_stable=500 * GPU))
    pool = testnet.genesis.pool
    assert pool == GenesisPool(
        1000 * GPU, 500 * GPU, address_from_public_key(testnet.faucets[0].public_key)
    )
    validate_genesis(testnet.genesis)
    alone = build(dataclasses.replace(SPEC, funded_accounts=0, pool_gpu=GPU, pool_stable=GPU))
    assert alone.genesis.pool is not None
    assert alone.genesis.pool.owner == address_from_public_key(
        alone.nodes[0].validator_key.public_key
    )
    with pytest.raises(GenesisError, match=r"pool\.stable"):
        build(dataclasses.replace(SPEC, pool_gpu=1))
