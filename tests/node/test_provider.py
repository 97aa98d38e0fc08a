"""The provider worker (`node.provider`) against an in-process chain with the real rules.

The worker talks to `tests.node.compute_chain.ComputeChain` through the same
JSON-RPC methods a node serves, and every tx it builds is applied by the real
transition, so a wrong body fails a receipt (which the tests check for).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import codec
from chain.records import RegisterProvider, SubmitJob
from consensus import buyback
from node.provider import (
    TX_OVERHEAD_BYTES,
    JobView,
    ProviderOptions,
    ProviderWorker,
    cheat_count,
    compute_job,
    corrupt_indices,
    corrupt_tile,
    reveal_bodies,
)
from node.verifier import CommitteeVerifier, duties_from_state
from tests.node.compute_chain import (
    CLIENT_KEY,
    GPU,
    PROVIDER_KEYS,
    VALIDATOR_KEY,
    ComputeChain,
    address,
)
from vm import merkle
from vm.kernels import get_kernel

SMALL = {"matmul_i8": (64, 64, 64, 16), "matmul_f32": (32, 32, 32, 8)}  # 16 tiles each
PRICE = 100


def _job(kernel: str = "matmul_i8", job_id: int = 7, seed: bytes = bytes(range(32))) -> JobView:
    return JobView(id=job_id, kernel=kernel, params=SMALL[kernel], seed=seed, deadline=100,
                   root=None, sampled=(), revealed=())


def _setup(cheat: Fraction = Fraction(0)) -> tuple[ComputeChain, ProviderWorker,
                                                   CommitteeVerifier]:
    chain = ComputeChain()
    worker = ProviderWorker(chain, PROVIDER_KEYS[0],
                            ProviderOptions(collateral=100 * GPU, cheat_fraction=cheat))
    validator = address(VALIDATOR_KEY)
    verifier = CommitteeVerifier(validator, lambda: duties_from_state(chain.state(), validator),
                                 chain.submit_attest)
    chain.apply_block()
    worker.step()  # registers
    chain.apply_block()
    assert worker.is_registered()
    return chain, worker, verifier


def _run(chain: ComputeChain, worker: ProviderWorker, verifier: CommitteeVerifier,
         job_id: int, blocks: int = 12) -> dict:
    """Step worker and verifier block by block until the job settles."""
    for _ in range(blocks):
        worker.step()
        verifier.on_height(chain.height)
        verifier.drain()
        chain.apply_block()
        job = chain.call("gannet_getJob", job_id)
        if job["verdict"] is not None:
            return job
    raise AssertionError(f"job {job_id} did not settle: {chain.call('gannet_getJob', job_id)}")


def _submit(chain: ComputeChain, kernel: str, seed: bytes = bytes(32)) -> int:
    chain.submit(CLIENT_KEY, SubmitJob(kernel=kernel.encode(), params=SMALL[kernel], seed=seed,
                                       price=PRICE, deadline=chain.height + 10))
    (receipt,) = chain.apply_block()
    assert receipt.code == 0, receipt
    return chain.call("gannet_getJobs", {"limit": 1})[0]["id"]


# --- the honest flow -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", sorted(SMALL))
def test_honest_job_commits_the_true_root_reveals_the_sampled_tiles_and_passes(kernel):
    chain, worker, verifier = _setup()
    job_id = _submit(chain, kernel)
    treasury_before = chain.state().get_account(buyback.TREASURY).stable
    job = _run(chain, worker, verifier, job_id)
    k = get_kernel(kernel)
    params = k.validate_params(dict(zip((s.name for s in k.schema), SMALL[kernel],
                                        strict=True)))
    assert job["root"] == "0x" + merkle.root(k.compute(bytes(32), params)).hex()
    assert job["state"] == "passed" and job["verdict"] == "pass"
    assert sorted(job["revealed"]) == sorted(job["sampled"]) and job["sampled"]
    assert worker.stats.failed_receipts == []
    assert worker.stats.commits == 1
    assert chain.state().get_account(buyback.TREASURY).stable == treasury_before + PRICE
    (provider,) = chain.call("gannet_getProviders")
    assert provider["credit_total"] == str(job["tiles"]) and provider["jobs_passed"] == 1


def test_a_pending_commit_is_not_sent_twice():
    chain, worker, _ = _setup()
    _submit(chain, "matmul_i8")
    worker.step()
    worker.step()
    assert len(chain.pending) == 1


def test_reveals_split_over_several_txs_when_one_tx_is_too_small():
    chain, worker, verifier = _setup()
    chain.api.node.config.mempool.max_tx_bytes = 4096  # 16 tiles of 1 KiB need 5 txs
    job_id = _submit(chain, "matmul_i8")
    job = _run(chain, worker, verifier, job_id)
    assert job["state"] == "passed"
    assert worker.stats.reveal_txs >= 4
    assert worker.stats.failed_receipts == []


def test_a_failed_receipt_is_reported():
    chain = ComputeChain()
    worker = ProviderWorker(chain, PROVIDER_KEYS[1], ProviderOptions(collateral=1))
    chain.apply_block()
    worker.step()
    chain.apply_block()
    worker.step()
    assert len(worker.stats.failed_receipts) == 1
    assert "below the minimum" in worker.stats.failed_receipts[0]
    assert not worker.is_registered()


# --- cheating ---------------------------------------------------------------------------------


def test_a_cheating_provider_is_caught_slashed_and_the_client_refunded():
    chain, worker, verifier = _setup(cheat=Fraction(1, 2))
    client_before = chain.state().get_account(address(CLIENT_KEY)).stable
    job_id = _submit(chain, "matmul_i8")
    job = _run(chain, worker, verifier, job_id)
    assert job["state"] == "failed" and job["verdict"] == "fail"
    assert verifier.verdicts[job_id] == 0
    (provider,) = chain.call("gannet_getProviders")
    assert provider["jobs_failed"] == 1
    assert int(provider["collateral"]) == 90 * GPU  # 1/10 slashed
    assert job["slashed"] == str(10 * GPU)
    assert chain.state().get_account(address(CLIENT_KEY)).stable == client_before


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 4096), num=st.integers(0, 100), job_id=st.integers(0, 2**64 - 1))
def test_cheat_corrupts_exactly_floor_f_times_count_distinct_tiles(count, num, job_id):
    fraction = Fraction(num, 100)
    picks = corrupt_indices(bytes(32), job_id, count, fraction)
    assert len(picks) == len(set(picks)) == cheat_count(count, fraction) == num * count // 100
    assert all(0 <= i < count for i in picks)


@pytest.mark.parametrize("kernel", sorted(SMALL))
@pytest.mark.parametrize("fraction", [Fraction(0), Fraction(1, 10), Fraction(1, 2), Fraction(1)])
def test_compute_job_corrupts_exactly_the_chosen_tiles(kernel, fraction):
    honest = compute_job(_job(kernel))
    cheat = compute_job(_job(kernel), fraction)
    differing = tuple(i for i, (a, b) in enumerate(zip(honest.tiles, cheat.tiles, strict=True))
                      if a != b)
    assert differing == cheat.corrupted == corrupt_indices(bytes(range(32)), 7, 16, fraction)
    assert len(differing) == (16 * fraction.numerator) // fraction.denominator
    assert (cheat.root == honest.root) == (not differing)


@pytest.mark.parametrize("kernel", sorted(SMALL))
def test_a_corrupted_tile_never_passes_the_kernels_comparison(kernel):
    k = get_kernel(kernel)
    params = k.validate_params(dict(zip((s.name for s in k.schema), SMALL[kernel], strict=True)))
    for tile in compute_job(_job(kernel)).tiles:
        assert k.tiles_match(params, tile, tile)
        assert not k.tiles_match(params, tile, corrupt_tile(k, params, tile))


# --- reveal splitting ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(limit=st.integers(2000, 70_000), picks=st.sets(st.integers(0, 15), min_size=1))
def test_reveal_bodies_cover_the_tiles_in_order_within_the_size_limit(limit, picks):
    computed = compute_job(_job())
    indices = sorted(picks)
    bodies = reveal_bodies(7, computed, indices, limit)
    assert [t.index for b in bodies for t in b.tiles] == indices
    for body in bodies:
        assert len(codec.encode(body)) + TX_OVERHEAD_BYTES <= limit
        for tile in body.tiles:
            assert merkle.verify(computed.root, tile.index, 16, tile.data, tile.proof)


def test_register_body_carries_the_options():
    chain = ComputeChain()
    worker = ProviderWorker(chain, PROVIDER_KEYS[1],
                            ProviderOptions(collateral=150 * GPU, gpu="1x H200"))
    worker.step()
    (stx,) = chain.pending
    assert stx.tx.body == RegisterProvider(collateral=150 * GPU, licences=0, gpu=b"1x H200")
