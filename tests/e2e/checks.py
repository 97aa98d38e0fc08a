"""Invariants of a running testnet, checked over JSON-RPC on every node.

- `check_same_chain`: every node holds the same block (hash, app hash, parent
  link) at every height up to the lowest head: no fork, no divergent state.
- `wait_converged`: all nodes report one head (height, hash, app hash) at once.
- `check_commit_quorum`: a commit carries distinct signers of the height's
  validator set holding more than 2/3 of its power.
- `committed_evidence` / `check_no_evidence`: double-sign evidence in the chain.
- `wait_halted`: heights stop moving (a chain without quorum commits nothing).
- `total_gpu`: GPU held by a list of accounts, read at one height.
- `check_no_uncaught_exceptions` / `uncaught_in_logs`: tracebacks and ERROR lines in
  node logs; `read_rss_kib` / `check_rss`: resident memory under a bound, no growth.
- `check_no_double_signing` / `SignLedger`: no validator signed two messages for one
  height/round/step (commits, sign states, WALs, across feeds) and no evidence anywhere.

Reads are not snapshots (blocks commit between two calls), so checks that need
one height either bound what they read by the lowest head or retry until two
head reads agree.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.address import address_from_public_key, encode_address, parse_address
from chain.crypto import verify
from chain.records import (
    NO_POL_ROUND,
    STEP_PRECOMMIT,
    STEP_PROPOSE,
    VOTE_PRECOMMIT,
    Proposal,
    SignedVote,
    Vote,
)
from chain.signing import proposal_signing_bytes, verify_vote_signature, vote_signing_bytes
from chain.types import ZERO_HASH
from consensus.privval import STEP_OF_VOTE, load_sign_state
from consensus.wal import WalProposal, WalVote, scan_segment, segment_paths
from node.config import HomePaths
from node.keys import load_key_file
from tests.e2e.cluster import Cluster
from tests.e2e.harness import RpcError, account_gpu, rpc_batch, rpc_batch_chunked, rpc_call

POLL_S = 0.05
SNAPSHOT_ATTEMPTS = 50


def node_urls(cluster: Cluster, nodes: Iterable[int] | None = None) -> list[str]:
    """The RPC URLs of cluster nodes (default: all validators)."""
    chosen = range(cluster.n) if nodes is None else nodes
    return [cluster.node(i).url for i in chosen]


def head_heights(urls: Sequence[str]) -> list[int]:
    """Each node's committed height."""
    return [int(rpc_call(url, "gannet_status", timeout=5)["height"]) for url in urls]


def fetch_blocks(url: str, low: int, high: int) -> list[dict[str, Any]]:
    """Blocks low..high of one node (tx hashes only); each must be there."""
    calls = [("gannet_getBlockByNumber", [k, False]) for k in range(low, high + 1)]
    blocks = rpc_batch_chunked(url, calls)
    for k, block in zip(range(low, high + 1), blocks, strict=True):
        if isinstance(block, RpcError):
            raise AssertionError(f"{url}: block {k} of {high} unreadable: {block}")
        assert block["height"] == k, f"{url}: asked for block {k}, got {block['height']}"
    return blocks


def check_same_chain(urls: Sequence[str]) -> int:
    """Blocks 1..(lowest head) are identical on every node and linked; the lowest head.

    Identical means the same block hash, app hash and parent; the block hash
    covers the whole header, so state, validators and evidence agree as well.
    """
    low = min(head_heights(urls))
    chains = [fetch_blocks(url, 1, low) for url in urls]
    previous = "0x" + ZERO_HASH.hex()
    for k in range(1, low + 1):
        reference = chains[0][k - 1]
        for url, chain in zip(urls[1:], chains[1:], strict=True):
            block = chain[k - 1]
            assert (block["hash"], block["app_hash"]) == (reference["hash"],
                                                          reference["app_hash"]), (
                f"fork at height {k}: {urls[0]} has {reference['hash']} "
                f"(app {reference['app_hash']}), {url} has {block['hash']} "
                f"(app {block['app_hash']})")
        assert reference["prev_hash"] == previous, f"block {k} does not link to block {k - 1}"
        previous = reference["hash"]
    return low


def wait_converged(urls: Sequence[str], timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until every node reports the same head height, hash and app hash; that head."""
    deadline = time.monotonic() + timeout_s
    while True:
        heads = []
        for url in urls:
            try:
                status = rpc_call(url, "gannet_status", timeout=2)
            except (OSError, RpcError):
                status = None
            heads.append(None if status is None else
                         (status["height"], status["head_hash"], status["app_hash"]))
        if heads[0] is not None and all(h == heads[0] for h in heads):
            height, head_hash, app_hash = heads[0]
            return {"height": height, "head_hash": head_hash, "app_hash": app_hash}
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes did not converge on one head in {timeout_s:g} s: "
                                 f"{[h and h[:2] for h in heads]}")
        time.sleep(POLL_S)


def check_commit_quorum(url: str, height: int) -> dict[str, Any]:
    """The commit of `height` names the block there, by distinct signers of the height's
    validator set with more than 2/3 of its power; the commit."""
    commit = rpc_call(url, "gannet_getCommit", height)
    block = rpc_call(url, "gannet_getBlockByNumber", height, False)
    validators = rpc_call(url, "gannet_getValidators", height)
    assert (commit["height"], commit["block_hash"]) == (height, block["hash"]), commit
    power = {v["address"]: int(v["power"]) for v in validators["validators"]}
    signers = [s["validator"] for s in commit["signatures"]]
    assert len(set(signers)) == len(signers), f"a validator signed twice: {signers}"
    assert set(signers) <= set(power), f"signers outside the set: {set(signers) - set(power)}"
    signed = sum(power[s] for s in signers)
    total = int(validators["total_power"])
    assert total == sum(power.values()) and 3 * signed > 2 * total, (
        f"commit {height}: signers hold {signed} of {total}")
    return commit


def committed_evidence(url: str, validator: str | None = None) -> list[dict[str, Any]]:
    """The double-sign offences committed in the chain a node holds."""
    params = [] if validator is None else [validator]
    return rpc_call(url, "gannet_getEvidence", *params)["committed"]


def check_no_evidence(urls: Sequence[str]) -> None:
    """No node's chain holds evidence against anyone."""
    for url in urls:
        found = committed_evidence(url)
        assert not found, f"{url}: evidence committed against honest validators: {found}"


def wait_halted(urls: Sequence[str], quiet_s: float = 3.0,
                timeout_s: float = 15.0) -> list[int]:
    """Wait until no node's height changes for `quiet_s`; those heights.

    A block in flight when the quorum went away may still commit, so the quiet
    period starts at the last change; a chain that keeps committing fails.
    """
    deadline = time.monotonic() + timeout_s
    heights = head_heights(urls)
    since = time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"heights still change after {timeout_s:g} s: {heights}")
        time.sleep(POLL_S * 4)
        now = head_heights(urls)
        if now != heights:
            heights, since = now, time.monotonic()
    return heights


def total_gpu(url: str, addresses: Sequence[str]) -> tuple[int, int]:
    """(height, GPU held by `addresses`: balances plus locks), read at one height."""
    calls = [("gannet_blockNumber", []),
             *(("gannet_getAccount", [a]) for a in addresses),
             ("gannet_blockNumber", [])]
    for _ in range(SNAPSHOT_ATTEMPTS):
        first, *accounts, last = rpc_batch(url, calls)
        if first == last:
            return last, sum(account_gpu(a) for a in accounts)
        time.sleep(POLL_S)
    raise AssertionError(f"{url}: no two head reads agreed in {SNAPSHOT_ATTEMPTS} attempts")


# --- logs and memory (appended for the reliability scenarios) -------------------------------

# What an uncaught exception or a logged failure leaves in a node's log.
UNCAUGHT_MARKERS = ("Traceback (most recent call last)", "Task exception was never retrieved",
                    "Exception in callback", "Fatal Python error", " ERROR ", " CRITICAL ")
KIB = 1024


def uncaught_in_logs(paths: Iterable[Any],
                     markers: Sequence[str] = UNCAUGHT_MARKERS) -> list[str]:
    """Every log line (as 'file:line: text') carrying one of `markers`; [] for clean logs.

    A node's log holds every run since its home was made (each start appends),
    so one scan covers the runs before kills and restarts too.
    """
    found: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as log:
                text = log.read()
        except FileNotFoundError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in markers):
                found.append(f"{path}:{number}: {line[:300]}")
    return found


def check_no_uncaught_exceptions(cluster: Cluster, nodes: Iterable[int] | None = None) -> None:
    """No honest node's log (default: every validator) shows an uncaught exception or an
    ERROR/CRITICAL line."""
    paths = [cluster.node(i).log_path for i in (range(cluster.n) if nodes is None else nodes)]
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"node logs missing: {missing}"
    found = uncaught_in_logs(paths)
    assert not found, f"{len(found)} exception/error line(s) in honest logs:\n" + \
        "\n".join(found[:20])


def read_rss_kib(pid: int) -> int | None:
    """Resident memory of a process (VmRSS of /proc/PID/status) in KiB; None once it is gone
    (or a zombie without memory)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def rss_growth_kib(samples: Sequence[int]) -> int:
    """How much a run's memory grew: the median of its last third minus the median of its
    first third (samples in time order; 0 for fewer than 3)."""
    third = len(samples) // 3
    if third == 0:
        return 0
    first, last = sorted(samples[:third]), sorted(samples[-third:])
    return last[len(last) // 2] - first[len(first) // 2]


def check_rss(series: dict[tuple[int, int], Sequence[int]], bound_kib: int,
              growth_bound_kib: int, min_samples: int = 30) -> None:
    """Memory stayed bounded: every sample of every (node, pid) series under `bound_kib`,
    and no series of at least `min_samples` grew by more than `growth_bound_kib`
    (last third's median over first third's)."""
    over = {key: max(s) for key, s in series.items() if s and max(s) > bound_kib}
    assert not over, f"RSS above {bound_kib // KIB} MiB: " + ", ".join(
        f"node {node} pid {pid}: {kib // KIB} MiB" for (node, pid), kib in sorted(over.items()))
    grew = {key: rss_growth_kib(s) for key, s in series.items() if len(s) >= min_samples}
    grew = {key: g for key, g in grew.items() if g > growth_bound_kib}
    assert not grew, f"RSS grew more than {growth_bound_kib // KIB} MiB over a run: " + \
        ", ".join(f"node {node} pid {pid}: +{g // KIB} MiB"
                  for (node, pid), g in sorted(grew.items()))


# --- signatures: no honest double signing (appended for crash points and torn files) ---------

SignKey = tuple[bytes, int, int, int]  # (validator address, height, round, step)


@dataclass
class SignLedger:
    """Every signed consensus message seen, by (validator, height, round, step): the digest
    signed there. Fed at several moments (before a crash, after the restart, at the end),
    a second digest at one key is a double signature even if no node holds both at once.

    `sources` counts the records read from each source; `epochs[key]` lists the feeds
    (`epoch` numbers) that saw the key, so a test can tell a message compared before and
    after a crash from one seen once.
    """

    digests: dict[SignKey, tuple[bytes, str]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    epochs: dict[SignKey, set[int]] = field(default_factory=dict)
    epoch: int = 0

    def add(self, key: SignKey, digest: bytes, source: str) -> None:
        """Record that `key` signed `digest` (seen in `source`); a different digest is kept
        as a conflict."""
        self.sources[source.split(":")[0]] += 1
        self.epochs.setdefault(key, set()).add(self.epoch)
        known = self.digests.get(key)
        if known is None:
            self.digests[key] = (digest, source)
        elif known[0] != digest:
            self.conflicts.append(
                f"validator {encode_address(key[0])} signed two messages at height {key[1]} "
                f"round {key[2]} step {key[3]}: {known[0].hex()[:16]} ({known[1]}) and "
                f"{digest.hex()[:16]} ({source})")

    def keys_of(self, validator: bytes) -> list[SignKey]:
        """The keys `validator` was seen signing, in (height, round, step) order."""
        return sorted(k for k in self.digests if k[0] == validator)

    def add_home(self, home: Path, chain_id: str, public_keys: dict[bytes, bytes]) -> None:
        """The home's sign state (its validator's last signatures) and every signed vote and
        proposal in its WAL (own and received; ones whose signature does not verify against
        `public_keys` are skipped). Safe on a running node: a segment deleted meanwhile is
        skipped, a half-written last frame read as a torn tail."""
        paths = HomePaths(home)
        if paths.validator_key_file.exists():
            address = address_from_public_key(load_key_file(paths.validator_key_file).public_key)
            state = load_sign_state(paths.sign_state_file)
            if state is not None and state.height > 0:
                where = f"sign-state:{home.name}"
                self.add((address, state.height, state.round, state.step), state.sign_bytes,
                         where)
                for earlier in state.recent:
                    self.add((address, state.height, earlier.round, earlier.step),
                             earlier.sign_bytes, where)
        if not paths.wal_dir.is_dir():
            return
        segments = segment_paths(paths.wal_dir)
        for i, path in enumerate(segments):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # rotated away since the listing
            scan = scan_segment(path, data, is_last=i == len(segments) - 1)
            for entry in scan.entries:
                self._add_wal_entry(entry, chain_id, public_keys, f"wal:{home.name}")

    def _add_wal_entry(self, entry: Any, chain_id: str, public_keys: dict[bytes, bytes],
                       source: str) -> None:
        if isinstance(entry, WalVote):
            vote = entry.vote.vote
            key = public_keys.get(vote.validator)
            if key is not None and verify_vote_signature(chain_id, entry.vote, key):
                self.add((vote.validator, vote.height, vote.round,
                          STEP_OF_VOTE[vote.vote_type]),
                         vote_signing_bytes(chain_id, vote), source)
        elif isinstance(entry, WalProposal):
            proposal = entry.proposal.proposal
            key = public_keys.get(proposal.proposer)
            digest = proposal_signing_bytes(chain_id, proposal)
            if key is not None and verify(key, digest, entry.proposal.signature):
                self.add((proposal.proposer, proposal.height, proposal.round, STEP_PROPOSE),
                         digest, source)

    def add_commits(self, url: str, chain_id: str, public_keys: dict[bytes, bytes]) -> int:
        """Every precommit in the commits of blocks 1..head of one node, and the round-0
        proposal each round-0 commit implies (a block decided in round 0 was proposed
        fresh, pol_round -1, by the block's proposer); the head read."""
        head = int(rpc_call(url, "gannet_status", timeout=5)["height"])
        calls: list[tuple[str, Sequence[Any]]] = []
        for k in range(1, head + 1):
            calls += [("gannet_getCommit", [k]), ("gannet_getBlockByNumber", [k, False])]
        answers = rpc_batch_chunked(url, calls)
        for commit, block in zip(answers[::2], answers[1::2], strict=True):
            if isinstance(commit, RpcError) or isinstance(block, RpcError):
                raise AssertionError(f"{url}: commit or block unreadable: {commit} {block}")
            self._add_commit(commit, block, chain_id, public_keys, f"commit:{url}")
        return head

    def _add_commit(self, commit: dict[str, Any], block: dict[str, Any], chain_id: str,
                    public_keys: dict[bytes, bytes], source: str) -> None:
        height, round_ = int(commit["height"]), int(commit["round"])
        block_hash_ = bytes.fromhex(commit["block_hash"][2:])
        for sig in commit["signatures"]:
            validator = parse_address(sig["validator"])
            vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=round_,
                        block_hash=block_hash_, validator=validator)
            signed = SignedVote(vote=vote, signature=bytes.fromhex(sig["signature"][2:]))
            key = public_keys.get(validator)
            assert key is not None and verify_vote_signature(chain_id, signed, key), (
                f"{source}: commit {height} holds a precommit of {sig['validator']} that "
                "does not verify")
            self.add((validator, height, round_, STEP_PRECOMMIT),
                     vote_signing_bytes(chain_id, vote), source)
        if round_ == 0:
            proposer = parse_address(block["proposer"])
            proposal = Proposal(height=height, round=0, pol_round=NO_POL_ROUND,
                                block_hash=block_hash_, proposer=proposer)
            self.add((proposer, height, 0, STEP_PROPOSE),
                     proposal_signing_bytes(chain_id, proposal), f"{source}:proposal")


def home_public_keys(homes: Iterable[Path]) -> dict[bytes, bytes]:
    """Validator address -> public key, from the validator key files of `homes`."""
    keys = {}
    for home in homes:
        path = HomePaths(home).validator_key_file
        if path.exists():
            public_key = load_key_file(path).public_key
            keys[address_from_public_key(public_key)] = public_key
    return keys


def home_chain_id(home: Path) -> str:
    """The chain id in a home's genesis file."""
    return json.loads(HomePaths(home).genesis_file.read_text())["chain_id"]


def check_no_double_signing(urls: Sequence[str], homes: Sequence[Path],
                            ledger: SignLedger | None = None) -> SignLedger:
    """No validator signed two different messages for one (height, round, step): not in
    the commits of any node's chain (precommits, round-0 proposals), not in any home's
    sign state or WAL (what each node signed and received), not across the earlier
    feeds of `ledger`; and no node holds evidence of double signing, committed or
    pending (an honest node's engine turns two conflicting votes it sees into evidence).

    `homes` are every node's home (their key files give the public keys checked);
    `urls` the nodes up now. Returns the ledger, one epoch further on.
    """
    ledger = SignLedger() if ledger is None else ledger
    chain_id = home_chain_id(homes[0])
    public_keys = home_public_keys(homes)
    for home in homes:
        ledger.add_home(Path(home), chain_id, public_keys)
    for url in urls:
        ledger.add_commits(url, chain_id, public_keys)
        evidence = rpc_call(url, "gannet_getEvidence", timeout=5)
        assert not evidence["committed"] and evidence["pending"] == 0, (
            f"{url}: evidence of double signing among honest validators: {evidence}")
    ledger.epoch += 1
    assert not ledger.conflicts, "double signing:\n" + "\n".join(ledger.conflicts[:20])
    return ledger
