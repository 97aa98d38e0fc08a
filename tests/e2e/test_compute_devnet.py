"""Proof of compute end to end on a real `gannet devnet` (its provider and verifier inside).

- Honest jobs of both kernels, submitted with `gannet job submit`, pass: the
  devnet's provider commits and reveals, the validator's verifier attests, the
  price lands in the buyback treasury and the provider's credit grows by the
  job's tile count.
- A second provider started with `gannet provider start --cheat-fraction 0.5`
  registers, gets jobs, is caught on every one of them (half its tiles are bad,
  so any sample of 44 hits one), loses 1/10 of its collateral per job, and the
  client is refunded; the honest provider's jobs still pass.

Compute parameters are compressed (`gannet devnet --params`): tiles sampled one
block after the commit, reveal and attestation windows of 10 blocks.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from chain.address import encode_address
from chain.crypto import SigningKey
from chain.keystore import save_keystore
from chain.records import SubmitJob
from chain.state import module_address
from chain.types import BASE_UNITS_PER_GPU
from tests.e2e.harness import (
    DevnetProcess,
    DevSigner,
    GannetProcess,
    address_of,
    hash_hex,
    load_dev_key,
    raw_hex,
    run_gannet,
    wait_included,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
GPU = BASE_UNITS_PER_GPU
PARAMS = {"compute": {"challenge_delay_blocks": 1, "reveal_window_blocks": 10,
                      "attest_window_blocks": 10, "provider_min_collateral": 100 * GPU}}
TREASURY = encode_address(module_address("treasury"))
I8 = ("matmul_i8", {"m": 256, "n": 256, "k": 256, "tile": 16})  # 256 tiles
F32 = ("matmul_f32", {"m": 128, "n": 128, "k": 128, "tile": 16})  # 64 tiles
CHEAT_JOBS = 8
TIMEOUT_S = 30.0


def _cli_submit(node: DevnetProcess, kernel: str, params: dict[str, int], price: int) -> int:
    args = ["job", "submit", "--kernel", kernel, "--price", str(price), "--deadline-blocks",
            "30", "--keystore", str(node.home / "dev_account.json"), "--rpc", node.url]
    for name, value in params.items():
        args += ["--param", f"{name}={value}"]
    done = run_gannet(args, env={"GANNET_PASSWORD": ""})
    assert done.returncode == 0, done.stderr + done.stdout
    match = re.search(r"^job (\d+): assigned to (\S+),", done.stdout, re.M)
    assert match, done.stdout
    return int(match.group(1))


def _settled(node: DevnetProcess, job_ids: list[int]) -> list[dict[str, Any]] | None:
    jobs = [node.rpc("gannet_getJob", j) for j in job_ids]
    return jobs if all(j["verdict"] is not None or j["state"] in ("failed", "expired")
                       for j in jobs) else None


def _provider(node: DevnetProcess, address: str) -> dict[str, Any] | None:
    return next((p for p in node.rpc("gannet_getProviders") if p["address"] == address), None)


def _stable(node: DevnetProcess, address: str) -> int:
    return int(node.rpc("gannet_getAccount", address)["stable"])


def _submit_batch(node: DevnetProcess, dev: DevSigner, batch: int) -> list[dict[str, Any]]:
    """CHEAT_JOBS small matmul_i8 jobs from the dev account, waited for until settled."""
    nonce = node.rpc("gannet_getAccount", dev.address)["pending_nonce"]
    head = node.rpc("gannet_blockNumber")
    txs = [dev.sign(SubmitJob(kernel=b"matmul_i8", params=(128, 128, 128, 16),
                              seed=bytes([batch, n]) * 16, price=100 + n, deadline=head + 30),
                    nonce + n, 1000) for n in range(CHEAT_JOBS)]
    for stx in txs:
        node.rpc("gannet_sendRawTransaction", raw_hex(stx))
    wait_included(node.url, [hash_hex(stx) for stx in txs])
    newest = node.rpc("gannet_getJobs", {"client": dev.address, "limit": CHEAT_JOBS})
    ids = sorted(j["id"] for j in newest)
    return wait_until(lambda: _settled(node, ids), TIMEOUT_S, "the jobs to settle", log=node)


def test_honest_jobs_pass_and_a_cheating_provider_is_caught(tmp_path: Path) -> None:
    started = time.monotonic()
    with DevnetProcess(tmp_path / "devnet", block_time_ms=BLOCK_TIME_MS, params=PARAMS,
                       provider=True) as node:
        honest = wait_until(lambda: node.rpc("gannet_getProviders"), TIMEOUT_S,
                            "the devnet provider to register", log=node)[0]
        assert honest["status"] == "active" and honest["collateral"] == str(100 * GPU)

        # Honest jobs of both kernels, through the CLI.
        treasury_before = _stable(node, TREASURY)
        ids = [_cli_submit(node, *I8, price=1000), _cli_submit(node, *F32, price=500)]
        jobs = wait_until(lambda: _settled(node, ids), TIMEOUT_S, "both jobs to settle",
                          log=node)
        assert [j["state"] for j in jobs] == ["passed", "passed"], jobs
        assert [len(j["sampled"]) for j in jobs] == [44, 44]
        assert _stable(node, TREASURY) == treasury_before + 1500
        after = _provider(node, honest["address"])
        assert int(after["credit_total"]) == int(honest["credit_total"]) + 256 + 64
        assert after["jobs_passed"] == honest["jobs_passed"] + 2
        honest_time = time.monotonic() - started

        # A cheating provider joins.
        dev = DevSigner(load_dev_key(node.home), node.rpc("gannet_chainId"))
        cheat_key = SigningKey.generate()
        cheat_home = tmp_path / "cheater"
        cheat_home.mkdir()
        save_keystore(cheat_home / "provider_key.json", cheat_key, "", scrypt_n=2**12)
        fund = dev.transfer(address_of(cheat_key), 1000 * GPU,
                            node.rpc("gannet_getAccount", dev.address)["pending_nonce"], 1000)
        node.rpc("gannet_sendRawTransaction", raw_hex(fund))
        wait_included(node.url, [hash_hex(fund)])
        cheat = GannetProcess(["provider", "start", "--home", str(cheat_home), "--rpc",
                               node.url, "--cheat-fraction", "0.5"], node.rpc_port,
                              tmp_path / "cheater.log")
        cheat.env = {"GANNET_PASSWORD": ""}
        with cheat:
            cheater = address_of(cheat_key)
            wait_until(lambda: _provider(node, cheater), TIMEOUT_S, "the cheater to register",
                       log=cheat)
            client_before = _stable(node, dev.address)
            jobs = []
            for batch in range(3):  # the beacon assigns: go on until both providers got one
                jobs += _submit_batch(node, dev, batch)
                if len({j["provider"] for j in jobs}) == 2:
                    break
            log = cheat.log_of_this_run()
        by_cheater = [j for j in jobs if j["provider"] == cheater]
        by_honest = [j for j in jobs if j["provider"] != cheater]
        assert by_cheater and by_honest, "the draw gave every job to one provider"
        assert all(j["state"] == "failed" and j["fault"] == "verdict" for j in by_cheater)
        assert all(j["state"] == "passed" for j in by_honest)
        caught = _provider(node, cheater)
        assert caught["jobs_failed"] == len(by_cheater)
        collateral = 100 * GPU
        for _ in by_cheater:
            collateral -= collateral // 10
        assert int(caught["collateral"]) == collateral
        refunded = sum(int(j["price"]) for j in by_cheater)
        paid = sum(int(j["price"]) for j in by_honest)
        assert _stable(node, dev.address) == client_before - paid
        assert refunded > 0
        assert "CHEATING PROVIDER" in log and "CHEATING on job" in log
        print(f"\nhonest i8+f32 jobs settled {honest_time:.1f} s after start; "
              f"{len(by_cheater)} cheating jobs caught, {len(by_honest)} honest passed; "
              f"cheater collateral {int(caught['collateral']) / GPU:g} GPU; "
              f"total {time.monotonic() - started:.1f} s")
