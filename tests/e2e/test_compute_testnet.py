"""Proof of compute on a running 4-validator testnet, with a provider worker beside it.

`gannet testnet` (compressed compute parameters) runs four validator nodes, each
with its committee verifier; a `gannet provider start` worker follows node 0
with a key the faucet funded. One matmul_i8 and one matmul_f32 job from the
faucet must pass: the provider commits and reveals, every validator re-executes
the sampled tiles and attests PASS (the Attest fee comes from the validator's
own account, funded at genesis), the prices land in the buyback treasury, the
provider's credit grows by the jobs' tile counts, and every node holds the
same chain and the same view of jobs, treasury and provider.
"""

from __future__ import annotations

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
from tests.e2e.checks import (
    check_no_uncaught_exceptions,
    check_same_chain,
    node_urls,
    uncaught_in_logs,
)
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    GannetProcess,
    address_of,
    hash_hex,
    raw_hex,
    read_at_one_height,
    rpc_call,
    wait_included,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
GPU = BASE_UNITS_PER_GPU
COLLATERAL = 100 * GPU
PARAMS = {"compute": {"challenge_delay_blocks": 1, "reveal_window_blocks": 10,
                      "attest_window_blocks": 10, "provider_min_collateral": COLLATERAL}}
TREASURY = encode_address(module_address("treasury"))
JOBS = (  # kernel, params in schema order (m, n, k, tile), tiles, price
    ("matmul_i8", (256, 256, 256, 16), 256, 1000),
    ("matmul_f32", (128, 128, 128, 16), 64, 500),
)
FEE = 1000
DEADLINE_BLOCKS = 40
TIMEOUT_S = 30.0


def _provider(url: str, address: str) -> dict[str, Any] | None:
    return next((p for p in rpc_call(url, "gannet_getProviders") if p["address"] == address),
                None)


def _ledger(url: str, provider: str, job_ids: list[int]) -> tuple[int, list[Any]]:
    """(height, [treasury account, providers, job...]) read at one height of one node."""
    calls = [("gannet_getAccount", [TREASURY]), ("gannet_getProviders", []),
             *(("gannet_getJob", [j]) for j in job_ids)]
    return read_at_one_height(url, calls)


def _all_attested(url: str, job_ids: list[int], members: int) -> list[dict[str, Any]] | None:
    """The jobs once every one is passed and carries `members` attestations."""
    jobs = [rpc_call(url, "gannet_getJob", j) for j in job_ids]
    done = all(j["state"] == "passed" and len(j["attestations"]) == members for j in jobs)
    return jobs if done else None


def _start_provider(cluster: Cluster, tmp_path: Path) -> tuple[GannetProcess, str]:
    """A provider key in its own home, funded with 1000 GPU by the faucet, its worker
    started against node 0 (not yet entered)."""
    faucet = cluster.faucet_signer()
    key = SigningKey.generate()
    home = tmp_path / "provider"
    home.mkdir()
    save_keystore(home / "provider_key.json", key, "", scrypt_n=2**12)
    url = cluster.node(0).url
    fund = faucet.transfer(address_of(key), 1000 * GPU,
                           rpc_call(url, "gannet_getAccount", faucet.address)["pending_nonce"],
                           FEE)
    rpc_call(url, "gannet_sendRawTransaction", raw_hex(fund))
    wait_included(url, [hash_hex(fund)])
    worker = GannetProcess(["provider", "start", "--home", str(home), "--rpc", url],
                           cluster.node(0).rpc_port, tmp_path / "provider.log")
    worker.env = {"GANNET_PASSWORD": ""}
    return worker, address_of(key)


def test_honest_jobs_of_both_kernels_pass_on_the_testnet(tmp_path: Path) -> None:
    started = time.monotonic()
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS, proxies=False,
                 params=PARAMS) as cluster:
        urls = node_urls(cluster)
        url = urls[0]
        validators = sorted(n["validator_address"] for n in cluster.summary["nodes"])
        nonces_before = {v: rpc_call(url, "gannet_getAccount", v)["nonce"] for v in validators}
        worker, provider = _start_provider(cluster, tmp_path)
        with worker:
            before = wait_until(lambda: _provider(url, provider), TIMEOUT_S,
                                "the provider to register", log=worker)
            assert before["status"] == "active" and before["collateral"] == str(COLLATERAL)
            treasury_before = int(rpc_call(url, "gannet_getAccount", TREASURY)["stable"])

            faucet = cluster.faucet_signer()
            nonce = rpc_call(url, "gannet_getAccount", faucet.address)["pending_nonce"]
            head = rpc_call(url, "gannet_blockNumber")
            txs = [faucet.sign(SubmitJob(kernel=kernel.encode(), params=params,
                                         seed=bytes([n + 1]) * 32, price=price,
                                         deadline=head + DEADLINE_BLOCKS), nonce + n, FEE)
                   for n, (kernel, params, _, price) in enumerate(JOBS)]
            submitted = time.monotonic()
            for stx in txs:
                rpc_call(url, "gannet_sendRawTransaction", raw_hex(stx))
            wait_included(url, [hash_hex(stx) for stx in txs])
            mine = rpc_call(url, "gannet_getJobs", {"client": faucet.address})
            ids = sorted(j["id"] for j in mine)
            assert len(ids) == len(JOBS), mine
            passed_at: dict[int, float] = {}

            def _passed() -> bool:
                for job_id in ids:
                    if job_id not in passed_at:
                        job = rpc_call(url, "gannet_getJob", job_id)
                        assert job["state"] not in ("failed", "expired"), job
                        if job["state"] == "passed":
                            passed_at[job_id] = time.monotonic() - submitted
                return len(passed_at) == len(ids)

            wait_until(_passed, TIMEOUT_S, "both jobs to pass", log=worker)
            jobs = wait_until(lambda: _all_attested(url, ids, len(validators)), TIMEOUT_S,
                              "every validator's attestation", log=cluster.node(0))
            worker_log = worker.log_of_this_run()

        prices = sum(price for *_, price in JOBS)
        tiles = sum(count for _, _, count, _ in JOBS)
        for job, (kernel, _, count, price) in zip(jobs, JOBS, strict=True):
            assert (job["kernel"], job["tiles"], job["price"]) == (kernel, count, str(price))
            assert job["provider"] == provider and job["verdict"] == "pass", job
            assert len(job["sampled"]) == 44 and sorted(job["revealed"]) == job["sampled"]
            committee = sorted(m["validator"] for m in job["committee"])
            assert committee == validators, job["committee"]  # no queens: the whole set
            assert sorted(a["validator"] for a in job["attestations"]) == validators
            assert all(a["verdict"] == "pass" for a in job["attestations"]), job
            assert int(job["pass_power"]) == int(job["committee_power"])

        views = [_ledger(u, provider, ids) for u in urls]
        for u, (_, (treasury, providers, *node_jobs)) in zip(urls, views, strict=True):
            assert int(treasury["stable"]) == treasury_before + prices, u
            after = next(p for p in providers if p["address"] == provider)
            assert int(after["credit_total"]) == int(before["credit_total"]) + tiles, (u, after)
            assert after["jobs_passed"] == before["jobs_passed"] + len(JOBS), (u, after)
            assert [(j["state"], j["root"]) for j in node_jobs] == \
                [(j["state"], j["root"]) for j in jobs], u
        for v in validators:  # each validator signed and paid for its own Attests
            assert rpc_call(url, "gannet_getAccount", v)["nonce"] >= nonces_before[v] + len(JOBS)
        height = check_same_chain(urls)
        check_no_uncaught_exceptions(cluster)
        assert not uncaught_in_logs([worker.log_path])
        assert "CHEAT" not in worker_log
        figures = ", ".join(f"job {j} ({k}) passed {passed_at[j]:.1f} s after submit"
                            for j, (k, *_) in zip(ids, JOBS, strict=True))
        print(f"\n{figures}; {len(validators)}/{len(validators)} validators attested each; "
              f"same chain to height {height}; total {time.monotonic() - started:.1f} s")
