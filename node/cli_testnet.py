"""`gannet testnet`: the homes of N local validators that know each other.

    gannet testnet -n 4 --output ./mytestnet
    gannet node start --home ./mytestnet/node0      # and node1..node3

OUTPUT/nodeI is a complete node home (config.toml, genesis.json, validator and
node keys); OUTPUT/accounts/faucetJ.json are keystores (empty password) of
funded accounts; OUTPUT/testnet.json lists each node's moniker, home, node id,
validator address and ports for scripts and tests.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.files import write_file_atomic
from chain.keystore import save_keystore
from consensus.params import default_params
from genesis.document import GenesisError, dump_genesis, genesis_hash, validate_genesis
from genesis.testnet import (
    MAX_FAUCETS,
    MAX_NODES,
    Testnet,
    TestnetError,
    TestnetNode,
    TestnetSpec,
    build_testnet,
)
from node.cli_node import load_params_overrides
from node.config import (
    ConsensusConfig,
    HomePaths,
    NodeConfig,
    P2PConfig,
    RpcConfig,
    save_config,
)
from node.keys import KeyFileError, create_validator_files, save_key_file

SUMMARY_FILE = "testnet.json"
ACCOUNTS_DIR = "accounts"
FAUCET_SCRYPT_N = 2**14  # as devnet's dev account: a test key, opened often


@click.command("testnet")
@click.option("-n", "--validators", "nodes", default=4, show_default=True,
              type=click.IntRange(1, MAX_NODES), help="Number of validator nodes.")
@click.option("-o", "--output", default=Path("mytestnet"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the node homes (must be absent or empty).")
@click.option("--base-port", default=26656, show_default=True, type=click.IntRange(1, 65535),
              help="Node i listens for peers on BASE+2i and serves RPC on BASE+2i+1.")
@click.option("--chain-id", default="gannet-testnet", show_default=True)
@click.option("--block-time", "block_time_ms", default=1000, show_default=True,
              type=click.IntRange(10, 600_000), help="Block interval in milliseconds.")
@click.option("--funded-accounts", default=1, show_default=True,
              type=click.IntRange(0, MAX_FAUCETS), help="Funded faucet accounts to create.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON object of genesis parameter overrides, e.g. "
                   '{"staking": {"signed_blocks_window": 20}}.')
def testnet_cmd(nodes: int, output: Path, base_port: int, chain_id: str, block_time_ms: int,
                funded_accounts: int, params_file: Path | None) -> None:
    """Generate the homes of a local N-validator testnet."""
    _refuse_non_empty(output)
    params = load_params_overrides(params_file, default_params(block_time_ms))
    spec = TestnetSpec(nodes=nodes, genesis_time_ms=time.time_ns() // 1_000_000,
                       chain_id=chain_id, block_time_ms=block_time_ms, base_port=base_port,
                       funded_accounts=funded_accounts)
    try:
        testnet = build_testnet(spec, SigningKey.generate)
        if params_file is not None:
            testnet = replace(testnet, genesis=replace(testnet.genesis, params=params))
            validate_genesis(testnet.genesis)
    except (TestnetError, GenesisError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        write_testnet(output, testnet, block_time_ms)
    except (GenesisError, KeyFileError, OSError) as exc:
        _remove_contents(output)  # half a testnet would only be refused next time
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {nodes} node home(s) to {output}; summary in {output / SUMMARY_FILE}")
    for node in testnet.nodes:
        click.echo(f"  {node.moniker}: rpc http://127.0.0.1:{node.rpc_port}  "
                   f"p2p {node.p2p_port}  validator {node.validator_address}")


def _refuse_non_empty(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise click.ClickException(
            f"{output} exists and is not an empty directory; refusing to overwrite it")


def _remove_contents(output: Path) -> None:
    for child in output.iterdir() if output.is_dir() else ():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def write_testnet(output: Path, testnet: Testnet, block_time_ms: int) -> None:
    """Write every node home, the faucet keystores, then the summary (last: it marks done)."""
    for node in testnet.nodes:
        write_node_home(HomePaths(output / node.moniker), testnet, node, block_time_ms)
    (output / ACCOUNTS_DIR).mkdir(parents=True, exist_ok=True)
    for index, key in enumerate(testnet.faucets):
        save_keystore(faucet_keystore(output, index), key, "", scrypt_n=FAUCET_SCRYPT_N)
    summary = json.dumps(testnet_summary(output, testnet), indent=2) + "\n"
    write_file_atomic(output / SUMMARY_FILE, summary.encode(), 0o644)


def write_node_home(paths: HomePaths, testnet: Testnet, node: TestnetNode,
                    block_time_ms: int) -> None:
    """One node home: keys, the shared genesis, and a config wired to every other node."""
    create_validator_files(paths.validator_key_file, paths.sign_state_file, node.validator_key)
    save_key_file(paths.node_key_file, node.node_key)
    dump_genesis(testnet.genesis, paths.genesis_file)
    save_config(paths.config_file, node_config(node, block_time_ms))


def node_config(node: TestnetNode, block_time_ms: int) -> NodeConfig:
    """The config.toml of a testnet node."""
    return NodeConfig(
        moniker=node.moniker,
        rpc=RpcConfig(port=node.rpc_port),
        p2p=P2PConfig(port=node.p2p_port, persistent_peers=node.persistent_peers),
        consensus=ConsensusConfig(block_time_ms=block_time_ms),
    )


def faucet_keystore(output: Path, index: int) -> Path:
    """Where faucet `index`'s keystore goes."""
    return output / ACCOUNTS_DIR / f"faucet{index}.json"


def testnet_summary(output: Path, testnet: Testnet) -> dict[str, Any]:
    """The testnet.json document: the chain, each node, each faucet."""
    return {
        "chain_id": testnet.genesis.chain_id,
        "genesis_hash": genesis_hash(testnet.genesis).hex(),
        "nodes": [
            {
                "moniker": node.moniker,
                "home": str((output / node.moniker).resolve()),
                "node_id": node.node_id.hex(),
                "validator_address": node.validator_address,
                "p2p_port": node.p2p_port,
                "rpc_port": node.rpc_port,
                "rpc_url": f"http://127.0.0.1:{node.rpc_port}/",
            }
            for node in testnet.nodes
        ],
        "faucets": [
            {"address": encode_address(address_from_public_key(key.public_key)),
             "keystore": str(faucet_keystore(output, index).resolve())}
            for index, key in enumerate(testnet.faucets)
        ],
    }
