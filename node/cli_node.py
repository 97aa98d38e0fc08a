"""`gannet node init|start` and `gannet devnet`."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import click

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.errors import ChainError
from chain.keystore import load_keystore, save_keystore
from chain.types import BASE_UNITS_PER_GPU
from consensus.params import NetworkParams, ParamsError, default_params, params_with_overrides
from genesis.document import (
    GenesisError,
    add_account,
    add_validator,
    dump_genesis,
    load_genesis,
    new_genesis,
    set_pool,
    set_stable_issuer,
)
from node.cli_provider import PROVIDER_KEY_NAME
from node.config import (
    ConfigError,
    ConsensusConfig,
    HomePaths,
    NodeConfig,
    P2PConfig,
    RpcConfig,
    load_config,
    save_config,
)
from node.keys import (
    KeyFileError,
    create_validator_files,
    load_key_file,
    load_or_create_node_key,
)
from node.logs import configure_logging
from node.provider import ProviderOptions, ProviderWorker
from node.rpc.client import RpcClient
from node.service import Node, NodeError

DEVNET_CHAIN_ID = "gannet-devnet"
DEVNET_FUNDS = 1_000_000 * BASE_UNITS_PER_GPU
DEVNET_STABLE = 1_000_000 * BASE_UNITS_PER_GPU
DEVNET_POWER = 1000 * BASE_UNITS_PER_GPU
# The devnet's pool starts at 4 GPU per stable unit, seeded from the liquidity allocation;
# the dev account issues stable units and holds node licences to bind.
DEVNET_POOL_GPU = 4_000_000 * BASE_UNITS_PER_GPU
DEVNET_POOL_STABLE = 1_000_000 * BASE_UNITS_PER_GPU
DEVNET_LICENCES = 20
DEV_KEY_NAME = "dev_account.json"
# The devnet's provider (its key in the home, run inside `gannet devnet`) holds GPU for
# collateral and fees; the validator holds GPU to pay the fees of its attestations.
DEVNET_PROVIDER_FUNDS = 10_000 * BASE_UNITS_PER_GPU
DEVNET_VALIDATOR_FUNDS = 1_000 * BASE_UNITS_PER_GPU
log = logging.getLogger("gannet.cli")


@click.group("node")
def node_group() -> None:
    """Initialise and run a node."""


@node_group.command("init")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--chain-id", default="gannet-local", show_default=True)
@click.option("--moniker", default="gannet", show_default=True)
@click.option("--rpc-port", default=8545, show_default=True, type=click.IntRange(0, 65535))
@click.option("--p2p-port", default=26656, show_default=True, type=click.IntRange(0, 65535),
              help="Peer-to-peer listen port (0: pick a free port at start).")
def init_cmd(home: Path, chain_id: str, moniker: str, rpc_port: int, p2p_port: int) -> None:
    """Write config, a validator key, a node key and (if absent) a genesis naming it sole
    validator."""
    paths = HomePaths(home)
    if paths.config_file.exists():
        raise click.ClickException(f"{paths.config_file} already exists")
    key = SigningKey.generate()
    _guard(create_validator_files, paths.validator_key_file, paths.sign_state_file, key)
    _guard(load_or_create_node_key, paths.node_key_file)
    save_config(paths.config_file, NodeConfig(moniker=moniker, rpc=RpcConfig(port=rpc_port),
                                              p2p=P2PConfig(port=p2p_port)))
    if not paths.genesis_file.exists():
        g = new_genesis(chain_id, time.time_ns() // 1_000_000)
        g = add_validator(g, key.public_key, DEVNET_POWER, _bech32(key), moniker)
        dump_genesis(g, paths.genesis_file)
    click.echo(f"initialised {home}: validator {_bech32(key)}")


_SKIP_DOUBLE_SIGN_HELP = (
    "Sign even without the record of what this validator last signed (after a wiped "
    "data dir). Unsafe: signing twice at one height gets the validator slashed.")


@node_group.command("start")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--unsafe-skip-double-sign-check", "skip_double_sign_check", is_flag=True,
              help=_SKIP_DOUBLE_SIGN_HELP)
def start_cmd(home: Path, skip_double_sign_check: bool) -> None:
    """Run the node in the foreground until SIGINT or SIGTERM."""
    run_node(HomePaths(home), skip_double_sign_check)


@click.command("devnet")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".gannet" / "devnet", show_default=True)
@click.option("--rpc-port", default=8545, show_default=True, type=click.IntRange(0, 65535))
@click.option("--block-time", "block_time_ms", default=1000, show_default=True,
              type=click.IntRange(10, 600_000), help="Block interval in milliseconds.")
@click.option("--p2p-port", default=26656, show_default=True, type=click.IntRange(0, 65535),
              help="Peer-to-peer listen port (0: pick a free port at start).")
@click.option("--reset", is_flag=True, help="Delete the devnet home first.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON object of genesis parameter overrides for a new devnet, e.g. "
                   '{"tokenomics": {"halving_period_blocks": 100}}.')
@click.option("--unsafe-skip-double-sign-check", "skip_double_sign_check", is_flag=True,
              help=_SKIP_DOUBLE_SIGN_HELP)
@click.option("--provider/--no-provider", "with_provider", default=True, show_default=True,
              help="Run the devnet's GPU provider worker (its key: HOME/provider_key.json); "
                   "a new home made with --no-provider has no provider account at all.")
def devnet_cmd(home: Path, rpc_port: int, block_time_ms: int, p2p_port: int, reset: bool,
               params_file: Path | None, skip_double_sign_check: bool,
               with_provider: bool) -> None:
    """Run a one-validator chain on 127.0.0.1 with a funded dev account, the committee
    verifier and a GPU provider, so a compute job completes end to end."""
    if reset and home.exists():
        shutil.rmtree(home)
    paths = HomePaths(home)
    if not paths.config_file.exists():
        params = load_params_overrides(params_file, default_params(block_time_ms))
        make_devnet_home(paths, rpc_port, block_time_ms, p2p_port, params, with_provider)
    elif params_file is not None:
        raise click.ClickException(
            f"{home} already holds a devnet; --params applies only to a new one (add --reset)")
    else:
        _update_devnet_config(paths, rpc_port, block_time_ms, p2p_port)
        # Homes made before node keys existed get one now.
        _guard(load_or_create_node_key, paths.node_key_file)
    _print_devnet_banner(paths, rpc_port)
    provider = _devnet_provider_key(paths) if with_provider else None
    run_node(paths, skip_double_sign_check, **({"provider_key": provider} if provider else {}))


def load_params_overrides(path: Path | None, base: NetworkParams) -> NetworkParams:
    """`base` with the overrides in the JSON file at `path` (none: `base`); one-line errors."""
    if path is None:
        return base
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"cannot read parameter overrides {path}: {exc}") from None
    try:
        return params_with_overrides(base, doc)
    except ParamsError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def make_devnet_home(paths: HomePaths, rpc_port: int, block_time_ms: int,
                     p2p_port: int = 26656, params: NetworkParams | None = None,
                     with_provider: bool = True) -> None:
    """Create a devnet home: validator key, node key, dev account keystore, genesis, config;
    with a provider: its keystore, its funded account, and GPU for the validator's fees."""
    validator = SigningKey.generate()
    dev = SigningKey.generate()
    _guard(create_validator_files, paths.validator_key_file, paths.sign_state_file,
           validator)
    _guard(load_or_create_node_key, paths.node_key_file)
    _guard(save_keystore, paths.home / DEV_KEY_NAME, dev, "", scrypt_n=2**14)
    provider = SigningKey.generate() if with_provider else None
    if provider is not None:
        _guard(save_keystore, paths.home / PROVIDER_KEY_NAME, provider, "", scrypt_n=2**14)
    # The genesis block-time target matches the devnet's pace, so every duration
    # derived from it (unbonding, locks, halving) is counted in real blocks.
    params = default_params(block_time_ms) if params is None else params
    g = new_genesis(DEVNET_CHAIN_ID, time.time_ns() // 1_000_000, params)
    g = add_account(g, _bech32(dev), DEVNET_FUNDS, stable=DEVNET_STABLE,
                    licences=DEVNET_LICENCES)
    g = set_stable_issuer(g, _bech32(dev))
    g = set_pool(g, DEVNET_POOL_GPU, DEVNET_POOL_STABLE, _bech32(dev))
    g = add_validator(g, validator.public_key, DEVNET_POWER, _bech32(validator), "devnet")
    if provider is not None:
        g = add_account(g, _bech32(validator), DEVNET_VALIDATOR_FUNDS)
        g = add_account(g, _bech32(provider), DEVNET_PROVIDER_FUNDS)
    dump_genesis(g, paths.genesis_file)
    config = NodeConfig(moniker="devnet", rpc=RpcConfig(port=rpc_port),
                        consensus=ConsensusConfig(block_time_ms=block_time_ms),
                        p2p=P2PConfig(port=p2p_port))
    save_config(paths.config_file, config)


def _update_devnet_config(paths: HomePaths, rpc_port: int, block_time_ms: int,
                          p2p_port: int) -> None:
    config = _guard(load_config, paths.config_file)
    config = replace(config, rpc=replace(config.rpc, port=rpc_port),
                     consensus=replace(config.consensus, block_time_ms=block_time_ms),
                     p2p=replace(config.p2p, port=p2p_port))
    save_config(paths.config_file, config)


def _print_devnet_banner(paths: HomePaths, rpc_port: int) -> None:
    keystore = paths.home / DEV_KEY_NAME
    address = json.loads(keystore.read_text())["address"]
    click.echo(
        f"Gannet devnet ({DEVNET_CHAIN_ID})\n"
        f"  home:         {paths.home}\n"
        f"  rpc:          http://127.0.0.1:{rpc_port}\n"
        f"  dev account:  {address} (1,000,000 GPU, 1,000,000 stable, {DEVNET_LICENCES} "
        f"node licences; it issues the stable unit)\n"
        f"  pool:         4,000,000 GPU / 1,000,000 stable (try: gannet wallet swap)\n"
        f"  dev keystore: {keystore} (password: empty)\n"
        f"  try:          gannet wallet balance {address}\n"
        f"  stop:         Ctrl-C (the chain resumes on the next start; --reset wipes it)",
        err=True,
    )


def _devnet_provider_key(paths: HomePaths) -> SigningKey | None:
    """The devnet provider's key (None, with a note, for a home made before providers)."""
    path = paths.home / PROVIDER_KEY_NAME
    if not path.exists():
        click.echo(f"no {path}: running without a provider (--reset makes one)", err=True)
        return None
    return _guard(load_keystore, path, "")


def run_node(paths: HomePaths, skip_double_sign_check: bool = False,
             provider_key: SigningKey | None = None) -> None:
    """Load a home, run its node (and a provider worker with `provider_key`) until a signal,
    exit non-zero on a fatal error."""
    config = _guard(load_config, paths.config_file)
    configure_logging(config.log_level)
    genesis = _guard(load_genesis, paths.genesis_file)
    key = _guard(load_key_file, paths.validator_key_file) \
        if paths.validator_key_file.exists() else None
    # Passed only when asked for, so a Node that predates the option still starts.
    options = {"skip_double_sign_check": True} if skip_double_sign_check else {}
    try:
        asyncio.run(_serve(paths, config, genesis, key, options, provider_key))
    except NodeError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # e.g. the RPC port is taken
        raise click.ClickException(f"node failed: {exc}") from exc


async def _serve(paths, config, genesis, key, options, provider_key=None) -> None:
    node = Node(paths, config, genesis, key, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.stop)
    stop_provider = threading.Event()
    if provider_key is not None:
        _start_provider_thread(provider_key, genesis, config.rpc.port, stop_provider)
    try:
        await node.run()
    finally:
        stop_provider.set()
    log.info("node stopped")
    sys.stderr.flush()


def _start_provider_thread(key: SigningKey, genesis, rpc_port: int,
                           stop: threading.Event) -> None:
    """Run a provider worker on a thread, over this node's RPC, until `stop`."""
    client = RpcClient(f"http://127.0.0.1:{rpc_port}/", timeout=10.0)
    options = ProviderOptions(collateral=genesis.params.compute.provider_min_collateral,
                              gpu="devnet")
    worker = ProviderWorker(client, key, options)
    log.info("devnet provider %s", worker.bech32)
    threading.Thread(target=worker.run, args=(stop,), name="gannet-provider",
                     daemon=True).start()


def _guard(fn, *args, **kwargs):
    """Run `fn`, turning expected failures into a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except (ConfigError, GenesisError, KeyFileError, ChainError, NodeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _bech32(key: SigningKey) -> str:
    return encode_address(address_from_public_key(key.public_key))
