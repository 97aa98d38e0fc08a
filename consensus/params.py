"""Network parameters: every figure one network fixes in its genesis file.

Defaults are GPU.net's published token plan; a testnet changes any of them in
its genesis (`default_params(block_time_ms)` derives every duration for a
faster block time). The rules every node applies:

- Only integers and rationals (`Ratio`, a pair of integers); never a float.
  Every integer is an unsigned 64-bit value; amounts are GPU base units
  (1 GPU = 10^9); fractions of a whole written `_bps` are basis points (1/10000).
- Every duration is a count of blocks, derived once, here, from days at the
  target block time, so consensus never reads a clock.
- The target block time is 1000 ms (CometBFT's default commit timeout; one
  block a second keeps the plan's day-based durations whole numbers of blocks).
  The block time is a target, not a rule: blocks come as fast as rounds finish.
- Figures the plan does not publish (queen minimum stake, provider collateral,
  challenge windows, block sizes) are our choices and say so where defined.

`to_json` / `from_json` give the JSON form carried in genesis.json under
"params": groups are objects, a `Ratio` is `{"num": n, "den": d}`, a tier
table is a list of `{"min_licences": n, "factor": ratio}`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chain.codec import MAX_ENCODED_LEN
from chain.records import MAX_BLOCK_TXS, MAX_VALIDATORS
from chain.types import BASE_UNITS_PER_GPU, UINT64_MAX

T = TypeVar("T")
ParamProblem = tuple[str, str]
"""One problem with a parameter: (dotted path such as "staking.max_validators", message)."""

BPS = 10_000
MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
DAYS_PER_YEAR = 365
DEFAULT_BLOCK_TIME_MS = 1000
MAX_LICENCE_TIERS = 64
MAX_CHALLENGE_SAMPLES = 1024
CHALLENGE_TILE = 16  # the tile side of an availability challenge
MAX_CHALLENGE_SIZE = 1024  # the largest challenge matmul side
GPU = BASE_UNITS_PER_GPU

# Every duration parameter, as wall time at the target block time: (group, field) -> ms.
PLAN_DURATIONS_MS: dict[tuple[str, str], int] = {
    ("block", "epoch_blocks"): 1 * MS_PER_DAY,
    ("staking", "unbonding_period_blocks"): 28 * MS_PER_DAY,
    ("staking", "evidence_max_age_blocks"): 21 * MS_PER_DAY,
    ("staking", "downtime_jail_blocks"): 10 * MS_PER_MINUTE,
    ("tokenomics", "halving_period_blocks"): 2 * DAYS_PER_YEAR * MS_PER_DAY,
    ("tokenomics", "reward_lock_blocks"): 90 * MS_PER_DAY,
    ("tokenomics", "node_holder_vesting_blocks"): 2 * DAYS_PER_YEAR * MS_PER_DAY,
    ("tokenomics", "investor_cliff_blocks"): (DAYS_PER_YEAR // 2) * MS_PER_DAY,
    ("tokenomics", "investor_vesting_blocks"): 2 * DAYS_PER_YEAR * MS_PER_DAY,
    ("tokenomics", "buyback_period_blocks"): 90 * MS_PER_DAY,
    ("tokenomics", "buyback_interval_blocks"): 60 * MS_PER_MINUTE,
}


class ParamsError(ValueError):
    """Network parameters are malformed or inconsistent; `.problems` names each field."""

    def __init__(self, problems: str | Sequence[ParamProblem]) -> None:
        """Keep every (path, message) and say them all on one line."""
        self.problems: tuple[ParamProblem, ...] = (
            (("", problems),) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("; ".join(_format_problem(p, m) for p, m in self.problems))


def _is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def blocks_for_ms(duration_ms: int, block_time_ms: int) -> int:
    """The number of blocks that last at least `duration_ms` at the target block time."""
    if not _is_int(duration_ms) or duration_ms < 0:
        raise ParamsError(f"duration must be a non-negative integer of ms, got {duration_ms!r}")
    if not _is_int(block_time_ms) or block_time_ms <= 0:
        raise ParamsError(f"block time must be a positive integer of ms, got {block_time_ms!r}")
    return -(-duration_ms // block_time_ms)


def blocks_for_days(days: int, block_time_ms: int) -> int:
    """The number of blocks in `days` days at the target block time (rounded up)."""
    if not _is_int(days) or days < 0:
        raise ParamsError(f"days must be a non-negative integer, got {days!r}")
    return blocks_for_ms(days * MS_PER_DAY, block_time_ms)


def _plan_blocks(group: str, name: str) -> int:
    """The default block count of a duration parameter at the default block time."""
    return blocks_for_ms(PLAN_DURATIONS_MS[(group, name)], DEFAULT_BLOCK_TIME_MS)


# --- records ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ratio:
    """A non-negative rational num/den with den > 0, both fitting uint64.

    Equality compares the written pair (1/2 != 2/4); compare values with
    `compare_ratios`. Multiplying an amount rounds down (`floor_mul`).
    """

    num: int
    den: int

    def __post_init__(self) -> None:
        """Reject non-integers, a negative numerator and a zero denominator."""
        for name in ("num", "den"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ParamsError(f"ratio {name} must be an integer, got {type(value).__name__}")
            if not 0 <= value <= UINT64_MAX:
                raise ParamsError(f"ratio {name} must be in 0..{UINT64_MAX}, got {value}")
        if self.den == 0:
            raise ParamsError("ratio denominator must be positive, got 0")

    def __str__(self) -> str:
        """num/den."""
        return f"{self.num}/{self.den}"

    def floor_mul(self, value: int) -> int:
        """floor(value * num / den), exact for any integer `value`."""
        return value * self.num // self.den


ZERO = Ratio(0, 1)
ONE = Ratio(1, 1)


def compare_ratios(a: Ratio, b: Ratio) -> int:
    """-1, 0 or 1 as the value of `a` is below, equal to or above that of `b`."""
    left, right = a.num * b.den, b.num * a.den
    return (left > right) - (left < right)


@dataclass(frozen=True, slots=True)
class LicenceTier:
    """From `min_licences` node licences on, rewards weigh `n * factor`."""

    min_licences: int
    factor: Ratio


@dataclass(frozen=True, slots=True)
class AllocationBps:
    """How the total supply splits at genesis, in basis points (sum = 10000)."""

    network: int = 3500
    reserve: int = 2500
    foundation: int = 1500
    team: int = 1000
    treasury: int = 1000
    liquidity: int = 500


PLAN_LICENCE_TIERS = (
    LicenceTier(0, Ratio(1, 1)),
    LicenceTier(5, Ratio(6, 5)),
    LicenceTier(20, Ratio(3, 2)),
    LicenceTier(50, Ratio(8, 5)),
    LicenceTier(100, Ratio(2, 1)),
)


@dataclass(frozen=True, slots=True)
class BlockParams:
    """Block production: target block time, block and tx size limits, epoch length.

    Sizes are our choice: 10,000 txs and 4 MiB per block, 64 KiB per tx. An
    epoch (one day) is the period of per-epoch rules: licence-count snapshots
    and availability challenges.
    """

    block_time_ms: int = DEFAULT_BLOCK_TIME_MS
    max_block_txs: int = 10_000
    max_block_bytes: int = 4 * 1024 * 1024
    max_tx_bytes: int = 64 * 1024
    epoch_blocks: int = _plan_blocks("block", "epoch_blocks")

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


@dataclass(frozen=True, slots=True)
class StakingParams:
    """Validators: minimum self-stake, set size, unbonding, slashing and liveness.

    Defaults: 1000 GPU minimum (testnets use 100), 100 validators, 28-day
    unbonding, evidence accepted for 21 days (less than unbonding, so the stake
    is still there to slash), 5 % slash for a double sign, 0.01 % for downtime
    (signing fewer than half of the last 10,000 blocks), then 10 minutes jailed.
    """

    min_validator_stake: int = 1000 * GPU
    max_validators: int = 100
    unbonding_period_blocks: int = _plan_blocks("staking", "unbonding_period_blocks")
    evidence_max_age_blocks: int = _plan_blocks("staking", "evidence_max_age_blocks")
    slash_fraction_double_sign: Ratio = Ratio(5, 100)
    slash_fraction_downtime: Ratio = Ratio(1, 10_000)
    signed_blocks_window: int = 10_000
    min_signed_per_window: Ratio = Ratio(1, 2)
    downtime_jail_blocks: int = _plan_blocks("staking", "downtime_jail_blocks")

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


@dataclass(frozen=True, slots=True)
class TokenomicsParams:
    """Supply, allocation, emission, node multipliers, queens, vesting, buyback.

    Defaults are the plan's: 200M GPU, the 35/25/15/10/10/5 split, 30M GPU
    emitted over the first two years then halving every two years, the licence
    tiers giving 6x/30x/80x/200x at 5/20/50/100 licences, 21 queens earning a
    3/2 weight, rewards locked 90 days, node holders 5 % at launch then 2 years
    linear, investors a 6-month (182-day) cliff then 2 years linear, buyback
    over each 90-day quarter as a TWAP of hourly slices bounded by 1 %
    slippage, a 0.3 % pool fee. Our choices: queens need 10,000 GPU of stake;
    providers get half of each block's emission, validators the other half.
    """

    total_supply: int = 200_000_000 * GPU
    allocation_bps: AllocationBps = field(default_factory=AllocationBps)
    emission_first_period: int = 30_000_000 * GPU
    halving_period_blocks: int = _plan_blocks("tokenomics", "halving_period_blocks")
    licence_tiers: tuple[LicenceTier, ...] = PLAN_LICENCE_TIERS
    queen_min_stake: int = 10_000 * GPU
    max_queens: int = 21
    queen_bonus: Ratio = Ratio(3, 2)
    reward_lock_blocks: int = _plan_blocks("tokenomics", "reward_lock_blocks")
    provider_share: Ratio = Ratio(1, 2)
    node_holder_launch_unlock: Ratio = Ratio(5, 100)
    node_holder_vesting_blocks: int = _plan_blocks("tokenomics", "node_holder_vesting_blocks")
    investor_cliff_blocks: int = _plan_blocks("tokenomics", "investor_cliff_blocks")
    investor_vesting_blocks: int = _plan_blocks("tokenomics", "investor_vesting_blocks")
    buyback_period_blocks: int = _plan_blocks("tokenomics", "buyback_period_blocks")
    buyback_interval_blocks: int = _plan_blocks("tokenomics", "buyback_interval_blocks")
    buyback_max_slippage_bps: int = 100
    pool_fee_bps: int = 30

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


@dataclass(frozen=True, slots=True)
class ComputeParams:
    """Proof of compute: sampling target, challenge timing, provider collateral.

    The chain samples the fewest tiles k with 1 - (1 - f)^k ≥ P (P = 99/100 at
    f = 1/10 corrupt gives k = 44; see `compute_challenge_samples`). Our
    choices: tiles are picked 2 blocks after the commit, revealed within 20
    blocks and attested within 20 more; providers post 1000 GPU of collateral
    and lose a tenth of it per failed or missed job. A committee member that
    attests against the settled verdict or not at all loses 1/100 of its
    validator's operator rewards per job. A client's commit deadline is at most
    1000 blocks ahead; an availability challenge (a `challenge_size` cube
    matmul_i8 in 16 x 16 tiles) is due within 20 blocks.
    """

    detection_target: Ratio = Ratio(99, 100)
    corrupt_fraction: Ratio = Ratio(1, 10)
    challenge_delay_blocks: int = 2
    reveal_window_blocks: int = 20
    attest_window_blocks: int = 20
    provider_min_collateral: int = 1000 * GPU
    provider_slash_fraction: Ratio = Ratio(1, 10)
    attest_penalty: Ratio = Ratio(1, 100)
    max_deadline_blocks: int = 1000
    challenge_commit_blocks: int = 20
    challenge_size: int = 128

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


@dataclass(frozen=True, slots=True)
class FeeParams:
    """Transaction fees: the least fee, in GPU base units, a tx must pay."""

    min_fee: int = 1000

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Every network parameter, by group; the "params" object of genesis.json."""

    block: BlockParams = field(default_factory=BlockParams)
    staking: StakingParams = field(default_factory=StakingParams)
    tokenomics: TokenomicsParams = field(default_factory=TokenomicsParams)
    compute: ComputeParams = field(default_factory=ComputeParams)
    fee: FeeParams = field(default_factory=FeeParams)

    def validate(self) -> None:
        """Raise ParamsError naming every field that breaks a rule."""
        validate_params(self)


AnyParams = (
    BlockParams | StakingParams | TokenomicsParams | ComputeParams | FeeParams | NetworkParams
)


def default_params(block_time_ms: int = DEFAULT_BLOCK_TIME_MS) -> NetworkParams:
    """The plan's parameters with every duration re-derived for `block_time_ms`."""
    groups: dict[str, Any] = {
        f.name: getattr(NetworkParams(), f.name) for f in dataclasses.fields(NetworkParams)
    }
    groups["block"] = dataclasses.replace(groups["block"], block_time_ms=block_time_ms)
    for (group, name), duration_ms in PLAN_DURATIONS_MS.items():
        blocks = blocks_for_ms(duration_ms, block_time_ms)
        groups[group] = dataclasses.replace(groups[group], **{name: blocks})
    return NetworkParams(**groups)


# --- derived figures ----------------------------------------------------------


def compute_allocation_amount(tokenomics: TokenomicsParams, bucket: str) -> int:
    """Base units of the total supply in allocation `bucket` (e.g. "network"), rounded down."""
    return tokenomics.total_supply * getattr(tokenomics.allocation_bps, bucket) // BPS


def compute_licence_factor(licences: int, tiers: Sequence[LicenceTier]) -> Ratio:
    """The factor of the highest tier whose minimum `licences` reaches."""
    factor = ZERO
    for tier in tiers:
        if licences >= tier.min_licences:
            factor = tier.factor
    return factor


def compute_licence_weight(licences: int, tiers: Sequence[LicenceTier]) -> Ratio:
    """The reward weight `n * factor(n)` of a validator whose operator holds n licences."""
    factor = compute_licence_factor(licences, tiers)
    return Ratio(licences * factor.num, factor.den)


def compute_challenge_samples(compute: ComputeParams) -> int:
    """The fewest tiles k with 1 - (1 - f)^k ≥ P, f = corrupt_fraction, P = detection_target.

    Exact in integers: with f = a/b and P = c/d, k is the least k ≥ 1 with
    (b - a)^k * d ≤ (d - c) * b^k.
    """
    a, b = compute.corrupt_fraction.num, compute.corrupt_fraction.den
    c, d = compute.detection_target.num, compute.detection_target.den
    if not (0 < a <= b and c < d):
        raise ParamsError(
            f"need 0 < corrupt_fraction <= 1 and detection_target < 1, got "
            f"{compute.corrupt_fraction} and {compute.detection_target}"
        )
    miss, whole = b - a, b
    for k in range(1, MAX_CHALLENGE_SAMPLES + 1):
        if miss * d <= (d - c) * whole:
            return k
        miss, whole = miss * (b - a), whole * b
    raise ParamsError(
        f"detection_target {compute.detection_target} at corrupt_fraction "
        f"{compute.corrupt_fraction} needs more than {MAX_CHALLENGE_SAMPLES} tiles"
    )


# --- validation ---------------------------------------------------------------


def validate_params(params: AnyParams) -> None:
    """Raise ParamsError naming every field of `params` that breaks a rule."""
    problems = params_problems(params)
    if problems:
        raise ParamsError(problems)


def params_problems(params: AnyParams) -> list[ParamProblem]:
    """Every problem of a params group (or all of NetworkParams), with dotted field paths."""
    if isinstance(params, NetworkParams):
        return _network_problems(params)
    problems = _type_problems(params)
    if problems:
        return problems
    check = _GROUP_CHECKS.get(type(params))
    if check is None:
        raise TypeError(f"not a params group: {type(params).__name__}")
    return check(params)


def _network_problems(params: NetworkParams) -> list[ParamProblem]:
    """Each group's problems under its name, then the rules that span groups."""
    problems: list[ParamProblem] = []
    for f in dataclasses.fields(NetworkParams):
        group = getattr(params, f.name)
        if not isinstance(group, _GROUP_TYPES[f.name]):
            problems.append((f.name, f"expected {_GROUP_TYPES[f.name].__name__}"))
        else:
            problems += [(_join(f.name, p), m) for p, m in params_problems(group)]
    if problems:
        return problems
    return _cross_group_problems(params)


def _cross_group_problems(params: NetworkParams) -> list[ParamProblem]:
    """Rules between groups: queens are validators, stakes fit in the supply."""
    out: list[ParamProblem] = []
    staking, tokenomics = params.staking, params.tokenomics
    if tokenomics.max_queens > staking.max_validators:
        out.append(
            (
                "tokenomics.max_queens",
                f"must be at most staking.max_validators ({staking.max_validators}), "
                f"got {tokenomics.max_queens}",
            )
        )
    if tokenomics.queen_min_stake < staking.min_validator_stake:
        out.append(
            (
                "tokenomics.queen_min_stake",
                f"must be at least staking.min_validator_stake ({staking.min_validator_stake}), "
                f"got {tokenomics.queen_min_stake}",
            )
        )
    for path, value in (
        ("staking.min_validator_stake", staking.min_validator_stake),
        ("tokenomics.queen_min_stake", tokenomics.queen_min_stake),
        ("compute.provider_min_collateral", params.compute.provider_min_collateral),
    ):
        if value > tokenomics.total_supply:
            out.append(
                (path, f"must be at most total_supply ({tokenomics.total_supply}), got {value}")
            )
    return out


def _type_problems(params: Any) -> list[ParamProblem]:
    """Fields of the wrong Python type; integers outside uint64."""
    out: list[ParamProblem] = []
    hints = typing.get_type_hints(type(params))
    for f in dataclasses.fields(params):
        value, hint = getattr(params, f.name), hints[f.name]
        if hint is int:
            problem = _uint_problem(value)
            if problem:
                out.append((f.name, problem))
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            if not isinstance(value, tuple):
                out.append((f.name, f"expected a tuple, got {type(value).__name__}"))
            for index, entry in enumerate(value if isinstance(value, tuple) else ()):
                path = f"{f.name}[{index}]"
                if not isinstance(entry, item):
                    out.append((path, f"expected {item.__name__}, got {type(entry).__name__}"))
                else:
                    out += [(_join(path, p), m) for p, m in _type_problems(entry)]
        elif not isinstance(value, hint):
            out.append((f.name, f"expected {hint.__name__}, got {type(value).__name__}"))
        elif dataclasses.is_dataclass(value) and not isinstance(value, Ratio):
            out += [(_join(f.name, p), m) for p, m in _type_problems(value)]
    return out


def _block_problems(p: BlockParams) -> list[ParamProblem]:
    out: list[ParamProblem] = []
    _check_range(out, p, "block_time_ms", 1, MS_PER_DAY)
    _check_range(out, p, "max_block_txs", 1, MAX_BLOCK_TXS)
    _check_range(out, p, "max_block_bytes", 1, MAX_ENCODED_LEN)
    _check_range(out, p, "max_tx_bytes", 1, p.max_block_bytes)
    _check_range(out, p, "epoch_blocks", 1)
    return out


def _staking_problems(p: StakingParams) -> list[ParamProblem]:
    out: list[ParamProblem] = []
    _check_range(out, p, "min_validator_stake", 1)
    _check_range(out, p, "max_validators", 1, MAX_VALIDATORS)
    _check_range(out, p, "unbonding_period_blocks", 1)
    _check_range(out, p, "evidence_max_age_blocks", 1, p.unbonding_period_blocks)
    _check_ratio(out, p, "slash_fraction_double_sign", ZERO, ONE)
    _check_ratio(out, p, "slash_fraction_downtime", ZERO, ONE)
    _check_range(out, p, "signed_blocks_window", 1)
    _check_ratio(out, p, "min_signed_per_window", ZERO, ONE)
    return out


def _tokenomics_problems(p: TokenomicsParams) -> list[ParamProblem]:
    out: list[ParamProblem] = []
    _check_range(out, p, "total_supply", 1)
    total_bps = sum(getattr(p.allocation_bps, f.name) for f in dataclasses.fields(AllocationBps))
    if total_bps != BPS:
        out.append(("allocation_bps", f"must sum to {BPS} basis points, got {total_bps}"))
    else:
        network = compute_allocation_amount(p, "network")
        _check_range(out, p, "emission_first_period", 0, network)
    _check_range(out, p, "halving_period_blocks", 1)
    out += _licence_tier_problems(p.licence_tiers)
    _check_range(out, p, "max_queens", 1, MAX_VALIDATORS)
    _check_ratio(out, p, "queen_bonus", ONE, None)
    _check_ratio(out, p, "provider_share", ZERO, ONE)
    _check_ratio(out, p, "node_holder_launch_unlock", ZERO, ONE)
    _check_range(out, p, "node_holder_vesting_blocks", 1)
    _check_range(out, p, "investor_vesting_blocks", 1)
    _check_range(out, p, "buyback_period_blocks", 1)
    _check_range(out, p, "buyback_interval_blocks", 1, p.buyback_period_blocks)
    _check_range(out, p, "buyback_max_slippage_bps", 0, BPS)
    _check_range(out, p, "pool_fee_bps", 0, BPS - 1)
    return out


def _licence_tier_problems(tiers: tuple[LicenceTier, ...]) -> list[ParamProblem]:
    """Tiers start at 0 licences, rise strictly, and their factors never fall.

    A factor that never falls makes n * factor(n) superadditive: consolidating
    licences in one validator never pays less than splitting them.
    """
    if not 1 <= len(tiers) <= MAX_LICENCE_TIERS:
        return [("licence_tiers", f"must hold 1..{MAX_LICENCE_TIERS} tiers, got {len(tiers)}")]
    out: list[ParamProblem] = []
    if tiers[0].min_licences != 0:
        out.append(("licence_tiers[0].min_licences", f"must be 0, got {tiers[0].min_licences}"))
    for index, tier in enumerate(tiers):
        path = f"licence_tiers[{index}]"
        if tier.factor.num == 0:
            out.append((f"{path}.factor", "must be positive, got 0"))
        if index == 0:
            continue
        before = tiers[index - 1]
        if tier.min_licences <= before.min_licences:
            out.append(
                (
                    f"{path}.min_licences",
                    f"must be above the previous tier's "
                    f"{before.min_licences}, got {tier.min_licences}",
                )
            )
        if compare_ratios(tier.factor, before.factor) < 0:
            out.append(
                (
                    f"{path}.factor",
                    f"must be at least the previous tier's {before.factor}, got {tier.factor}",
                )
            )
    return out


def _compute_problems(p: ComputeParams) -> list[ParamProblem]:
    out: list[ParamProblem] = []
    before = len(out)
    _check_ratio(out, p, "detection_target", ZERO, ONE, low_open=True, high_open=True)
    _check_ratio(out, p, "corrupt_fraction", ZERO, ONE, low_open=True)
    if len(out) == before:
        try:
            compute_challenge_samples(p)
        except ParamsError as error:
            out.append(("detection_target", str(error)))
    _check_range(out, p, "challenge_delay_blocks", 1)
    _check_range(out, p, "reveal_window_blocks", 1)
    _check_range(out, p, "attest_window_blocks", 1)
    _check_ratio(out, p, "provider_slash_fraction", ZERO, ONE)
    _check_ratio(out, p, "attest_penalty", ZERO, ONE)
    _check_range(out, p, "max_deadline_blocks", 1)
    _check_range(out, p, "challenge_commit_blocks", 1)
    _check_range(out, p, "challenge_size", CHALLENGE_TILE, MAX_CHALLENGE_SIZE)
    if p.challenge_size % CHALLENGE_TILE:
        out.append(("challenge_size",
                    f"must be a multiple of {CHALLENGE_TILE}, got {p.challenge_size}"))
    return out


def _fee_problems(p: FeeParams) -> list[ParamProblem]:
    return []


_GROUP_CHECKS: dict[type, Any] = {
    BlockParams: _block_problems,
    StakingParams: _staking_problems,
    TokenomicsParams: _tokenomics_problems,
    ComputeParams: _compute_problems,
    FeeParams: _fee_problems,
}
_GROUP_TYPES: dict[str, type] = {
    "block": BlockParams,
    "staking": StakingParams,
    "tokenomics": TokenomicsParams,
    "compute": ComputeParams,
    "fee": FeeParams,
}


def _check_range(
    out: list[ParamProblem], params: Any, name: str, low: int, high: int = UINT64_MAX
) -> None:
    """Require low <= params.name <= high."""
    value = getattr(params, name)
    if not low <= value <= high:
        out.append((name, f"must be in {low}..{high}, got {value}"))


def _check_ratio(
    out: list[ParamProblem],
    params: Any,
    name: str,
    low: Ratio,
    high: Ratio | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Require params.name to lie between low and high (open ends excluded; None: no bound)."""
    value = getattr(params, name)
    above_low = compare_ratios(value, low) > (0 if low_open else -1)
    below_high = high is None or compare_ratios(value, high) < (0 if high_open else 1)
    if not (above_low and below_high):
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        out.append((name, f"must be in {left}{low}, {right}, got {value}"))


# --- JSON ---------------------------------------------------------------------


def to_json(params: Any) -> dict[str, Any]:
    """The JSON object of a params record (groups nest; a Ratio is {"num", "den"})."""
    return {f.name: _value_to_json(getattr(params, f.name)) for f in dataclasses.fields(params)}


def _value_to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_json(value)
    if isinstance(value, tuple):
        return [_value_to_json(item) for item in value]
    return value


def from_json(doc: Any, path: str = "params") -> NetworkParams:
    """NetworkParams from its JSON object; raises ParamsError listing every problem by path.

    Strict: integers only (a bool or float is an error), unknown keys are
    errors, a missing key takes its default (a Ratio or tier needs all its keys).
    """
    params, problems = parse_params_json(doc, path)
    if problems:
        raise ParamsError(problems)
    return params


def params_with_overrides(base: NetworkParams, overrides: Any,
                          path: str = "params") -> NetworkParams:
    """`base` with the parameters named in the JSON object `overrides` replaced.

    `overrides` has the shape of genesis "params" but may name any subset, e.g.
    {"tokenomics": {"halving_period_blocks": 100}}: a testnet compresses years into
    minutes this way. Raises ParamsError naming every problem by path.
    """
    if not isinstance(overrides, dict):
        raise ParamsError([(path, f"expected an object, got {describe_json_value(overrides)}")])
    return from_json(_merged_json(to_json(base), overrides), path)


def _merged_json(base: Any, overrides: Any) -> Any:
    """`base` with `overrides` laid over it, object by object (lists and scalars replace)."""
    if not (isinstance(base, dict) and isinstance(overrides, dict)):
        return overrides
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merged_json(base[key], value) if key in base else value
    return merged


def parse_params_json(doc: Any, path: str = "params") -> tuple[NetworkParams, list[ParamProblem]]:
    """NetworkParams and every problem of `doc`, each path prefixed with `path`.

    Where a value is malformed its default stands in, so the rules between
    fields are still checked and every problem is reported in one pass.
    """
    problems: list[ParamProblem] = []
    params = _record_from_json(NetworkParams, doc, path, problems, NetworkParams())
    assert params is not None  # a record with a default always comes back
    if not problems:
        problems += [(_join(path, p), m) for p, m in params_problems(params)]
    else:
        problems += [
            (_join(path, p), m)
            for p, m in params_problems(params)
            if not _covered(_join(path, p), problems)
        ]
    return params, problems


def _covered(path: str, problems: list[ParamProblem]) -> bool:
    """True iff a problem was already reported at `path` (its value is a stand-in default)."""
    return any(
        path == p or path.startswith(p + ".") or path.startswith(p + "[") for p, _ in problems
    )


def _record_from_json(
    cls: type[T], doc: Any, path: str, problems: list[ParamProblem], default: T | None
) -> T | None:
    """A params record from a JSON object; None (after reporting) when it cannot be built."""
    if not isinstance(doc, dict):
        problems.append((path, f"expected an object, got {describe_json_value(doc)}"))
        return default
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    ok = True
    for key in doc:
        if key not in names:
            problems.append((_join(path, str(key)), "unknown parameter"))
    values: dict[str, Any] = {}
    every_key_required = default is None or cls is Ratio  # half a ratio means nothing
    for name in names:
        fallback = None if every_key_required else getattr(default, name)
        if name not in doc:
            if every_key_required:
                problems.append((_join(path, name), "missing"))
                ok = False
            values[name] = fallback
            continue
        value = _value_from_json(hints[name], doc[name], _join(path, name), problems, fallback)
        ok = ok and value is not None
        values[name] = value
    if not ok:
        return default
    try:
        return cls(**values)
    except ParamsError as error:
        problems += [(path, m) for _, m in error.problems]
        return default


def _value_from_json(
    hint: Any, doc: Any, path: str, problems: list[ParamProblem], default: Any
) -> Any:
    """One field's value from JSON; the default (or None) after reporting a problem."""
    if hint is int:
        if _is_int(doc):
            return doc
        problems.append((path, f"expected an integer, got {describe_json_value(doc)}"))
        return default
    if typing.get_origin(hint) is tuple:
        return _tuple_from_json(typing.get_args(hint)[0], doc, path, problems, default)
    return _record_from_json(hint, doc, path, problems, default)


def _tuple_from_json(
    item: type, doc: Any, path: str, problems: list[ParamProblem], default: Any
) -> Any:
    """A tuple of records from a JSON list; the default if any entry is malformed."""
    if not isinstance(doc, list):
        problems.append((path, f"expected a list, got {describe_json_value(doc)}"))
        return default
    entries = [
        _record_from_json(item, entry, f"{path}[{index}]", problems, None)
        for index, entry in enumerate(doc)
    ]
    if any(entry is None for entry in entries):
        return default
    return tuple(entries)


# --- helpers ------------------------------------------------------------------


def _uint_problem(value: Any) -> str | None:
    """Why `value` is not a uint64, or None."""
    if not _is_int(value):
        return f"expected an integer, got {type(value).__name__}"
    if not 0 <= value <= UINT64_MAX:
        return f"must be in 0..{UINT64_MAX}, got {value}"
    return None


def describe_json_value(value: Any) -> str:
    """The JSON type of a decoded value, with the value when it is a short scalar."""
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
        type(None): "null",
    }
    name = names.get(type(value), type(value).__name__)
    if isinstance(value, bool | float) or (isinstance(value, str) and len(value) <= 48):
        return f"{name} {json.dumps(value)}"
    return name


def _join(path: str, name: str) -> str:
    """path.name, or name alone at the root; list indexes attach without a dot."""
    if not path:
        return name
    if not name:
        return path
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


def _format_problem(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message
