"""`gannet job`: submit a proof-of-compute job, follow it, list jobs.

    gannet job submit --kernel matmul_i8 --param m=256 --param n=256 --param k=256 \\
        --param tile=16 --price 100 --deadline-blocks 50 --keystore K
    gannet job status ID
    gannet job list [--provider ADDR] [--client ADDR] [--state passed] [--open]

`submit` checks the kernel and its params locally (a typo never costs a
password prompt or a fee), draws a random seed unless --seed is given, sets the
commit deadline --deadline-blocks past the node's head, escrows --price stable
base units and, with --wait (the default), prints the job id and its provider.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from chain.records import SubmitJob
from node.cli_wallet import (
    RPC_ENV,
    RPC_TIMEOUT_S,
    TxOptions,
    read_keystore_address,
    rpc_call,
    submit_tx,
    tx_options,
)
from node.cli_wallet_economy import parse_cli_amount
from node.rpc.client import RpcClient
from vm.kernels import KernelError, get_kernel, kernel_names

DEFAULT_RPC = "http://127.0.0.1:8545"
SEED_BYTES = 32
MAX_LISTED = 1000

_rpc_option = click.option("--rpc", "rpc_url", envvar=RPC_ENV, default=DEFAULT_RPC,
                           show_default=True, help=f"Node JSON-RPC URL (env {RPC_ENV}).")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print the node's answer as JSON.")


@click.group("job")
def job_group() -> None:
    """Submit proof-of-compute jobs and follow them."""


# --- input checks -----------------------------------------------------------------------------


def parse_params(kernel_name: str, pairs: tuple[str, ...]) -> tuple[int, ...]:
    """The kernel's params, in its schema order, from NAME=VALUE pairs (checked by the kernel)."""
    try:
        kernel = get_kernel(kernel_name)
    except KernelError as exc:
        raise click.BadParameter(str(exc), param_hint="--kernel") from None
    raw: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--param")
        if name in raw:
            raise click.BadParameter(f"{name!r} given twice", param_hint="--param")
        try:
            raw[name] = int(value.strip(), 10)
        except ValueError:
            raise click.BadParameter(f"{name}: {value!r} is not an integer",
                                     param_hint="--param") from None
    try:
        params = kernel.validate_params(raw)
    except KernelError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    return tuple(value for _, value in params.values)


def parse_seed(text: str | None) -> bytes:
    """The job seed: 64 hex digits, or 32 random bytes when not given."""
    if text is None:
        return os.urandom(SEED_BYTES)
    stripped = text.strip().removeprefix("0x").removeprefix("0X")
    try:
        seed = bytes.fromhex(stripped)
    except ValueError:
        raise click.BadParameter("a seed is 64 hex digits", param_hint="--seed") from None
    if len(seed) != SEED_BYTES:
        raise click.BadParameter(f"a seed is {SEED_BYTES} bytes (64 hex digits), got "
                                 f"{len(seed)}", param_hint="--seed")
    return seed


# --- submit -------------------------------------------------------------------------------------


@job_group.command("submit")
@click.option("--kernel", "kernel_name", required=True,
              help=f"Kernel to run: {', '.join(kernel_names())}.")
@click.option("--param", "pairs", multiple=True, metavar="NAME=VALUE",
              help="A kernel parameter (repeat for each), e.g. --param m=256.")
@click.option("--price", "price_text", required=True,
              help="Price in stable base units, escrowed until the job settles.")
@click.option("--deadline-blocks", type=click.IntRange(min=1), default=50, show_default=True,
              help="The result must be committed within this many blocks of the head.")
@click.option("--seed", "seed_text", help="Input seed, 64 hex digits (default: random).")
@tx_options
def submit_command(kernel_name: str, pairs: tuple[str, ...], price_text: str,
                   deadline_blocks: int, seed_text: str | None, options: TxOptions) -> None:
    """Submit a job: the chain assigns a provider, samples and verifies its result."""
    params = parse_params(kernel_name, pairs)
    price = parse_cli_amount(price_text, "--price", gpu=False)
    seed = parse_seed(seed_text)
    client = RpcClient(options.rpc_url, timeout=RPC_TIMEOUT_S)
    head = rpc_call(client, options.rpc_url, "gannet_blockNumber")
    if not isinstance(head, int):
        raise click.ClickException(f"node returned a malformed head height: {head!r:.40}")
    body = SubmitJob(kernel=kernel_name.encode(), params=params, seed=seed, price=price,
                     deadline=head + deadline_blocks)
    submit_tx(body, options)
    if options.wait:
        job = _find_submitted(client, options.rpc_url, read_keystore_address(options.keystore),
                              seed)
        if job is not None:
            click.echo(f"job {job['id']}: assigned to {job['provider']}, commit due by height "
                       f"{job['deadline']}")


def _find_submitted(client: RpcClient, url: str, address: str, seed: bytes) -> Any:
    """The newest job of `address` with this seed, or None."""
    jobs = rpc_call(client, url, "gannet_getJobs", {"client": address, "limit": 20})
    wanted = "0x" + seed.hex()
    return next((j for j in jobs if isinstance(j, dict) and j.get("seed") == wanted), None)


# --- status and list ----------------------------------------------------------------------------


@job_group.command("status")
@click.argument("job_id", type=click.IntRange(min=0))
@_rpc_option
@_json_option
def status_command(job_id: int, rpc_url: str, as_json: bool) -> None:
    """Show job JOB_ID: state, provider, root, sampled tiles, attestations, verdict."""
    client = RpcClient(rpc_url, timeout=RPC_TIMEOUT_S)
    job = rpc_call(client, rpc_url, "gannet_getJob", job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2, sort_keys=True))
        return
    for label, value in job_lines(job):
        click.echo(f"{label:<14}{value}")


def job_lines(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of a gannet_getJob answer, for people."""
    params = " ".join(f"{k}={v}" for k, v in job.get("params", {}).items())
    attestations = ", ".join(f"{a['validator'][:14]}...={a['verdict']}"
                             for a in job.get("attestations", [])) or "none"
    return [
        ("job", f"{job['id']} ({job['kind']})"),
        ("state", job["state"] + (f" ({job['fault']})" if job.get("fault") else "")),
        ("kernel", f"{job['kernel']} {params}"),
        ("client", str(job.get("client"))),
        ("provider", job["provider"]),
        ("price", f"{job['price']} stable base units"),
        ("deadline", f"commit by height {job['deadline']}"),
        ("root", str(job.get("root"))),
        ("sampled", f"{len(job.get('sampled', []))} of {job['tiles']} tiles, revealed "
                    f"{len(job.get('revealed', []))}"),
        ("attestations", attestations),
        ("verdict", str(job.get("verdict"))),
    ]


@job_group.command("list")
@click.option("--provider", help="Only jobs assigned to this provider address.")
@click.option("--client", help="Only jobs submitted by this address.")
@click.option("--state", help="Only jobs in this state (assigned, committed, sampled, "
                              "revealed, passed, failed, expired).")
@click.option("--open", "open_only", is_flag=True, help="Only jobs without an outcome yet.")
@click.option("--limit", type=click.IntRange(1, MAX_LISTED), default=20, show_default=True)
@_rpc_option
@_json_option
def list_command(provider: str | None, client: str | None, state: str | None, open_only: bool,
                 limit: int, rpc_url: str, as_json: bool) -> None:
    """List jobs, newest first."""
    filters: dict[str, Any] = {"limit": limit, "open": open_only}
    for name, value in (("provider", provider), ("client", client), ("state", state)):
        if value is not None:
            filters[name] = value
    rpc = RpcClient(rpc_url, timeout=RPC_TIMEOUT_S)
    jobs = rpc_call(rpc, rpc_url, "gannet_getJobs", filters)
    if as_json:
        click.echo(json.dumps(jobs, indent=2, sort_keys=True))
        return
    if not jobs:
        click.echo("no jobs")
        return
    click.echo(f"{'id':>6}  {'state':<9} {'kernel':<11} {'price':>12}  provider")
    for job in jobs:
        click.echo(f"{job['id']:>6}  {job['state']:<9} {job['kernel']:<11} "
                   f"{job['price']:>12}  {job['provider']}")
