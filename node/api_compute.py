"""The proof-of-compute JSON-RPC methods: jobs, providers, kernels.

Every method reads the node's COMMITTED state (the store after the head block).
Wire conventions follow `node.api`: amounts (GPU collateral, stable prices,
credit) are decimal strings of base units, heights, ids and counts numbers,
addresses bech32, hashes and seeds 0x-hex; a height that is not known yet is
null.

- gannet_getJob(id): one job - state, provider, root, sampled and revealed
  tiles, committee, attestations, verdict.
- gannet_getJobs(filters): newest first; filters {"provider", "client",
  "state", "open", "limit"} (all optional; limit 1..1000, default 100).
- gannet_getProviders(): every provider with collateral, credit, jobs and
  challenges passed/failed.
- gannet_getKernels(): kernels (name, parameter schema, comparison class) and
  the chain's compute limits (samples per job, the largest tx, windows).
"""

from __future__ import annotations

from typing import Any

from chain.address import AddressError, encode_address, parse_address
from chain.records import VERDICT_FAIL, VERDICT_PASS
from chain.state import State
from chain.types import UINT64_MAX
from consensus import compute, compute_providers
from consensus.params import compute_challenge_samples
from node.rpc.errors import InvalidParams, NotFound
from vm.kernels import KERNELS, Kernel

DEFAULT_JOBS = 100
MAX_JOBS = 1000
MAX_SCANNED = 10_000  # jobs a filtered listing looks at, newest first
JOB_STATES = {
    compute.STATUS_ASSIGNED: "assigned", compute.STATUS_COMMITTED: "committed",
    compute.STATUS_SAMPLED: "sampled", compute.STATUS_REVEALED: "revealed",
    compute.STATUS_PASSED: "passed", compute.STATUS_FAILED: "failed",
    compute.STATUS_EXPIRED: "expired",
}
OPEN_STATES = frozenset({"assigned", "committed", "sampled", "revealed"})
FAULTS = {compute.FAULT_NONE: None, compute.FAULT_NO_COMMIT: "no_commit",
          compute.FAULT_NO_REVEAL: "no_reveal", compute.FAULT_VERDICT: "verdict"}
VERDICTS = {VERDICT_PASS: "pass", VERDICT_FAIL: "fail", compute.NO_VERDICT: None}
PROVIDER_STATES = {compute_providers.PROVIDER_ACTIVE: "active",
                   compute_providers.PROVIDER_DEREGISTERING: "deregistering",
                   compute_providers.PROVIDER_RELEASED: "released"}
JOB_FILTERS = frozenset({"provider", "client", "state", "open", "limit"})


class ComputeApi:
    """The proof-of-compute methods over a running node's committed state."""

    def __init__(self, node) -> None:
        self.node = node

    def methods(self) -> dict[str, Any]:
        """The method table, by JSON-RPC name."""
        return {
            "gannet_getJob": self.get_job,
            "gannet_getJobs": self.get_jobs,
            "gannet_getProviders": self.get_providers,
            "gannet_getKernels": self.get_kernels,
        }

    def state(self) -> State:
        """A read-only view of committed state."""
        return State(self.node.store.get_state)

    def get_job(self, job_id: Any) -> dict[str, Any]:
        """One job by id."""
        if type(job_id) is not int or not 0 <= job_id <= UINT64_MAX:
            raise InvalidParams(f"job id must be an integer from 0 to 2^64-1, got {job_id!r:.40}")
        job = compute.get_job(self.state(), job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job_json(job)

    def get_jobs(self, filters: Any = None) -> list[dict[str, Any]]:
        """Jobs matching `filters`, newest first."""
        wanted = JobFilter.parse({} if filters is None else filters)
        state = self.state()
        if wanted.provider is not None and wanted.open_only:
            jobs = compute.provider_open_jobs(state, wanted.provider)
            return [job_json(j) for j in jobs if wanted.matches(j)][: wanted.limit]
        newest = compute.get_counters(state).next_job - 1
        out: list[dict[str, Any]] = []
        for job_id in range(newest, max(newest - MAX_SCANNED, -1), -1):
            job = compute.get_job(state, job_id)
            if job is not None and wanted.matches(job):
                out.append(job_json(job))
                if len(out) == wanted.limit:
                    break
        return out

    def get_providers(self) -> list[dict[str, Any]]:
        """Every provider that ever registered, by address."""
        return [provider_json(p) for p in compute_providers.list_providers(self.state())]

    def get_kernels(self) -> dict[str, Any]:
        """The registered kernels and the chain's compute limits."""
        params = self.node.genesis.params
        c = params.compute
        return {
            "kernels": [kernel_json(KERNELS[name]) for name in sorted(KERNELS)],
            "samples": compute_challenge_samples(c),
            "max_tx_bytes": min(params.block.max_tx_bytes, self.node.config.mempool.max_tx_bytes),
            "challenge_delay_blocks": c.challenge_delay_blocks,
            "reveal_window_blocks": c.reveal_window_blocks,
            "attest_window_blocks": c.attest_window_blocks,
            "max_deadline_blocks": c.max_deadline_blocks,
            "provider_min_collateral": str(c.provider_min_collateral),
        }


class JobFilter:
    """What gannet_getJobs keeps: by provider, client, state name, open-ness; how many."""

    def __init__(self, provider: bytes | None, client: bytes | None, state: str | None,
                 open_only: bool, limit: int) -> None:
        self.provider, self.client, self.state = provider, client, state
        self.open_only, self.limit = open_only, limit

    @classmethod
    def parse(cls, filters: Any) -> JobFilter:
        """A filter from the request's object (InvalidParams names the bad field)."""
        if not isinstance(filters, dict):
            raise InvalidParams(f"filters must be an object, got {type(filters).__name__}")
        unknown = sorted(set(filters) - JOB_FILTERS)
        if unknown:
            raise InvalidParams(f"unknown filter {unknown[0]!r}; use {sorted(JOB_FILTERS)}")
        state = filters.get("state")
        if state is not None and state not in JOB_STATES.values():
            raise InvalidParams(f"state must be one of {sorted(JOB_STATES.values())}, "
                                f"got {state!r:.40}")
        open_only = filters.get("open", False)
        if type(open_only) is not bool:
            raise InvalidParams(f"open must be a boolean, got {open_only!r:.40}")
        limit = filters.get("limit", DEFAULT_JOBS)
        if type(limit) is not int or not 1 <= limit <= MAX_JOBS:
            raise InvalidParams(f"limit must be an integer from 1 to {MAX_JOBS}, "
                                f"got {limit!r:.40}")
        return cls(_optional_address(filters, "provider"), _optional_address(filters, "client"),
                   state, open_only, limit)

    def matches(self, job: compute.Job) -> bool:
        """Whether `job` passes every filter given."""
        name = JOB_STATES[job.status]
        return ((self.provider is None or job.provider == self.provider)
                and (self.client is None or job.client == self.client)
                and (self.state is None or name == self.state)
                and (not self.open_only or name in OPEN_STATES))


# --- JSON views -------------------------------------------------------------------------


def job_json(job: compute.Job) -> dict[str, Any]:
    """A job as JSON."""
    state = JOB_STATES[job.status]
    kernel_name = job.kernel.decode("ascii", "replace")
    kernel = KERNELS.get(kernel_name)
    names = [s.name for s in kernel.schema] if kernel is not None else []
    return {
        "id": job.id,
        "kind": "challenge" if job.kind == compute.JOB_CHALLENGE else "client",
        "client": None if job.kind == compute.JOB_CHALLENGE else encode_address(job.client),
        "provider": encode_address(job.provider),
        "kernel": kernel_name,
        "params": dict(zip(names, job.params, strict=False)),
        "param_list": list(job.params),
        "seed": _hex(job.seed),
        "price": str(job.price),
        "tiles": job.tiles,
        "state": state,
        "open": state in OPEN_STATES,
        "fault": FAULTS.get(job.fault, str(job.fault)),
        "submit_height": job.submit_height,
        "deadline": job.deadline,
        "root": None if job.status == compute.STATUS_ASSIGNED else _hex(job.root),
        "commit_height": job.commit_height or None,
        "sample_height": job.sample_height or None,
        "sampled": list(job.sampled),
        "revealed": list(job.revealed),
        "reveal_deadline": job.reveal_deadline or None,
        "revealed_height": job.revealed_height or None,
        "attest_deadline": job.attest_deadline or None,
        "committee": [{"validator": encode_address(m.validator), "power": str(m.power),
                       "operator": encode_address(m.operator)} for m in job.committee],
        "committee_power": str(compute.committee_power(job)),
        "attestations": [{"validator": encode_address(a.validator),
                          "verdict": VERDICTS.get(a.verdict), "height": a.height}
                         for a in job.attestations],
        "pass_power": str(compute.verdict_power(job, VERDICT_PASS)),
        "fail_power": str(compute.verdict_power(job, VERDICT_FAIL)),
        "verdict": VERDICTS.get(job.verdict),
        "settled_height": job.settled_height or None,
        "slashed": str(job.slashed),
        "penalties": str(job.penalties),
        "closed": bool(job.closed),
    }


def provider_json(p: compute_providers.Provider) -> dict[str, Any]:
    """A provider as JSON."""
    return {
        "address": encode_address(p.address),
        "status": PROVIDER_STATES.get(p.status, str(p.status)),
        "collateral": str(p.collateral),
        "licences": p.licences,
        "gpu": p.gpu.decode("utf-8", "replace"),
        "registered_height": p.registered_height,
        "release_height": p.release_height or None,
        "open_jobs": list(p.open_jobs),
        "credit_epoch": str(p.credit_epoch),
        "credit_epoch_number": p.credit_epoch_number,
        "credit_total": str(p.credit_total),
        "jobs_passed": p.jobs_passed,
        "jobs_failed": p.jobs_failed,
        "challenges_passed": p.challenges_passed,
        "challenges_failed": p.challenges_failed,
        "slashed_total": str(p.slashed_total),
        "rewards_total": str(p.rewards_total),
    }


def kernel_json(kernel: Kernel) -> dict[str, Any]:
    """A kernel's name, parameter schema and comparison class."""
    return {
        "name": kernel.name,
        "comparison": kernel.comparison,
        "tolerance": "0" if kernel.comparison == "exact" else "k^2 * 2^-22",
        "element": kernel.element,
        "output": kernel.out_dtype,
        "params": [{"name": s.name, "min": s.low, "max": s.high, "doc": s.doc}
                   for s in kernel.schema],
    }


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _optional_address(filters: dict[str, Any], name: str) -> bytes | None:
    value = filters.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidParams(f"{name} must be an address string, got {type(value).__name__}")
    try:
        return parse_address(value)
    except AddressError as exc:
        raise InvalidParams(f"invalid {name} address: {exc}") from exc
