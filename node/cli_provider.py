"""`gannet provider start`: run a GPU provider's worker against a node (`node.provider`).

    gannet provider start --home DIR --rpc URL [--keystore FILE] [--collateral X]

The provider's key is --keystore (default: DIR/provider_key.json, the key a
devnet home holds). The worker registers with --collateral GPU (default: the
chain's minimum) if the chain does not know it yet, then computes, commits and
reveals every job assigned to it until SIGINT or SIGTERM. Compute runs on CuPy
when a GPU is there, NumPy otherwise (GANNET_COMPUTE_BACKEND forces one).

--cheat-fraction F corrupts floor(F x tiles) tiles of every job. It exists for
tests and demos of the slashing path only: the provider gets caught and loses
collateral, and the worker says so loudly at start and on every job.
"""

from __future__ import annotations

import logging
import signal
import threading
from fractions import Fraction
from pathlib import Path

import click

from node.cli_wallet import RPC_ENV, RPC_TIMEOUT_S, rpc_call, unlock_keystore
from node.cli_wallet_economy import parse_cli_amount
from node.logs import configure_logging
from node.provider import CHEAT_WARNING, ProviderOptions, ProviderWorker
from node.rpc.client import RpcClient
from vm.backend import BackendError, get_backend

PROVIDER_KEY_NAME = "provider_key.json"
DEFAULT_RPC = "http://127.0.0.1:8545"
log = logging.getLogger("gannet.provider")


@click.group("provider")
def provider_group() -> None:
    """Run a GPU provider: take jobs, compute, commit and reveal results."""


def parse_fraction(text: str) -> Fraction:
    """A cheat fraction in [0, 1], exact (e.g. 0.1 or 1/10)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{text!r} is not a number", param_hint="--cheat-fraction") \
            from None
    if not 0 <= value <= 1:
        raise click.BadParameter(f"must be in [0, 1], got {text}", param_hint="--cheat-fraction")
    return value


@provider_group.command("start")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The provider's home (holds provider_key.json unless --keystore).")
@click.option("--rpc", "rpc_url", envvar=RPC_ENV, default=DEFAULT_RPC, show_default=True,
              help=f"Node JSON-RPC URL (env {RPC_ENV}).")
@click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path),
              help=f"The provider's keystore (default: HOME/{PROVIDER_KEY_NAME}).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File whose first line is the keystore password.")
@click.option("--collateral", "collateral_text",
              help="Collateral to post when registering: base units or GPU (1000gpu); "
                   "default: the chain's minimum.")
@click.option("--licences", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Node licences to bind when registering.")
@click.option("--gpu", "gpu_text", help="GPU description stored on chain (default: the "
                                        "compute backend's).")
@click.option("--poll", "poll_s", type=click.FloatRange(0.01, 60), default=0.2,
              show_default=True, help="Seconds between head checks.")
@click.option("--cheat-fraction", "cheat_text", default="0", show_default=True,
              help="TESTS AND DEMOS ONLY: corrupt this fraction of every job's tiles "
                   "(the provider gets caught and slashed).")
def start_command(home: Path, rpc_url: str, keystore: Path | None, password_file: Path | None,
                  collateral_text: str | None, licences: int, gpu_text: str | None,
                  poll_s: float, cheat_text: str) -> None:
    """Register if needed and work every job the chain assigns, until SIGINT/SIGTERM."""
    cheat = parse_fraction(cheat_text)
    collateral = None if collateral_text is None else parse_cli_amount(collateral_text,
                                                                       "--collateral")
    configure_logging("info")
    key = unlock_keystore(keystore or home / PROVIDER_KEY_NAME, password_file)
    client = RpcClient(rpc_url, timeout=RPC_TIMEOUT_S)
    if collateral is None:
        limits = rpc_call(client, rpc_url, "gannet_getKernels")
        collateral = int(limits["provider_min_collateral"])
    options = ProviderOptions(collateral=collateral, licences=licences,
                              gpu=gpu_text if gpu_text is not None else describe_backend(),
                              cheat_fraction=cheat, poll_s=poll_s)
    worker = ProviderWorker(client, key, options)
    click.echo(f"provider {worker.bech32} following {rpc_url}", err=True)
    if cheat:
        click.echo("WARNING: " + CHEAT_WARNING % cheat, err=True)
    run_until_signal(worker)


def describe_backend() -> str:
    """What the compute backend is, for the provider record (e.g. "numpy" or "cupy")."""
    try:
        return get_backend().name
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None


def run_until_signal(worker: ProviderWorker) -> None:
    """Run the worker on this thread until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.run(stop)
    log.info("provider stopped")
