"""The committee verifier a validator node runs: re-execute sampled tiles, attest pass/fail.

Off the state transition and off the event loop. After every commit the node's
loop reads, from committed state, the jobs that wait for this validator's
attestation (`duties_of`: job id, kernel, params, seed and the revealed sampled
tiles) and queues the new ones; a worker thread re-executes each job's sampled
tiles from the seed (`vm.kernels.Kernel.compute_tiles`, CuPy or NumPy) and
compares them with what the provider revealed (`Kernel.tiles_match`: exact or
within the kernel's tolerance). The verdict goes out as an Attest tx signed by
the validator's consensus key (the validator's own address is the sender; the
chain accepts it or the validator's operator), built and admitted on the loop.

The rule of a verdict: PASS when every sampled tile was revealed and every
revealed tile matches its re-execution; FAIL otherwise (a tile that does not
match, a kernel or params the verifier cannot run). A job attested once is not
attested again unless the attestation is still missing `RESEND_BLOCKS` later.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chain import codec
from chain.crypto import SigningKey
from chain.records import VERDICT_FAIL, VERDICT_PASS, Attest, Tx
from chain.signing import sign_tx
from chain.state import State
from consensus import compute
from vm.backend import Backend
from vm.kernels import KernelError, get_kernel

log = logging.getLogger("gannet.verifier")

RESEND_BLOCKS = 5
SUBMIT_TIMEOUT_S = 10.0
VERDICT_NAMES = {VERDICT_PASS: "pass", VERDICT_FAIL: "fail"}


@dataclass(frozen=True, slots=True)
class Duty:
    """A job waiting for this validator's attestation, with the tiles the provider revealed."""

    job: int
    kernel: str
    params: tuple[int, ...]
    seed: bytes
    sampled: tuple[int, ...]
    revealed: tuple[tuple[int, bytes], ...]  # (tile index, tile bytes), ascending


def compute_verdict(duty: Duty, backend: Backend | None = None) -> int:
    """PASS iff every sampled tile is revealed and each matches its re-execution from the seed."""
    revealed = dict(duty.revealed)
    if sorted(revealed) != sorted(duty.sampled):
        return VERDICT_FAIL
    try:
        kernel = get_kernel(duty.kernel)
        if len(duty.params) != len(kernel.schema):
            return VERDICT_FAIL
        params = kernel.validate_params(dict(zip((s.name for s in kernel.schema), duty.params,
                                                 strict=True)))
        indices = sorted(revealed)
        expected = kernel.compute_tiles(duty.seed, params, indices, backend)
    except KernelError:
        return VERDICT_FAIL
    ok = all(kernel.tiles_match(params, want, revealed[i])
             for i, want in zip(indices, expected, strict=True))
    return VERDICT_PASS if ok else VERDICT_FAIL


def attest_body(duty: Duty, validator: bytes, backend: Backend | None = None) -> Attest:
    """The Attest tx body this validator sends for a duty."""
    return Attest(job=duty.job, validator=validator, verdict=compute_verdict(duty, backend))


class CommitteeVerifier:
    """Queues duties as blocks commit and attests them on a worker thread (a service)."""

    def __init__(self, validator: bytes, duties: Callable[[], Sequence[Duty]],
                 submit: Callable[[Attest], None], backend: Backend | None = None) -> None:
        self.validator = validator
        self.duties = duties
        self.submit = submit
        self.backend = backend
        self.attested: dict[int, int] = {}  # job -> height its attestation was sent at
        self.verdicts: dict[int, int] = {}  # job -> verdict sent (for logs and tests)
        self._queue: queue.Queue[tuple[Duty, int] | None] = queue.Queue()
        self._queued: set[int] = set()
        self._thread: threading.Thread | None = None

    def on_height(self, height: int) -> int:
        """After a commit at `height`: queue duties not attested recently; how many queued."""
        added = 0
        for duty in self.duties():
            sent = self.attested.get(duty.job)
            if duty.job in self._queued or (sent is not None and height < sent + RESEND_BLOCKS):
                continue
            self._queued.add(duty.job)
            self._queue.put((duty, height))
            added += 1
        return added

    def process_one(self, duty: Duty, height: int) -> int:
        """Verify one duty and submit its attestation; the verdict."""
        try:
            body = attest_body(duty, self.validator, self.backend)
            self.attested[duty.job] = height  # sent or not, retried RESEND_BLOCKS later
            self.submit(body)
        finally:
            self._queued.discard(duty.job)
        self.verdicts[duty.job] = body.verdict
        log.info("attested job=%d verdict=%s tiles=%d", duty.job,
                 VERDICT_NAMES[body.verdict], len(duty.sampled))
        return body.verdict

    def drain(self) -> int:
        """Process every queued duty on the calling thread (tests); how many."""
        done = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return done
            if item is not None:
                self.process_one(*item)
                done += 1

    def start(self) -> None:
        """Run the worker thread."""
        self._thread = threading.Thread(target=self._work, name="gannet-verifier", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 0.0) -> None:
        """Ask the worker thread to stop after the duty it is on; wait up to `timeout_s`."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            duty, height = item
            try:
                self.process_one(duty, height)
            except Exception:  # one bad duty must not stop the validator's attesting
                log.exception("verifying job %d failed", duty.job)


def duties_from_state(state: State, validator: bytes) -> list[Duty]:
    """The jobs waiting for `validator`'s attestation, with their revealed tiles, by id."""
    return [Duty(job=job.id, kernel=job.kernel.decode("ascii", "replace"), params=job.params,
                 seed=job.seed, sampled=job.sampled,
                 revealed=tuple(compute.revealed_tiles(state, job)))
            for job in compute.jobs_awaiting_attestation(state, validator)]


# --- inside a node -------------------------------------------------------------------------


def start_node_verifier(node) -> CommitteeVerifier | None:
    """Start the verifier of a validator node (None for a node without a validator key)."""
    if node.validator_key is None:
        return None
    verifier = CommitteeVerifier(
        node.validator_address,
        lambda: duties_from_state(State(node.store.get_state), node.validator_address),
        _node_submitter(node, node.validator_key))

    async def on_commit(committed) -> None:
        verifier.on_height(committed.head.height)

    node.on_commit(on_commit)
    verifier.start()
    return verifier


def _node_submitter(node, key: SigningKey) -> Callable[[Attest], None]:
    """Send an Attest from the verifier thread: build, sign and admit it on the node's loop."""
    loop = asyncio.get_running_loop()

    async def send(body: Attest) -> bytes:
        address = node.validator_address
        tx = Tx(chain_id=node.chain_id.encode(), sender=key.public_key,
                nonce=node.mempool.pending_nonce(address), fee=node.min_fee, body=body)
        return await node.admission.submit(codec.encode(sign_tx(key, tx)))

    def submit(body: Attest) -> None:
        asyncio.run_coroutine_threadsafe(send(body), loop).result(SUBMIT_TIMEOUT_S)

    return submit
