"""The provider worker: takes the jobs the chain assigns to one provider and does them.

It talks to a node over JSON-RPC only (`gannet provider start`), one pass per
new block (`ProviderWorker.step`):
1. Registered? If the chain has no provider record for our address, send a
   RegisterProvider with the configured collateral (once; resent only if it is
   dropped).
2. For every open job assigned to us (`gannet_getJobs` with `open: true`):
   - no root committed yet and the deadline not passed: compute every output
     tile with the vm backend (CuPy or NumPy), commit the Merkle root and count;
   - tiles sampled by the chain and not all revealed: reveal the missing ones
     with their proofs, split over as many RevealTiles txs as the size limit
     (`gannet_getKernels` limits) asks for.
   A tx we sent is not sent again while it is pending; once it is included,
   rejected or dropped the job's state decides what comes next.

`cheat_fraction` corrupts exactly floor(f * tiles) tiles of every job before
the commit (so proofs verify and only re-execution catches them). It exists for
tests and demos of the slashing path only and logs a loud warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from chain import codec
from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.records import (
    MAX_REVEALED_TILES,
    CommitResult,
    RegisterProvider,
    RevealedTile,
    RevealTiles,
    Tx,
    TxBody,
)
from chain.signing import sign_tx
from vm import merkle
from vm.backend import Backend
from vm.kernels import Kernel, Params, get_kernel
from vm.sampler import sample

log = logging.getLogger("gannet.provider")

TX_OVERHEAD_BYTES = 256  # a SignedTx around its body: chain id, key, nonce, fee, signature
RESEND_BLOCKS = 5  # a tx still not included after this many blocks is sent again
CHEAT_DOMAIN = b"gannet/cheat"
CHEAT_WARNING = ("CHEATING PROVIDER: --cheat-fraction %s corrupts tiles on purpose; for tests "
                 "and demos only - this provider WILL be caught and slashed")


class ChainClient(Protocol):
    """What the worker needs of a node: JSON-RPC calls (`node.rpc.client.RpcClient`)."""

    def call(self, method: str, *params: Any) -> Any:
        """`method(*params)`; raises on an error answer or an unreachable node."""
        ...


class ProviderError(Exception):
    """The node answered something the worker cannot act on (a malformed job, a bad kernel)."""


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """How the worker registers and behaves."""

    collateral: int
    licences: int = 0
    gpu: str = ""
    cheat_fraction: Fraction = Fraction(0)
    poll_s: float = 0.2


@dataclass(frozen=True, slots=True)
class JobView:
    """The parts of a `gannet_getJob` answer the worker acts on."""

    id: int
    kernel: str
    params: tuple[int, ...]
    seed: bytes
    deadline: int
    root: bytes | None
    sampled: tuple[int, ...]
    revealed: tuple[int, ...]

    @property
    def missing(self) -> tuple[int, ...]:
        """Sampled tiles not yet revealed, ascending."""
        done = set(self.revealed)
        return tuple(i for i in self.sampled if i not in done)


def job_view(doc: Any) -> JobView:
    """A JobView from a job's JSON (ProviderError if a field is missing or malformed)."""
    try:
        root = doc["root"]
        return JobView(
            id=int(doc["id"]), kernel=str(doc["kernel"]),
            params=tuple(int(v) for v in doc["param_list"]),
            seed=bytes.fromhex(doc["seed"].removeprefix("0x")),
            deadline=int(doc["deadline"]),
            root=None if root is None else bytes.fromhex(root.removeprefix("0x")),
            sampled=tuple(int(i) for i in doc["sampled"] or ()),
            revealed=tuple(int(i) for i in doc["revealed"] or ()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderError(f"malformed job from the node: {exc!r:.200}") from None


def kernel_params(kernel: Kernel, values: Sequence[int]) -> Params:
    """A job's params (a list in the kernel's schema order) validated by the kernel."""
    if len(values) != len(kernel.schema):
        raise ProviderError(f"{kernel.name} takes {len(kernel.schema)} params, got {len(values)}")
    return kernel.validate_params({spec.name: v for spec, v in zip(kernel.schema, values,
                                                                   strict=True)})


# --- cheating (tests and demos only) -------------------------------------------------


def cheat_count(count: int, fraction: Fraction) -> int:
    """How many of `count` tiles a cheat of `fraction` corrupts: floor(fraction * count)."""
    return math.floor(fraction * count)


def corrupt_indices(seed: bytes, job_id: int, count: int, fraction: Fraction) -> tuple[int, ...]:
    """Which tiles a cheat corrupts: floor(f * count) of them, drawn from the job seed."""
    n = cheat_count(count, fraction)
    if n == 0:
        return ()
    beacon = hashlib.sha256(CHEAT_DOMAIN + seed).digest()
    return sample(beacon, job_id.to_bytes(8, "big"), count, n)


def corrupt_tile(kernel: Kernel, params: Params, data: bytes) -> bytes:
    """A tile no verifier accepts: every element moved by more than the kernel's tolerance."""
    values = np.frombuffer(data, dtype=kernel.out_dtype)
    step = 1 if kernel.comparison == "exact" else 2 * kernel.tolerance(params) + 1.0
    with np.errstate(over="ignore"):
        moved = values + np.array(step).astype(kernel.out_dtype)
    return np.ascontiguousarray(moved, dtype=kernel.out_dtype).tobytes()


# --- the work ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComputedJob:
    """A job's output tiles as committed (corrupted ones included) and its Merkle root."""

    tiles: tuple[bytes, ...]
    root: bytes
    corrupted: tuple[int, ...]


def compute_job(job: JobView, fraction: Fraction = Fraction(0),
                backend: Backend | None = None) -> ComputedJob:
    """Run the job's kernel on its seed and commit to the (maybe corrupted) tiles."""
    kernel = get_kernel(job.kernel)
    params = kernel_params(kernel, job.params)
    tiles = kernel.compute(job.seed, params, backend)
    bad = corrupt_indices(job.seed, job.id, len(tiles), fraction)
    for index in bad:
        tiles[index] = corrupt_tile(kernel, params, tiles[index])
    return ComputedJob(tuple(tiles), merkle.root(tiles), bad)


def reveal_bodies(job_id: int, computed: ComputedJob, indices: Sequence[int],
                  max_tx_bytes: int) -> list[RevealTiles]:
    """RevealTiles bodies carrying `indices` with proofs, each tx within `max_tx_bytes`."""
    budget = max_tx_bytes - TX_OVERHEAD_BYTES
    bodies: list[RevealTiles] = []
    chunk: list[RevealedTile] = []
    for index in indices:
        tile = RevealedTile(index=index, data=computed.tiles[index],
                            proof=merkle.proof(computed.tiles, index))
        candidate = [*chunk, tile]
        if chunk and (len(candidate) > MAX_REVEALED_TILES
                      or _body_size(job_id, candidate) > budget):
            bodies.append(RevealTiles(job=job_id, tiles=tuple(chunk)))
            candidate = [tile]
        if _body_size(job_id, candidate) > budget:
            raise ProviderError(f"job {job_id}: tile {index} alone does not fit in a tx of "
                                f"{max_tx_bytes} bytes")
        chunk = candidate
    if chunk:
        bodies.append(RevealTiles(job=job_id, tiles=tuple(chunk)))
    return bodies


def _body_size(job_id: int, tiles: list[RevealedTile]) -> int:
    return len(codec.encode(RevealTiles(job=job_id, tiles=tuple(tiles))))


# --- the worker -------------------------------------------------------------------------


@dataclass(slots=True)
class _Sent:
    """A tx the worker sent and has not yet seen leave the mempool."""

    tx_hash: str
    height: int


@dataclass(slots=True)
class WorkerStats:
    """What the worker has done since it started (for logs and tests)."""

    commits: int = 0
    reveal_txs: int = 0
    failed_receipts: list[str] = field(default_factory=list)


class ProviderWorker:
    """A provider's worker over one node's JSON-RPC (a long-running service object)."""

    def __init__(self, client: ChainClient, key: SigningKey, options: ProviderOptions,
                 backend: Backend | None = None) -> None:
        self.client = client
        self.key = key
        self.options = options
        self.backend = backend
        self.address = address_from_public_key(key.public_key)
        self.bech32 = encode_address(self.address)
        self.stats = WorkerStats()
        self._computed: dict[int, ComputedJob] = {}
        self._sent: dict[tuple[str, int, int], _Sent] = {}  # (kind, job, part) -> tx
        self._chain_id: bytes | None = None
        self._max_tx_bytes: int | None = None
        if options.cheat_fraction:
            log.warning(CHEAT_WARNING, options.cheat_fraction)

    # --- one pass ---------------------------------------------------------------------

    def step(self) -> int:
        """One pass over our registration and open jobs at the node's head; the head height."""
        height = int(self.client.call("gannet_blockNumber"))
        self._settle_sent(height)
        if not self._ensure_registered(height):
            return height
        jobs = self.client.call("gannet_getJobs", {"provider": self.bech32, "open": True})
        open_ids = set()
        for doc in jobs:
            job = job_view(doc)
            open_ids.add(job.id)
            self._work_on(job, height)
        for job_id in set(self._computed) - open_ids:
            del self._computed[job_id]
        return height

    def _work_on(self, job: JobView, height: int) -> None:
        """Commit or reveal, whichever the job waits for from us."""
        if job.root is None:
            if height < job.deadline and not self._is_pending("commit", job.id):
                self._commit(job, height)
        elif job.missing and not self._is_pending("reveal", job.id):
            self._reveal(job, height)

    def _commit(self, job: JobView, height: int) -> None:
        computed = self._compute(job)
        if computed.corrupted:
            log.warning("CHEATING on job %d: %d of %d tiles corrupted (--cheat-fraction %s)",
                        job.id, len(computed.corrupted), len(computed.tiles),
                        self.options.cheat_fraction)
        body = CommitResult(job=job.id, root=computed.root, tiles=len(computed.tiles))
        self._send(("commit", job.id, 0), body, height)
        self.stats.commits += 1
        log.info("committed job=%d kernel=%s tiles=%d root=%s", job.id, job.kernel,
                 len(computed.tiles), computed.root.hex()[:16])

    def _reveal(self, job: JobView, height: int) -> None:
        computed = self._compute(job)
        if job.root != computed.root:
            log.error("job %d: the chain holds root %s, we compute %s; not revealing",
                      job.id, job.root.hex()[:16], computed.root.hex()[:16])
            return
        bodies = reveal_bodies(job.id, computed, job.missing, self._tx_limit())
        for part, body in enumerate(bodies):
            self._send(("reveal", job.id, part), body, height)
        self.stats.reveal_txs += len(bodies)
        log.info("revealed job=%d tiles=%d txs=%d", job.id, len(job.missing), len(bodies))

    def _compute(self, job: JobView) -> ComputedJob:
        computed = self._computed.get(job.id)
        if computed is None:
            computed = compute_job(job, self.options.cheat_fraction, self.backend)
            self._computed[job.id] = computed
        return computed

    # --- registration ---------------------------------------------------------------------

    def is_registered(self) -> bool:
        """Whether the chain holds a provider record for our address."""
        providers = self.client.call("gannet_getProviders")
        return any(p.get("address") == self.bech32 for p in providers)

    def _ensure_registered(self, height: int) -> bool:
        if self.is_registered():
            return True
        if not self._is_pending("register", 0):
            body = RegisterProvider(collateral=self.options.collateral,
                                    licences=self.options.licences,
                                    gpu=self.options.gpu.encode()[:64])
            self._send(("register", 0, 0), body, height)
            log.info("registering provider %s collateral=%d", self.bech32,
                     self.options.collateral)
        return False

    # --- txs --------------------------------------------------------------------------------

    def _send(self, what: tuple[str, int, int], body: TxBody, height: int) -> str:
        account = self.client.call("gannet_getAccount", self.bech32)
        fee = int(self.client.call("gannet_estimateFee")["fee"])
        tx = Tx(chain_id=self._chain(), sender=self.key.public_key,
                nonce=int(account["pending_nonce"]), fee=fee, body=body)
        raw = codec.encode(sign_tx(self.key, tx))
        tx_hash = str(self.client.call("gannet_sendRawTransaction", "0x" + raw.hex()))
        self._sent[what] = _Sent(tx_hash, height)
        return tx_hash

    def _is_pending(self, kind: str, job_id: int) -> bool:
        return any(k[0] == kind and k[1] == job_id for k in self._sent)

    def _settle_sent(self, height: int) -> None:
        """Forget txs that left the mempool (logging failed receipts) or went stale."""
        for what, sent in sorted(self._sent.items()):
            info = self.client.call("gannet_getTransaction", sent.tx_hash)
            status = info.get("status")
            if status == "included":
                receipt = info.get("receipt") or {}
                if receipt.get("status") != "ok":
                    reason = f"{what[0]} job {what[1]}: {receipt.get('reason')}"
                    self.stats.failed_receipts.append(reason)
                    log.error("tx %s failed: %s (code %s)", sent.tx_hash, reason,
                              receipt.get("code"))
                del self._sent[what]
            elif status != "pending" or height >= sent.height + RESEND_BLOCKS:
                if status == "rejected":
                    log.warning("tx %s rejected: %s", sent.tx_hash, info.get("reason"))
                del self._sent[what]

    def _chain(self) -> bytes:
        if self._chain_id is None:
            self._chain_id = str(self.client.call("gannet_chainId")).encode()
        return self._chain_id

    def _tx_limit(self) -> int:
        if self._max_tx_bytes is None:
            self._max_tx_bytes = int(self.client.call("gannet_getKernels")["max_tx_bytes"])
        return self._max_tx_bytes

    # --- following the chain ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step at every new head until `stop` is set; node errors are logged and retried."""
        last, failing = -1, False
        while not stop.is_set():
            try:
                head = int(self.client.call("gannet_blockNumber"))
                if head != last:
                    last = self.step()
                failing = False
            except Exception as exc:  # the node restarting, a malformed answer: keep going
                if not failing:  # once per streak of failures
                    log.warning("provider step failed (retrying): %s", exc)
                failing = True
            stop.wait(self.options.poll_s)
