"""The local testnet generator: N validators, their node keys, one genesis, each node's wiring.

`build_testnet` is pure: keys come from the `KeySource` it is given, time from
its caller. Node `i` is moniker `node<i>`, listens for peers on
`base_port + 2*i` and serves JSON-RPC on `base_port + 2*i + 1`, and names every
other node as a persistent peer `<node id hex>@<host>:<p2p port>` (the node id is
the node key's public key). Every validator has the same power, the network's
minimum validator stake, bonded for an operator account of its own key, funded
so it can pay fees, taking `commission_bps` of its rewards; `funded_accounts`
faucet accounts hold the rest of what a test network spends. With `pool_gpu`
and `pool_stable` (both positive) the GPU/stable pool is seeded, its LP shares
held by the first faucet (the first operator when there is none). Writing the
files is the CLI's job (`gannet testnet`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.types import BASE_UNITS_PER_GPU
from consensus.params import default_params
from genesis.document import (
    DEFAULT_COMMISSION_BPS,
    Genesis,
    add_account,
    add_validator,
    new_genesis,
    set_pool,
)

MAX_NODES = 100
MIN_PORT = 1
MAX_PORT = 65535
PORTS_PER_NODE = 2
OPERATOR_GPU = 10_000 * BASE_UNITS_PER_GPU
FAUCET_GPU = 1_000_000 * BASE_UNITS_PER_GPU
FAUCET_STABLE = 1_000_000 * BASE_UNITS_PER_GPU
MAX_FAUCETS = 100

KeySource = Callable[[], SigningKey]


class TestnetError(Exception):
    """The testnet asked for cannot be built (node count, ports, chain id, funds)."""

    __test__ = False  # not a pytest test class despite its name


@dataclass(frozen=True, slots=True)
class TestnetSpec:
    """What to generate: how many validators, which chain, which ports, how many faucets."""

    __test__ = False

    nodes: int
    genesis_time_ms: int
    chain_id: str = "gannet-testnet"
    block_time_ms: int = 1000
    base_port: int = 26656
    host: str = "127.0.0.1"
    funded_accounts: int = 1
    commission_bps: int = DEFAULT_COMMISSION_BPS
    pool_gpu: int = 0
    pool_stable: int = 0


@dataclass(frozen=True, slots=True)
class TestnetNode:
    """One node of a testnet: its keys, its ports and the peers it dials."""

    __test__ = False

    index: int
    moniker: str
    validator_key: SigningKey
    node_key: SigningKey
    p2p_port: int
    rpc_port: int
    persistent_peers: tuple[str, ...]

    @property
    def node_id(self) -> bytes:
        """The node id peers check in the handshake: the node key's public key."""
        return bytes(self.node_key.public_key)

    @property
    def validator_address(self) -> str:
        """The bech32 address of the validator key (also its operator account)."""
        return encode_address(address_from_public_key(self.validator_key.public_key))


@dataclass(frozen=True, slots=True)
class Testnet:
    """A generated testnet: the genesis every node shares, the nodes, the faucet keys."""

    __test__ = False

    genesis: Genesis
    nodes: tuple[TestnetNode, ...]
    faucets: tuple[SigningKey, ...]


def build_testnet(spec: TestnetSpec, new_key: KeySource) -> Testnet:
    """Generate a testnet: for each node a validator key then a node key, then the faucets.

    Raises TestnetError when the spec is out of range; a genesis rule the
    result would break surfaces as genesis.document.GenesisError.
    """
    validate_spec(spec)
    keys = [(new_key(), new_key()) for _ in range(spec.nodes)]
    faucets = tuple(new_key() for _ in range(spec.funded_accounts))
    ports = [compute_node_ports(spec.base_port, index) for index in range(spec.nodes)]
    node_ids = [bytes(node_key.public_key) for _, node_key in keys]
    nodes = tuple(
        TestnetNode(
            index=index,
            moniker=f"node{index}",
            validator_key=validator_key,
            node_key=node_key,
            p2p_port=ports[index][0],
            rpc_port=ports[index][1],
            persistent_peers=tuple(
                format_peer(node_ids[other], spec.host, ports[other][0])
                for other in range(spec.nodes) if other != index
            ),
        )
        for index, (validator_key, node_key) in enumerate(keys)
    )
    return Testnet(build_genesis(spec, nodes, faucets), nodes, faucets)


def validate_spec(spec: TestnetSpec) -> None:
    """Raise TestnetError unless 1..MAX_NODES nodes fit their ports and faucets are bounded."""
    if not 1 <= spec.nodes <= MAX_NODES:
        raise TestnetError(f"node count must be 1..{MAX_NODES}, got {spec.nodes}")
    last = spec.base_port + PORTS_PER_NODE * spec.nodes - 1
    if spec.base_port < MIN_PORT or last > MAX_PORT:
        raise TestnetError(
            f"ports {spec.base_port}..{last} for {spec.nodes} node(s) are outside "
            f"{MIN_PORT}..{MAX_PORT}")
    if not 0 <= spec.funded_accounts <= MAX_FAUCETS:
        raise TestnetError(
            f"funded accounts must be 0..{MAX_FAUCETS}, got {spec.funded_accounts}")
    if not spec.host:
        raise TestnetError("host must not be empty")


def compute_node_ports(base_port: int, index: int) -> tuple[int, int]:
    """(p2p port, rpc port) of node `index`: two consecutive ports from base + 2*index."""
    p2p = base_port + PORTS_PER_NODE * index
    return p2p, p2p + 1


def format_peer(node_id: bytes, host: str, port: int) -> str:
    """A persistent peer entry as the config reads it: `<node id hex>@<host>:<port>`."""
    return f"{node_id.hex()}@{host}:{port}"


def build_genesis(
    spec: TestnetSpec, nodes: tuple[TestnetNode, ...], faucets: tuple[SigningKey, ...]
) -> Genesis:
    """One genesis: every operator funded and bonded at the minimum stake, the faucets, the pool."""
    genesis = new_genesis(spec.chain_id, spec.genesis_time_ms, default_params(spec.block_time_ms))
    power = genesis.params.staking.min_validator_stake
    for node in nodes:
        genesis = add_account(genesis, node.validator_address, OPERATOR_GPU)
    for faucet in faucets:
        genesis = add_account(genesis, _address(faucet), FAUCET_GPU, stable=FAUCET_STABLE)
    for node in nodes:
        genesis = add_validator(
            genesis,
            node.validator_key.public_key,
            power,
            node.validator_address,
            node.moniker,
            spec.commission_bps,
        )
    if spec.pool_gpu or spec.pool_stable:
        owner = _address(faucets[0]) if faucets else nodes[0].validator_address
        genesis = set_pool(genesis, spec.pool_gpu, spec.pool_stable, owner)
    return genesis


def seeded_key_source(seed: bytes) -> KeySource:
    """A deterministic key source: key k has seed SHA-256(seed || k as 8 bytes big-endian).

    For reproducible testnets and tests only: anyone who knows `seed` holds every key.
    """
    counter = 0

    def next_key() -> SigningKey:
        nonlocal counter
        key = SigningKey.from_seed(sha256(seed + counter.to_bytes(8, "big")))
        counter += 1
        return key

    return next_key


def _address(key: SigningKey) -> str:
    return encode_address(address_from_public_key(key.public_key))
