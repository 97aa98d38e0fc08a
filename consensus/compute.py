"""Proof of compute: the job life cycle as consensus rules (no kernel ever runs here).

1. SubmitJob: the client escrows `price` stable (module "escrow"); the job
   gets the next sequential id and, at inclusion, a provider: among the
   eligible providers (`compute_providers.is_eligible`, the client excluded),
   sorted by address, index = a uniform draw below n from
   SHA-256(beacon || "assign" || id || counter) words (`vm.sampler.draw_below`,
   rejection sampling: no modulo bias).
2. CommitResult by the assigned provider at a height <= the commit deadline:
   a Merkle root over exactly the kernel's tile count.
3. At the beginning of block commit_height + challenge_delay_blocks, that
   block's beacon picks k = compute_challenge_samples tiles
   (`vm.sampler.sample(beacon, id as 8 bytes, tiles, k)`).
4. RevealTiles by the provider (split over several txs if it likes) within
   `reveal_window_blocks` after sampling; each tile is checked against the
   committed root and count (`vm.merkle.verify`) and stored for the
   verifiers. When every sampled tile is revealed, the job snapshots its
   committee: the epoch's queens (power = bonded tokens) or, with no queen,
   the current validator set (its voting powers).
5. Attest by each committee member (signed by the validator key's address or
   its operator's) within `attest_window_blocks` after the full reveal. The
   job settles as soon as PASS or FAIL power exceeds 2/3 of the committee's:
   - pass: the escrow goes to the buyback treasury (`buyback.pay_revenue`,
     all of it), the provider earns credit = the job's tile count;
   - fail: `provider_slash_fraction` of the collateral is burned and the
     client refunded.
   Attestations are still taken until the window ends. Then every member that
   attested against the verdict or not at all loses `attest_penalty` of its
   validator's operator rewards (burned from module "rewards"); a job without
   a > 2/3 verdict by then is refunded without a slash, and only the silent
   members are penalised.
6. A missed commit deadline or reveal window fails the job like a FAIL
   verdict (slash, refund).

Availability challenges: at the first block of each epoch the chain gives
every eligible provider a synthetic matmul_i8 job (side
`compute.challenge_size`, 16 x 16 tiles, seed = SHA-256("gannet/challenge" ||
beacon || provider || epoch), price 0, no escrow, commit due within
`challenge_commit_blocks`) that runs the same cycle; passing it qualifies the
provider for the epoch's emission share (`compute_providers`).

Timeouts come from per-height queues, so no rule scans all jobs. State keys:
"cn" counters, "cj" + id(8) Job, "cs" + height(8) jobs to sample, "cd" +
height(8) jobs with a deadline, "cw" jobs in their attestation window, "ct" +
id(8) + index(4) a revealed tile's bytes (deleted when the window closes).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from chain.codec import ADDRESS, HASH, U8, U32, U64, Bytes, ListOf, Record, record
from chain.hashing import sha256
from chain.records import (
    MAX_KERNEL_PARAMS,
    MAX_REVEALED_TILES,
    MAX_TILE_BYTES,
    MAX_VALIDATORS,
    VERDICT_FAIL,
    VERDICT_PASS,
    Attest,
    CommitResult,
    RevealedTile,
    RevealTiles,
    SubmitJob,
)
from chain.state import State, module_address, staking_validator_key
from consensus import buyback, compute_providers, staking
from consensus.compute_providers import (
    add_open_job,
    close_job,
    compute_epoch_of,
    credit_provider,
    eligible_providers,
    get_provider,
    slash_provider,
)
from consensus.context import BlockContext, TxFailed
from consensus.distribution import queens
from consensus.params import CHALLENGE_TILE, MAX_CHALLENGE_SAMPLES, compute_challenge_samples
from consensus.supply import burn, move
from vm import merkle
from vm.kernels import MATMUL_I8, Kernel, KernelError, Params, get_kernel
from vm.sampler import draw_below, sample, sample_words

COUNTERS_KEY = b"cn"  # -> ComputeCounters
JOB_PREFIX = b"cj"  # + id(8) -> Job
SAMPLE_PREFIX = b"cs"  # + height(8) -> JobIds sampled at that height's beginning
DEADLINE_PREFIX = b"cd"  # + height(8) -> JobIds with a deadline ending at that height
ATTESTING_KEY = b"cw"  # -> JobIds in their attestation window
TILE_PREFIX = b"ct"  # + id(8) + index(4) -> TileData

ESCROW = module_address("escrow")
REWARDS = module_address("rewards")
MAX_OPEN_JOBS = 2**18
NO_ADDRESS = bytes(20)
# What a reveal tx carries beyond the tiles and proofs `Kernel.reveal_bytes` counts.
REVEAL_TX_OVERHEAD = 512
REVEAL_TILE_OVERHEAD = 64  # index, length headers and 2 header bytes per proof hash

JOB_CLIENT, JOB_CHALLENGE = 0, 1
# Job status: where it is in its life.
STATUS_ASSIGNED = 0  # waiting for the commit
STATUS_COMMITTED = 1  # waiting for the sampling block
STATUS_SAMPLED = 2  # waiting for the reveal
STATUS_REVEALED = 3  # waiting for attestations
STATUS_PASSED = 4
STATUS_FAILED = 5
STATUS_EXPIRED = 6  # no > 2/3 verdict in the window: refunded, no slash
# Why a job failed.
FAULT_NONE, FAULT_NO_COMMIT, FAULT_NO_REVEAL, FAULT_VERDICT = 0, 1, 2, 3

# Receipt codes (jobs 410-449; providers 400-409 in compute_providers).
CODE_UNKNOWN_KERNEL = 410
CODE_BAD_PARAMS = 411
CODE_JOB_TOO_LARGE = 412
CODE_ZERO_PRICE = 413
CODE_INSUFFICIENT_STABLE = 414
CODE_BAD_DEADLINE = 415
CODE_NO_PROVIDER = 416
CODE_TOO_MANY_JOBS = 417
CODE_UNKNOWN_JOB = 420
CODE_NOT_ASSIGNED = 421
CODE_NOT_AWAITING_COMMIT = 422
CODE_COMMIT_LATE = 423
CODE_WRONG_TILE_COUNT = 424
CODE_NOT_SAMPLED_YET = 430
CODE_REVEAL_LATE = 431
CODE_TILE_NOT_SAMPLED = 432
CODE_TILE_ALREADY_REVEALED = 433
CODE_WRONG_TILE_SIZE = 434
CODE_BAD_PROOF = 435
CODE_EMPTY_REVEAL = 436
CODE_NOT_REVEALING = 437
CODE_NOT_COMMITTEE = 440
CODE_NOT_MEMBER_SIGNER = 441
CODE_ALREADY_ATTESTED = 442
CODE_ATTEST_CLOSED = 443
CODE_BAD_VERDICT = 444
CODE_NOT_REVEALED = 445


# --- records -----------------------------------------------------------------------------


@record
class ComputeCounters(Record):
    """The next job id and how many jobs are open (state key "cn")."""

    next_job: Annotated[int, U64]
    open_jobs: Annotated[int, U64]


@record
class JobIds(Record):
    """A list of job ids (a per-height queue or the attesting list)."""

    ids: Annotated[tuple[int, ...], ListOf(U64, MAX_OPEN_JOBS)]


@record
class CommitteeMember(Record):
    """A verification-committee member: validator, its voting power, its operator."""

    validator: Annotated[bytes, ADDRESS]
    power: Annotated[int, U64]
    operator: Annotated[bytes, ADDRESS]


@record
class Attestation(Record):
    """A member's verdict on a job and the height it was included at."""

    validator: Annotated[bytes, ADDRESS]
    verdict: Annotated[int, U8]
    height: Annotated[int, U64]


@record
class TileData(Record):
    """A revealed tile's bytes, kept for the verifiers until the attestation window ends."""

    data: Annotated[bytes, Bytes(0, MAX_TILE_BYTES)]


@record
class Job(Record):
    """A proof-of-compute job (state key "cj" + id).

    `kind` JOB_CLIENT or JOB_CHALLENGE (client = NO_ADDRESS, price 0).
    Heights: `deadline` (last commit height), `commit_height`, `sample_height`
    (when the tiles are picked), `reveal_deadline`, `revealed_height`,
    `attest_deadline`; 0 until known. `verdict` is VERDICT_PASS/FAIL once
    settled by the committee. `closed` is 1 once the attestation window is
    processed (penalties applied, tiles deleted).
    """

    id: Annotated[int, U64]
    kind: Annotated[int, U8]
    client: Annotated[bytes, ADDRESS]
    provider: Annotated[bytes, ADDRESS]
    kernel: Annotated[bytes, Bytes(1, 32)]
    params: Annotated[tuple[int, ...], ListOf(U64, MAX_KERNEL_PARAMS)]
    seed: Annotated[bytes, HASH]
    price: Annotated[int, U64]
    tiles: Annotated[int, U32]
    submit_height: Annotated[int, U64]
    deadline: Annotated[int, U64]
    status: Annotated[int, U8]
    fault: Annotated[int, U8]
    root: Annotated[bytes, HASH]
    commit_height: Annotated[int, U64]
    sample_height: Annotated[int, U64]
    sampled: Annotated[tuple[int, ...], ListOf(U32, MAX_CHALLENGE_SAMPLES)]
    revealed: Annotated[tuple[int, ...], ListOf(U32, MAX_CHALLENGE_SAMPLES)]
    reveal_deadline: Annotated[int, U64]
    revealed_height: Annotated[int, U64]
    attest_deadline: Annotated[int, U64]
    committee: Annotated[tuple[CommitteeMember, ...], ListOf(CommitteeMember, MAX_VALIDATORS)]
    attestations: Annotated[tuple[Attestation, ...], ListOf(Attestation, MAX_VALIDATORS)]
    verdict: Annotated[int, U8]
    settled_height: Annotated[int, U64]
    slashed: Annotated[int, U64]
    penalties: Annotated[int, U64]
    closed: Annotated[int, U8]


NO_VERDICT = 255
EMPTY_COUNTERS = ComputeCounters(next_job=0, open_jobs=0)


# --- keys and queries --------------------------------------------------------------------


def job_key(job_id: int) -> bytes:
    """State key of a job."""
    return JOB_PREFIX + job_id.to_bytes(8, "big")


def tile_key(job_id: int, index: int) -> bytes:
    """State key of a revealed tile."""
    return TILE_PREFIX + job_id.to_bytes(8, "big") + index.to_bytes(4, "big")


def sample_key(height: int) -> bytes:
    """State key of the jobs whose tiles are sampled at `height`."""
    return SAMPLE_PREFIX + height.to_bytes(8, "big")


def deadline_key(height: int) -> bytes:
    """State key of the jobs with a deadline ending at `height`."""
    return DEADLINE_PREFIX + height.to_bytes(8, "big")


def get_counters(state: State) -> ComputeCounters:
    """The next job id and the number of open jobs."""
    return state.get(COUNTERS_KEY, ComputeCounters, EMPTY_COUNTERS)


def get_job(state: State, job_id: int) -> Job | None:
    """The job with this id, or None."""
    return state.get(job_key(job_id), Job)


def get_revealed_tile(state: State, job_id: int, index: int) -> bytes | None:
    """A revealed tile's bytes while its attestation window is open, else None."""
    found = state.get(tile_key(job_id, index), TileData)
    return None if found is None else found.data


def revealed_tiles(state: State, job: Job) -> list[tuple[int, bytes]]:
    """(index, bytes) of every tile of `job` revealed and still kept, by index."""
    found = ((i, get_revealed_tile(state, job.id, i)) for i in sorted(job.revealed))
    return [(i, data) for i, data in found if data is not None]


def provider_open_jobs(state: State, provider: bytes) -> list[Job]:
    """The provider's jobs without an outcome yet, by id (what its worker must do)."""
    found = get_provider(state, provider)
    ids = () if found is None else sorted(found.open_jobs)
    return [get_job(state, job_id) for job_id in ids]


def jobs_awaiting_attestation(state: State, validator: bytes) -> list[Job]:
    """Jobs in their attestation window whose committee has `validator` and lacks its vote."""
    listed = state.get(ATTESTING_KEY, JobIds, JobIds(ids=()))
    out = []
    for job_id in sorted(listed.ids):
        job = get_job(state, job_id)
        if is_member(job, validator) and not has_attested(job, validator):
            out.append(job)
    return out


def is_member(job: Job, validator: bytes) -> bool:
    """Whether `validator` sits on the job's committee."""
    return any(m.validator == validator for m in job.committee)


def has_attested(job: Job, validator: bytes) -> bool:
    """Whether `validator` has attested the job."""
    return any(a.validator == validator for a in job.attestations)


def job_kernel_params(job: Job) -> tuple[Kernel, Params]:
    """The job's kernel and validated parameters (as the worker and verifier need them)."""
    kernel = get_kernel(job.kernel.decode("ascii"))
    return kernel, kernel.validate_params(params_mapping(kernel, job.params))


def params_mapping(kernel: Kernel, values: tuple[int, ...]) -> dict[str, int]:
    """A job's parameter list mapped onto the kernel's schema order (KernelError on arity)."""
    names = [spec.name for spec in kernel.schema]
    if len(values) != len(names):
        raise KernelError(f"{kernel.name} takes {len(names)} parameters "
                          f"({', '.join(names)}), got {len(values)}")
    return dict(zip(names, values, strict=True))


def committee_power(job: Job) -> int:
    """The committee's total voting power."""
    return sum(m.power for m in job.committee)


def verdict_power(job: Job, verdict: int) -> int:
    """The voting power of the members that attested `verdict`."""
    powers = {m.validator: m.power for m in job.committee}
    return sum(powers[a.validator] for a in job.attestations if a.verdict == verdict)


def compute_verdict(job: Job) -> int:
    """VERDICT_PASS or VERDICT_FAIL once its power exceeds 2/3 of the committee's, else
    NO_VERDICT."""
    total = committee_power(job)
    for verdict in (VERDICT_PASS, VERDICT_FAIL):
        if 3 * verdict_power(job, verdict) > 2 * total:
            return verdict
    return NO_VERDICT


# --- state helpers ---------------------------------------------------------------------


def _put_job(state: State, job: Job) -> None:
    state.put(job_key(job.id), job)


def _require_job(state: State, job_id: int) -> Job:
    job = get_job(state, job_id)
    if job is None:
        raise TxFailed(CODE_UNKNOWN_JOB, f"no job {job_id}")
    return job


def _push(state: State, key: bytes, job_id: int) -> None:
    """Append a job id to the list at `key`."""
    listed = state.get(key, JobIds, JobIds(ids=()))
    state.put(key, JobIds(ids=(*listed.ids, job_id)))


def _remove_attesting(state: State, job_id: int) -> None:
    listed = state.get(ATTESTING_KEY, JobIds, JobIds(ids=()))
    kept = tuple(i for i in listed.ids if i != job_id)
    state.put(ATTESTING_KEY, JobIds(ids=kept) if kept else None)


def _count_open(state: State, delta: int) -> None:
    counters = get_counters(state)
    state.put(COUNTERS_KEY, dataclasses.replace(counters, open_jobs=counters.open_jobs + delta))


def _new_job_id(state: State) -> int:
    counters = get_counters(state)
    state.put(COUNTERS_KEY, dataclasses.replace(counters, next_job=counters.next_job + 1))
    return counters.next_job


# --- submitting ------------------------------------------------------------------------


def apply_submit_job(state: State, sender: bytes, body: SubmitJob, ctx: BlockContext) -> None:
    """Escrow `price` stable and assign the job to a provider drawn from the block's beacon.

    Fails on an unknown kernel, params the kernel rejects, a reveal of the
    sampled tiles that would not fit in one tx, a zero price or one over the
    sender's stable, a deadline outside [height + 1, height + max_deadline_blocks],
    too many open jobs, or no eligible provider (nothing is escrowed then).
    """
    kernel, params = validate_job_kernel(body.kernel, body.params, ctx)
    validate_submit_terms(state, sender, body, ctx)
    job_id = get_counters(state).next_job
    provider = draw_provider(state, ctx, job_id, exclude=sender)
    move(state, sender, ESCROW, stable=body.price)
    _open_job(state, ctx, JOB_CLIENT, sender, provider, body.kernel, body.params, body.seed,
              body.price, kernel.tile_count(params), body.deadline)


def validate_job_kernel(name: bytes, values: tuple[int, ...],
                        ctx: BlockContext) -> tuple[Kernel, Params]:
    """The kernel and its params; TxFailed if unknown, invalid or too large to reveal."""
    try:
        kernel = get_kernel(name.decode("ascii"))
    except (KernelError, UnicodeDecodeError):
        raise TxFailed(CODE_UNKNOWN_KERNEL, f"unknown kernel {name!r}") from None
    try:
        params = kernel.validate_params(params_mapping(kernel, values))
    except KernelError as error:
        raise TxFailed(CODE_BAD_PARAMS, str(error)) from None
    samples = min(compute_challenge_samples(ctx.params.compute), kernel.tile_count(params))
    size = compute_reveal_size(kernel, params, samples)
    if size > ctx.params.block.max_tx_bytes or samples > MAX_REVEALED_TILES:
        raise TxFailed(CODE_JOB_TOO_LARGE,
                       f"job too large to reveal: {samples} tiles need about {size} bytes, "
                       f"a tx may hold {ctx.params.block.max_tx_bytes}")
    return kernel, params


def compute_reveal_size(kernel: Kernel, params: Params, samples: int) -> int:
    """An upper bound on the encoded size of one signed tx revealing `samples` tiles."""
    return (kernel.reveal_bytes(params, samples) + REVEAL_TX_OVERHEAD
            + samples * REVEAL_TILE_OVERHEAD)


def validate_submit_terms(state: State, sender: bytes, body: SubmitJob,
                          ctx: BlockContext) -> None:
    """Price and deadline rules, and room for another open job."""
    if body.price == 0:
        raise TxFailed(CODE_ZERO_PRICE, "price must be positive")
    have = state.get_account(sender).stable
    if body.price > have:
        raise TxFailed(CODE_INSUFFICIENT_STABLE,
                       f"insufficient stable: have {have}, price {body.price}")
    latest = ctx.height + ctx.params.compute.max_deadline_blocks
    if not ctx.height + 1 <= body.deadline <= latest:
        raise TxFailed(CODE_BAD_DEADLINE,
                       f"deadline must be in [{ctx.height + 1}, {latest}], got {body.deadline}")
    if get_counters(state).open_jobs >= MAX_OPEN_JOBS - compute_providers.MAX_PROVIDERS:
        raise TxFailed(CODE_TOO_MANY_JOBS, "too many open jobs; try again later")


def draw_provider(state: State, ctx: BlockContext, job_id: int, exclude: bytes) -> bytes:
    """The provider of job `job_id`: eligible ones (not `exclude`) by address, index drawn
    uniformly below their number from SHA-256(beacon || "assign" || id) words."""
    eligible = [p.address for p in eligible_providers(state, ctx) if p.address != exclude]
    if not eligible:
        raise TxFailed(CODE_NO_PROVIDER, "no eligible provider to assign the job to")
    words = sample_words(ctx.beacon, b"assign" + job_id.to_bytes(8, "big"))
    return eligible[draw_below(words, len(eligible))]


def _open_job(state: State, ctx: BlockContext, kind: int, client: bytes, provider: bytes,
              kernel: bytes, params: tuple[int, ...], seed: bytes, price: int, tiles: int,
              deadline: int) -> Job:
    """Write a new assigned job, its deadline entry and the provider's open-job entry."""
    job = Job(id=_new_job_id(state), kind=kind, client=client, provider=provider,
              kernel=kernel, params=params, seed=seed, price=price, tiles=tiles,
              submit_height=ctx.height, deadline=deadline, status=STATUS_ASSIGNED,
              fault=FAULT_NONE, root=bytes(32), commit_height=0, sample_height=0, sampled=(),
              revealed=(), reveal_deadline=0, revealed_height=0, attest_deadline=0,
              committee=(), attestations=(), verdict=NO_VERDICT, settled_height=0,
              slashed=0, penalties=0, closed=0)
    _put_job(state, job)
    _push(state, deadline_key(deadline), job.id)
    add_open_job(state, provider, job.id)
    _count_open(state, 1)
    return job


# --- committing and revealing -------------------------------------------------------------


def apply_commit_result(state: State, sender: bytes, body: CommitResult,
                        ctx: BlockContext) -> None:
    """The assigned provider commits a Merkle root over exactly the job's tile count, by the
    deadline; the tiles are sampled at commit height + challenge_delay_blocks."""
    job = _require_job(state, body.job)
    _require_provider(job, sender)
    if ctx.height > job.deadline:
        raise TxFailed(CODE_COMMIT_LATE, f"late: job {job.id}'s commit deadline was height "
                                         f"{job.deadline}")
    if job.status != STATUS_ASSIGNED:
        raise TxFailed(CODE_NOT_AWAITING_COMMIT, f"job {job.id} is not awaiting a commit "
                                                 f"(status {job.status})")
    if body.tiles != job.tiles:
        raise TxFailed(CODE_WRONG_TILE_COUNT,
                       f"job {job.id} has {job.tiles} tiles, the commit says {body.tiles}")
    at = ctx.height + ctx.params.compute.challenge_delay_blocks
    _put_job(state, dataclasses.replace(job, status=STATUS_COMMITTED, root=body.root,
                                        commit_height=ctx.height, sample_height=at))
    _push(state, sample_key(at), job.id)


def _require_provider(job: Job, sender: bytes) -> None:
    if sender != job.provider:
        raise TxFailed(CODE_NOT_ASSIGNED,
                       f"job {job.id} is assigned to {job.provider.hex()}, not {sender.hex()}")


def sample_due_jobs(state: State, ctx: BlockContext) -> None:
    """Begin of block: this block's beacon picks the tiles of jobs committed
    challenge_delay_blocks ago; their reveal window opens."""
    key = sample_key(ctx.height)
    listed = state.get(key, JobIds)
    if listed is None:
        return
    k = compute_challenge_samples(ctx.params.compute)
    window_end = ctx.height + ctx.params.compute.reveal_window_blocks
    for job_id in listed.ids:
        job = get_job(state, job_id)
        picks = sample(ctx.beacon, job_id.to_bytes(8, "big"), job.tiles, k)
        _put_job(state, dataclasses.replace(job, status=STATUS_SAMPLED, sampled=picks,
                                            reveal_deadline=window_end))
        _push(state, deadline_key(window_end), job_id)
    state.put(key, None)


def apply_reveal_tiles(state: State, sender: bytes, body: RevealTiles,
                       ctx: BlockContext) -> None:
    """The provider reveals sampled tiles with proofs against its committed root.

    Every tile must be sampled, not yet revealed, exactly the kernel's tile
    size, and prove against the root and tile count; any bad tile fails the
    whole tx. Once all sampled tiles are in, the attestation window opens.
    """
    job = _require_job(state, body.job)
    _require_provider(job, sender)
    validate_reveal_window(job, ctx)
    if not body.tiles:
        raise TxFailed(CODE_EMPTY_REVEAL, "a reveal must carry at least one tile")
    kernel, params = job_kernel_params(job)
    size = kernel.tile_bytes(params)
    seen = set(job.revealed)
    sampled = set(job.sampled)
    for tile in body.tiles:
        validate_revealed_tile(job, tile, sampled, seen, size)
        seen.add(tile.index)
        state.put(tile_key(job.id, tile.index), TileData(data=tile.data))
    job = dataclasses.replace(job, revealed=tuple(sorted(seen)))
    if len(seen) == len(job.sampled):
        job = _open_attestation(state, ctx, job)
    _put_job(state, job)


def validate_reveal_window(job: Job, ctx: BlockContext) -> None:
    """The job's tiles are sampled and its reveal window is still open."""
    if job.status in (STATUS_ASSIGNED, STATUS_COMMITTED):
        raise TxFailed(CODE_NOT_SAMPLED_YET,
                       f"job {job.id}'s tiles are not sampled yet (at height "
                       f"{job.sample_height or 'after the commit'})")
    if job.reveal_deadline and ctx.height > job.reveal_deadline:
        raise TxFailed(CODE_REVEAL_LATE,
                       f"late: job {job.id}'s reveal window closed at height "
                       f"{job.reveal_deadline}")
    if job.status != STATUS_SAMPLED:
        raise TxFailed(CODE_NOT_REVEALING, f"job {job.id} is not awaiting a reveal "
                                           f"(status {job.status})")


def validate_revealed_tile(job: Job, tile: RevealedTile, sampled: set[int], seen: set[int],
                           size: int) -> None:
    """One revealed tile: sampled, new, of the right size, proven against the job's root."""
    if tile.index not in sampled:
        raise TxFailed(CODE_TILE_NOT_SAMPLED, f"tile {tile.index} of job {job.id} was not "
                                              f"sampled")
    if tile.index in seen:
        raise TxFailed(CODE_TILE_ALREADY_REVEALED,
                       f"tile {tile.index} of job {job.id} is already revealed")
    if len(tile.data) != size:
        raise TxFailed(CODE_WRONG_TILE_SIZE,
                       f"wrong size: tile {tile.index} is {len(tile.data)} bytes, "
                       f"expected {size}")
    if not merkle.verify(job.root, tile.index, job.tiles, tile.data, tile.proof):
        raise TxFailed(CODE_BAD_PROOF, f"wrong proof: tile {tile.index} does not prove "
                                       f"against job {job.id}'s root")


def _open_attestation(state: State, ctx: BlockContext, job: Job) -> Job:
    """Every sampled tile is revealed: snapshot the committee and open the window."""
    end = ctx.height + ctx.params.compute.attest_window_blocks
    _push(state, deadline_key(end), job.id)
    _push(state, ATTESTING_KEY, job.id)
    return dataclasses.replace(job, status=STATUS_REVEALED, revealed_height=ctx.height,
                               attest_deadline=end, committee=select_committee(state))


def select_committee(state: State) -> tuple[CommitteeMember, ...]:
    """The epoch's queens with their bonded tokens as power, or, with none, the current
    validator set with its voting powers; members with no power are left out."""
    members = []
    for address in queens(state):
        validator = staking.get_validator(state, address)
        if validator is not None and validator.tokens > 0:
            members.append(CommitteeMember(validator=address, power=validator.tokens,
                                           operator=validator.operator))
    if not members:
        members = [CommitteeMember(validator=v.address, power=v.power, operator=v.operator)
                   for v in state.get_validator_set().validators if v.power > 0]
    return tuple(sorted(members, key=lambda m: m.validator))


# --- attesting and settling ----------------------------------------------------------------


def apply_attest(state: State, sender: bytes, body: Attest, ctx: BlockContext) -> None:
    """A committee member's verdict, sent by its validator key or operator, once per job,
    within the attestation window; the job settles when a verdict passes 2/3 of the power."""
    job = _require_job(state, body.job)
    if body.verdict not in (VERDICT_FAIL, VERDICT_PASS):
        raise TxFailed(CODE_BAD_VERDICT, f"verdict must be {VERDICT_FAIL} or {VERDICT_PASS}, "
                                         f"got {body.verdict}")
    validate_attest_window(job, ctx)
    member = next((m for m in job.committee if m.validator == body.validator), None)
    if member is None:
        raise TxFailed(CODE_NOT_COMMITTEE, f"{body.validator.hex()} is not on job {job.id}'s "
                                           f"committee")
    if sender not in (member.validator, member.operator):
        raise TxFailed(CODE_NOT_MEMBER_SIGNER, f"only validator {member.validator.hex()} or "
                                               f"its operator may attest for it")
    if has_attested(job, body.validator):
        raise TxFailed(CODE_ALREADY_ATTESTED, f"{body.validator.hex()} already attested job "
                                              f"{job.id}")
    vote = Attestation(validator=body.validator, verdict=body.verdict, height=ctx.height)
    job = dataclasses.replace(job, attestations=(*job.attestations, vote))
    if job.status == STATUS_REVEALED:
        verdict = compute_verdict(job)
        if verdict != NO_VERDICT:
            job = settle(state, ctx, job, verdict)
    _put_job(state, job)


def validate_attest_window(job: Job, ctx: BlockContext) -> None:
    """The job's tiles are all revealed and its attestation window is open."""
    if job.revealed_height == 0:
        raise TxFailed(CODE_NOT_REVEALED, f"job {job.id}'s sampled tiles are not all revealed")
    if job.closed or ctx.height > job.attest_deadline:
        raise TxFailed(CODE_ATTEST_CLOSED, f"job {job.id}'s attestation window closed at "
                                           f"height {job.attest_deadline}")


def settle(state: State, ctx: BlockContext, job: Job, verdict: int) -> Job:
    """The committee's verdict: pass pays the escrow to the treasury and credits the
    provider; fail slashes the provider and refunds the client."""
    if verdict == VERDICT_PASS:
        if job.price:
            buyback.pay_revenue(state, ESCROW, job.price)
        credit_provider(state, ctx, job.provider, job.tiles, job.kind == JOB_CHALLENGE)
        return _finish(state, ctx, dataclasses.replace(job, status=STATUS_PASSED,
                                                       verdict=verdict))
    return fail_job(state, ctx, dataclasses.replace(job, verdict=verdict), FAULT_VERDICT)


def fail_job(state: State, ctx: BlockContext, job: Job, fault: int) -> Job:
    """Slash `provider_slash_fraction` of the provider's collateral and refund the client."""
    fraction = ctx.params.compute.provider_slash_fraction
    slashed = slash_provider(state, job.provider, fraction.num, fraction.den,
                             job.kind == JOB_CHALLENGE)
    _refund(state, job)
    return _finish(state, ctx, dataclasses.replace(job, status=STATUS_FAILED, fault=fault,
                                                   slashed=slashed))


def _refund(state: State, job: Job) -> None:
    if job.price:
        move(state, ESCROW, job.client, stable=job.price)


def _finish(state: State, ctx: BlockContext, job: Job) -> Job:
    """The job has an outcome: it leaves its provider's open jobs and the open count."""
    close_job(state, job.provider, job.id, ctx.height)
    _count_open(state, -1)
    return dataclasses.replace(job, settled_height=ctx.height)


# --- deadlines -----------------------------------------------------------------------------


def process_deadlines(state: State, ctx: BlockContext) -> None:
    """End of block: jobs whose commit deadline, reveal window or attestation window ends
    here and that are still waiting for it are failed, expired or closed."""
    key = deadline_key(ctx.height)
    listed = state.get(key, JobIds)
    if listed is None:
        return
    for job_id in listed.ids:
        job = get_job(state, job_id)
        if job.status == STATUS_ASSIGNED and job.deadline == ctx.height:
            _put_job(state, fail_job(state, ctx, job, FAULT_NO_COMMIT))
        elif job.status == STATUS_SAMPLED and job.reveal_deadline == ctx.height:
            _put_job(state, fail_job(state, ctx, job, FAULT_NO_REVEAL))
        elif job.attest_deadline == ctx.height and not job.closed:
            _put_job(state, close_attestation(state, ctx, job))
    state.put(key, None)


def close_attestation(state: State, ctx: BlockContext, job: Job) -> Job:
    """The attestation window ends: a job without a verdict is refunded (no slash); members
    that attested against the verdict or not at all are penalised; tiles are deleted."""
    if job.status == STATUS_REVEALED:
        _refund(state, job)
        job = _finish(state, ctx, dataclasses.replace(job, status=STATUS_EXPIRED))
    penalties = sum(penalise_member(state, ctx, m.validator)
                    for m in job.committee if is_penalised(job, m.validator))
    for index in job.revealed:
        state.put(tile_key(job.id, index), None)
    _remove_attesting(state, job.id)
    return dataclasses.replace(job, penalties=penalties, closed=1)


def is_penalised(job: Job, validator: bytes) -> bool:
    """A member is penalised if it did not attest, or attested against the settled verdict."""
    vote = next((a for a in job.attestations if a.validator == validator), None)
    if vote is None:
        return True
    return job.verdict != NO_VERDICT and vote.verdict != job.verdict


def penalise_member(state: State, ctx: BlockContext, address: bytes) -> int:
    """Burn floor(attest_penalty x operator_rewards) of the member's validator from module
    "rewards"; returns the GPU burned (0 for a validator without a record)."""
    validator = staking.get_validator(state, address)
    if validator is None:
        return 0
    amount = ctx.params.compute.attest_penalty.floor_mul(validator.operator_rewards)
    if amount:
        burn(state, REWARDS, amount)
        state.put(staking_validator_key(address), dataclasses.replace(
            validator, operator_rewards=validator.operator_rewards - amount))
    return amount


# --- availability challenges -------------------------------------------------------------------


def challenge_seed(beacon: bytes, provider: bytes, epoch: int) -> bytes:
    """The seed of a provider's challenge: SHA-256("gannet/challenge" || beacon || provider
    || epoch as 8 bytes)."""
    return sha256(b"gannet/challenge" + beacon + provider + epoch.to_bytes(8, "big"))


def challenge_params(size: int) -> tuple[int, ...]:
    """The challenge's matmul_i8 params in schema order: m = n = k = size, 16 x 16 tiles."""
    return (size, size, size, CHALLENGE_TILE)


def issue_challenges(state: State, ctx: BlockContext) -> None:
    """First block of an epoch: every eligible provider gets a synthetic matmul_i8 job."""
    compute = ctx.params.compute
    values = challenge_params(compute.challenge_size)
    tiles = MATMUL_I8.tile_count(MATMUL_I8.validate_params(params_mapping(MATMUL_I8, values)))
    epoch = compute_epoch_of(ctx)
    for provider in eligible_providers(state, ctx):
        _open_job(state, ctx, JOB_CHALLENGE, NO_ADDRESS, provider.address,
                  MATMUL_I8.name.encode(), values,
                  challenge_seed(ctx.beacon, provider.address, epoch), 0, tiles,
                  ctx.height + compute.challenge_commit_blocks)


# --- block rules -----------------------------------------------------------------------------


def begin_block(state: State, ctx: BlockContext) -> None:
    """Before the txs: at an epoch start, pay the providers' last-epoch rewards and issue
    challenges; then sample due jobs' tiles and release matured deregistrations."""
    compute_providers.roll_epoch_earnings(state, ctx)
    if compute_providers.is_epoch_start(ctx):
        issue_challenges(state, ctx)
    sample_due_jobs(state, ctx)
    compute_providers.release_matured(state, ctx)


def end_block(state: State, ctx: BlockContext) -> None:
    """After the txs: jobs past a deadline fail, expire or close their attestation window."""
    process_deadlines(state, ctx)
