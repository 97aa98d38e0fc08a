"""The committee verifier (`node.verifier`): verdicts, duty bookkeeping, the worker thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from chain.records import VERDICT_FAIL, VERDICT_PASS, Attest, SubmitJob
from node.provider import ProviderOptions, ProviderWorker, compute_job
from node.verifier import RESEND_BLOCKS, CommitteeVerifier, Duty, compute_verdict, duties_from_state
from tests.node.compute_chain import CLIENT_KEY, GPU, PROVIDER_KEYS, VALIDATOR_KEY, ComputeChain
from tests.node.compute_chain import address as address_of
from tests.node.test_provider import SMALL, _job
from vm import sampler

SEED = bytes(range(32))


def _duty(kernel: str = "matmul_i8", job: int = 7, picks: tuple[int, ...] = (0, 5, 15),
          tiles: list[bytes] | None = None) -> Duty:
    tiles = tiles if tiles is not None else list(compute_job(_job(kernel)).tiles)
    return Duty(job=job, kernel=kernel, params=SMALL[kernel], seed=SEED, sampled=picks,
                revealed=tuple((i, tiles[i]) for i in picks))


@pytest.mark.parametrize("kernel", sorted(SMALL))
def test_honest_tiles_pass(kernel):
    assert compute_verdict(_duty(kernel)) == VERDICT_PASS


@pytest.mark.parametrize("kernel", sorted(SMALL))
def test_one_wrong_tile_fails(kernel):
    tiles = list(compute_job(_job(kernel)).tiles)
    tiles[5] = bytes(len(tiles[5]))
    assert compute_verdict(_duty(kernel, tiles=tiles)) == VERDICT_FAIL
    assert compute_verdict(_duty(kernel, picks=(0, 15), tiles=tiles)) == VERDICT_PASS


def test_float_tiles_within_the_tolerance_pass_and_beyond_it_fail():
    tiles = list(compute_job(_job("matmul_f32")).tiles)
    values = np.frombuffer(tiles[5], dtype="<f4").copy()
    tolerance = 32**2 * 2.0**-22
    near, far = list(tiles), list(tiles)
    near[5] = (values + np.float32(tolerance / 4)).astype("<f4").tobytes()
    far[5] = (values + np.float32(tolerance * 4)).astype("<f4").tobytes()
    assert compute_verdict(_duty("matmul_f32", tiles=near)) == VERDICT_PASS
    assert compute_verdict(_duty("matmul_f32", tiles=far)) == VERDICT_FAIL


def test_a_missing_tile_an_unknown_kernel_or_bad_params_fail():
    duty = _duty()
    assert compute_verdict(Duty(duty.job, duty.kernel, duty.params, SEED, (0, 5, 15, 9),
                                duty.revealed)) == VERDICT_FAIL
    assert compute_verdict(Duty(duty.job, "nope", duty.params, SEED, duty.sampled,
                                duty.revealed)) == VERDICT_FAIL
    assert compute_verdict(Duty(duty.job, duty.kernel, (64, 64, 64), SEED, duty.sampled,
                                duty.revealed)) == VERDICT_FAIL
    assert compute_verdict(Duty(duty.job, duty.kernel, (64, 64, 64, 7), SEED, duty.sampled,
                                duty.revealed)) == VERDICT_FAIL


def test_the_verdict_catches_a_cheat_whenever_the_sample_hits_a_bad_tile():
    honest = list(compute_job(_job()).tiles)
    bad = {3, 11}
    tiles = [bytes(len(t)) if i in bad else t for i, t in enumerate(honest)]
    for n in range(40):
        picks = sampler.sample(bytes([n]) * 32, b"job", 16, 4)
        want = VERDICT_FAIL if bad & set(picks) else VERDICT_PASS
        assert compute_verdict(_duty(picks=picks, tiles=tiles)) == want


# --- duty bookkeeping ---------------------------------------------------------------------


def test_a_duty_is_queued_once_and_again_only_after_resend_blocks():
    sent: list[Attest] = []
    duties = [_duty(job=1), _duty(job=2)]
    verifier = CommitteeVerifier(b"v" * 20, lambda: duties, sent.append)
    assert verifier.on_height(10) == 2
    assert verifier.on_height(10) == 0  # still queued
    assert verifier.drain() == 2
    assert [a.job for a in sent] == [1, 2] and {a.verdict for a in sent} == {VERDICT_PASS}
    assert all(a.validator == b"v" * 20 for a in sent)
    assert verifier.on_height(10 + RESEND_BLOCKS - 1) == 0
    assert verifier.on_height(10 + RESEND_BLOCKS) == 2


def test_a_failing_submit_is_retried_later_and_does_not_stop_the_thread():
    calls: list[int] = []
    done = threading.Event()

    def submit(body: Attest) -> None:
        calls.append(body.job)
        if body.job == 1:
            raise RuntimeError("mempool full")
        done.set()

    verifier = CommitteeVerifier(b"v" * 20, lambda: [_duty(job=1), _duty(job=2)], submit)
    verifier.start()
    try:
        verifier.on_height(3)
        assert done.wait(10)
    finally:
        verifier.stop(timeout_s=5)
    assert calls == [1, 2]
    assert verifier.on_height(3 + RESEND_BLOCKS) == 2


def test_duties_come_from_state_with_the_revealed_tiles_and_end_after_attesting():
    chain = ComputeChain()
    worker = ProviderWorker(chain, PROVIDER_KEYS[0], ProviderOptions(collateral=100 * GPU))
    validator = address_of(VALIDATOR_KEY)
    chain.apply_block()
    worker.step()
    chain.apply_block()
    chain.submit(CLIENT_KEY, SubmitJob(kernel=b"matmul_i8", params=SMALL["matmul_i8"],
                                       seed=SEED, price=5, deadline=chain.height + 10))
    chain.apply_block()
    for _ in range(6):
        worker.step()
        chain.apply_block()
        if duties_from_state(chain.state(), validator):
            break
    (duty,) = duties_from_state(chain.state(), validator)
    honest = compute_job(_job(job_id=duty.job)).tiles
    assert duty.sampled and [i for i, _ in duty.revealed] == list(duty.sampled)
    assert all(data == honest[i] for i, data in duty.revealed)
    assert duties_from_state(chain.state(), address_of(CLIENT_KEY)) == []
    verifier = CommitteeVerifier(validator, lambda: duties_from_state(chain.state(), validator),
                                 chain.submit_attest)
    verifier.on_height(chain.height)
    verifier.drain()
    chain.apply_block()
    assert duties_from_state(chain.state(), validator) == []
    assert chain.call("gannet_getJob", duty.job)["attestations"][0]["verdict"] == "pass"
