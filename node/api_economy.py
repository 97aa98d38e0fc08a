"""The token economy's JSON-RPC methods: staking, rewards, supply, the pool, the buyback.

Every method reads the node's COMMITTED state (the store after the head block),
never a block being executed. Wire conventions follow `node.api`: amounts are
decimal strings of base units, heights and counts numbers, addresses bech32.
Ratios come as `{"num": "...", "den": "...", "decimal": "0.25"}`: the exact
fraction and a decimal rounded down to 9 places.

Validator records are those of the head, whatever height `gannet_getValidators`
is asked about: staking history is not kept per height.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Any

from chain.address import AddressError, encode_address, parse_address
from chain.codec import decode
from chain.records import (
    QUEEN_IN,
    Account,
    Delegation,
    RedelegationQueue,
    StakingValidator,
    UnbondingQueue,
)
from chain.state import (
    ACCOUNT_PREFIX,
    DELEGATION_PREFIX,
    MODULE_ADDRESSES,
    REDELEGATION_PREFIX,
    UNBONDING_PREFIX,
    State,
)
from chain.types import UINT64_MAX
from consensus import buyback, distribution, exchange, projection, slashing, staking
from consensus.emission import (
    block_emission,
    network_allocation,
    period_emission,
    period_of,
)
from consensus.params import NetworkParams, ParamsError, Ratio
from consensus.supply import get_supply, total_supply
from consensus.transition import spendable_gpu
from node.rpc.errors import InvalidParams

ADDRESS_LEN = 20
MAX_HALVINGS_SHOWN = 64  # the 64th halving leaves nothing to emit
_DECIMAL = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")
DECIMAL_PLACES = 9
DEFAULT_HISTORY = 20
MAX_HISTORY = 1000
SLICE_REASONS = {
    buyback.REASON_BOUGHT: "bought", buyback.REASON_NO_POOL: "no_pool",
    buyback.REASON_NO_PRICE: "no_price", buyback.REASON_ZERO_OUTPUT: "zero_output",
    buyback.REASON_SLIPPAGE: "slippage", buyback.REASON_TREASURY_SHORT: "treasury_short",
}


class EconomyApi:
    """The token-economy methods over a running node's committed state."""

    def __init__(self, node) -> None:
        self.node = node
        self._locked_cache: tuple[int, int] | None = None  # (head height, Σ locked GPU)

    def methods(self) -> dict[str, Any]:
        """The method table, by JSON-RPC name (gannet_getValidators lives in `node.api`)."""
        return {
            "gannet_getDelegations": self.get_delegations,
            "gannet_getRewards": self.get_rewards,
            "gannet_getSupply": self.get_supply,
            "gannet_getPool": self.get_pool,
            "gannet_getBuyback": self.get_buyback,
            "gannet_projectSupply": self.project_supply,
        }

    # --- shared reads ---------------------------------------------------------

    def state(self) -> State:
        """A read-only view of committed state."""
        return State(self.node.store.get_state)

    @property
    def params(self) -> NetworkParams:
        """The chain's parameters (from genesis)."""
        return self.node.genesis.params

    @property
    def first_height(self) -> int:
        """The chain's first height (genesis initial_height)."""
        return self.node.genesis.initial_height

    # --- validators -----------------------------------------------------------

    def staking_records(self, state: State) -> list[tuple[bytes, StakingValidator]]:
        """(address, record) of every validator with a staking record, by address."""
        return [(v.address, v) for v in staking.list_validators(state)]

    def validator_details(self, state: State) -> dict[bytes, dict[str, Any]]:
        """Staking, reward and liveness fields of every validator with a staking record."""
        weights = {address: (num, den) for address, num, den
                   in distribution.validator_weights(state, self.params)}
        queens = frozenset(distribution.queens(state))
        return {address: staking_json(v, weights.get(address), address in queens,
                                      _missed_count(state, address))
                for address, v in self.staking_records(state)}

    # --- delegations ----------------------------------------------------------

    def get_delegations(self, address: str) -> dict[str, Any]:
        """Delegations (shares, tokens, pending rewards), unbonding entries, redelegations."""
        delegator = _address(address)
        state = self.state()
        return {
            "address": encode_address(delegator),
            "delegations": [delegation_json(state, delegator, validator, d)
                            for validator, d in self._delegations(delegator)],
            "unbonding": [unbonding_json(validator, e)
                          for validator, e in self._unbondings(delegator)],
            "redelegations": [redelegation_json(source, e)
                              for source, e in self._redelegations(delegator)],
        }

    def _delegations(self, delegator: bytes) -> list[tuple[bytes, Delegation]]:
        """(validator, delegation) of a delegator, by validator address (a prefix scan)."""
        prefix = DELEGATION_PREFIX + delegator
        return [(key[len(prefix):], decode(Delegation, raw))
                for key, raw in self.node.store.iter_state(prefix)
                if len(key) == len(prefix) + ADDRESS_LEN]

    def _unbondings(self, delegator: bytes) -> list[tuple[bytes, Any]]:
        """(validator, entry) of the delegator's unbonding entries, by validator then age."""
        return [(validator, entry) for validator, queue
                in self._queues(UNBONDING_PREFIX, UnbondingQueue)
                for entry in queue.entries if entry.delegator == delegator]

    def _redelegations(self, delegator: bytes) -> list[tuple[bytes, Any]]:
        """(source, entry) of the delegator's live redelegations, by source then age."""
        return [(source, entry) for source, queue
                in self._queues(REDELEGATION_PREFIX, RedelegationQueue)
                for entry in queue.entries if entry.delegator == delegator]

    def _queues(self, prefix: bytes, cls: type) -> list[tuple[bytes, Any]]:
        """(validator, queue) of every per-validator queue under `prefix`."""
        return [(key[len(prefix):], decode(cls, raw))
                for key, raw in self.node.store.iter_state(prefix)
                if len(key) == len(prefix) + ADDRESS_LEN]

    # --- rewards --------------------------------------------------------------

    def get_rewards(self, address: str) -> dict[str, Any]:
        """Pending rewards per validator (delegation part, operator part) and locked GPU."""
        owner = _address(address)
        state = self.state()
        validators = sorted({v for v, _ in self._delegations(owner)}
                            | {v.address for v in staking.list_validators(state)
                               if v.operator == owner})
        rows = [reward_json(state, owner, v) for v in validators]
        account = state.get_account(owner)
        height = self.node.head.height + 1
        return {
            "address": encode_address(owner),
            "rewards": rows,
            "total_pending": str(sum(int(row["total"]) for row in rows)),
            "locked": str(account.gpu - spendable_gpu(account, height)),
            "locks": [{"amount": str(lk.amount), "release_height": lk.release_height}
                      for lk in account.locks if lk.release_height > height],
        }

    # --- supply ---------------------------------------------------------------

    def get_supply(self) -> dict[str, Any]:
        """Total, genesis, minted, burned, circulating, locked, bonded, unbonding, emission."""
        state = self.state()
        totals = get_supply(state)
        staking_totals = staking.get_staking_totals(state)
        modules = {name: state.get_account(address).gpu
                   for name, address in sorted(MODULE_ADDRESSES.items())}
        total = total_supply(totals)
        locked = self._locked_gpu()
        next_height = self.node.head.height + 1
        return {
            "height": self.node.head.height,
            "total": str(total),
            "genesis": str(totals.genesis_gpu),
            "minted": str(totals.minted),
            "burned": str(totals.burned),
            "circulating": str(max(total - sum(modules.values()) - locked, 0)),
            "locked": str(locked),
            "bonded": str(staking_totals.bonded),
            "unbonding": str(staking_totals.unbonding),
            "modules": {name: str(amount) for name, amount in modules.items()},
            "stable_issued": str(totals.stable_issued),
            "emission": self._emission(next_height, totals.minted),
        }

    def _emission(self, height: int, minted: int) -> dict[str, Any]:
        """The next block's emission and where the halving schedule stands."""
        tokenomics = self.params.tokenomics
        period = period_of(tokenomics, self.first_height, height)
        return {
            "next_block": str(block_emission(tokenomics, self.first_height, height, minted)),
            "halving_period": period,
            "period_emission": str(period_emission(tokenomics, period)),
            "period_blocks": tokenomics.halving_period_blocks,
            "next_halving_height":
                self.first_height + (period + 1) * tokenomics.halving_period_blocks,
            "network_allocation": str(network_allocation(tokenomics)),
            "allocation_left": str(max(network_allocation(tokenomics) - minted, 0)),
        }

    def _locked_gpu(self) -> int:
        """Σ GPU still locked in accounts at the next height (one scan per head height)."""
        height = self.node.head.height
        if self._locked_cache is not None and self._locked_cache[0] == height:
            return self._locked_cache[1]
        locked = 0
        for key, raw in self.node.store.iter_state(ACCOUNT_PREFIX):
            if len(key) == len(ACCOUNT_PREFIX) + ADDRESS_LEN:
                account = decode(Account, raw)
                if account.locks:
                    locked += account.gpu - spendable_gpu(account, height + 1)
        self._locked_cache = (height, locked)
        return locked

    # --- pool -----------------------------------------------------------------

    def get_pool(self, address: str | None = None) -> dict[str, Any]:
        """Reserves, spot price, LP shares in issue, fee; with an address, its LP shares.

        The spot price is stable base units per GPU base unit (stable reserve / GPU
        reserve): stable per GPU, both having 9 decimals; the unit of
        `gannet_projectSupply`'s price.
        """
        state = self.state()
        pool = exchange.get_pool(state)
        out = {
            "live": exchange.is_live(pool),
            "gpu": str(pool.gpu),
            "stable": str(pool.stable),
            "lp_shares": str(pool.shares),
            "fee_bps": self.params.tokenomics.pool_fee_bps,
            "spot_price": ratio_json(pool.stable, pool.gpu) if exchange.is_live(pool) else None,
        }
        if address is not None:
            owner = _address(address)
            out["owner"] = encode_address(owner)
            out["owner_shares"] = str(exchange.get_lp_shares(state, owner))
        return out


    # --- buyback --------------------------------------------------------------

    def get_buyback(self, limit: int = DEFAULT_HISTORY) -> dict[str, Any]:
        """The treasury's stable, the buyback's period and totals, and the latest `limit` slices."""
        limit = _check_int(limit, "limit", 0, MAX_HISTORY)
        state = self.state()
        current = buyback.get_buyback_state(state)
        tokenomics = self.params.tokenomics
        return {
            "treasury_stable": str(state.get_account(buyback.TREASURY).stable),
            "started": current.begun != 0,
            "period": current.period,
            "period_blocks": tokenomics.buyback_period_blocks,
            "interval_blocks": tokenomics.buyback_interval_blocks,
            "slices_per_period":
                tokenomics.buyback_period_blocks // tokenomics.buyback_interval_blocks,
            "max_slippage_bps": tokenomics.buyback_max_slippage_bps,
            "budget": str(current.budget),
            "spent": str(current.spent),
            "slices_done": current.slices_done,
            "slices_skipped": current.slices_skipped,
            "revenue_total": str(current.revenue_total),
            "burned_total": str(current.burned_total),
            "history": [slice_json(s) for s in self._recent_slices(limit)],
        }

    def _recent_slices(self, limit: int) -> list[Any]:
        """The latest `limit` slices, newest first (a scan of the history prefix)."""
        if limit == 0:
            return []
        latest: deque[tuple[bytes, bytes]] = deque(maxlen=limit)
        latest.extend(self.node.store.iter_state(buyback.HISTORY_PREFIX))
        return list(reversed(buyback.decode_history(latest)))


    # --- projection -----------------------------------------------------------

    def project_supply(self, years: int, revenue_per_year: int | str = "0",
                       price: Any = None) -> dict[str, Any]:
        """Supply year by year: the chain's emission schedule against a modelled buyback burn.

        `revenue_per_year` is stable base units; `price` the GPU price in stable
        base units per GPU base unit, as a decimal string ("0.5"), {"num", "den"},
        or null for the pool's spot price.
        """
        years = _check_int(years, "years", 0, projection.MAX_PROJECTION_YEARS)
        revenue = _amount_param(revenue_per_year, "revenue_per_year")
        gpu_price = self._price(price)
        params, first = self.params, self.first_height
        try:
            rows = projection.project_supply(params, first, years, revenue, gpu_price)
        except projection.ProjectionError as exc:
            raise InvalidParams(str(exc)) from exc
        crossover = projection.find_crossover(rows)
        halvings = min(projection.periods_covering(params, years), MAX_HALVINGS_SHOWN)
        return {
            "years": years,
            "revenue_per_year": str(revenue),
            "price": ratio_json(gpu_price.num, gpu_price.den),
            "genesis_supply": str(projection.genesis_supply(params)),
            "rows": [year_json(row) for row in rows],
            "crossover_year": None if crossover is None else crossover.year,
            "halving_heights": projection.halving_heights(params, first, halvings),
        }

    def _price(self, value: Any) -> Ratio:
        """The `price` parameter as a positive ratio (null: the pool's spot price)."""
        if value is None:
            pool = exchange.get_pool(self.state())
            if not exchange.is_live(pool):
                raise InvalidParams("the pool has no liquidity; give a price")
            return Ratio(pool.stable, pool.gpu)
        return _ratio_param(value, "price")


# --- JSON views ---------------------------------------------------------------


def staking_json(v: StakingValidator, weight: tuple[int, int] | None, selected_queen: bool,
                 missed: int) -> dict[str, Any]:
    """A validator's staking record as RPC fields (weight None: not a reward recipient)."""
    return {
        "tokens": str(v.tokens),
        "delegator_shares": str(v.shares),
        "commission_bps": v.commission_bps,
        "reward_weight": None if weight is None else ratio_json(*weight),
        "bound_licences": v.bound_licences,
        "queen": {"opted_in": v.queen == QUEEN_IN, "selected": selected_queen},
        "jailed": v.jailed != 0,
        "tombstoned": v.tombstoned != 0,
        "jailed_until": v.jailed_until,
        "missed_blocks": missed,
        "operator_rewards": str(v.operator_rewards),
        "created_height": v.created_height,
    }


NO_STAKING: dict[str, Any] = {
    "tokens": None, "delegator_shares": None, "commission_bps": None, "reward_weight": None,
    "bound_licences": None, "queen": None, "jailed": None, "tombstoned": None,
    "jailed_until": None, "missed_blocks": None, "operator_rewards": None,
    "created_height": None,
}  # the staking fields of a set member without a staking record (none after genesis)


def delegation_json(state: State, delegator: bytes, validator_address: bytes,
                    delegation: Delegation) -> dict[str, Any]:
    """One delegation: shares, what they are worth now, rewards pending on them."""
    validator = staking.get_validator(state, validator_address)
    tokens = 0 if validator is None else staking.delegation_tokens(validator, delegation.shares)
    return {
        "validator": encode_address(validator_address),
        "shares": str(delegation.shares),
        "tokens": str(tokens),
        "pending_rewards": str(staking.pending_rewards(state, delegator, validator_address)),
    }


def unbonding_json(validator: bytes, entry: Any) -> dict[str, Any]:
    """One unbonding entry of a delegator."""
    return {"validator": encode_address(validator), "creation_height": entry.creation_height,
            "completion_height": entry.completion_height,
            "initial_balance": str(entry.initial_balance), "balance": str(entry.balance)}


def redelegation_json(source: bytes, entry: Any) -> dict[str, Any]:
    """One live redelegation of a delegator (slashable for the source's offences until done)."""
    return {"source": encode_address(source), "target": encode_address(entry.target),
            "creation_height": entry.creation_height,
            "completion_height": entry.completion_height,
            "initial_balance": str(entry.initial_balance), "shares": str(entry.shares)}


def reward_json(state: State, owner: bytes, validator_address: bytes) -> dict[str, Any]:
    """What `owner` can withdraw from one validator: delegation part and operator part."""
    validator = staking.get_validator(state, validator_address)
    total = staking.pending_rewards(state, owner, validator_address)
    operator = (validator.operator_rewards
                if validator is not None and validator.operator == owner else 0)
    return {"validator": encode_address(validator_address),
            "delegation_rewards": str(total - operator), "operator_rewards": str(operator),
            "total": str(total)}


def slice_json(entry: Any) -> dict[str, Any]:
    """One buyback slice: what it spent and burned, or why it was skipped."""
    return {"height": entry.height, "stable_in": str(entry.stable_in),
            "gpu_burned": str(entry.gpu_burned), "skipped": entry.skipped != 0,
            "reason": SLICE_REASONS.get(entry.reason, str(entry.reason))}


def year_json(row: Any) -> dict[str, Any]:
    """One projected year."""
    return {"year": row.year, "end_height": row.end_height, "emitted": str(row.emitted),
            "burned": str(row.burned), "minted_total": str(row.minted_total),
            "burned_total": str(row.burned_total), "supply": str(row.supply)}


def ratio_json(num: int, den: int) -> dict[str, str]:
    """An exact ratio and its decimal, rounded down to DECIMAL_PLACES places."""
    return {"num": str(num), "den": str(den), "decimal": decimal_string(num, den)}


def decimal_string(num: int, den: int, places: int = DECIMAL_PLACES) -> str:
    """num/den as a decimal rounded down to `places` places, trailing zeros trimmed."""
    if den <= 0 or num < 0:
        raise ValueError(f"cannot show {num}/{den} as a non-negative decimal")
    whole, rest = divmod(num, den)
    digits = f"{rest * 10**places // den:0{places}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _missed_count(state: State, address: bytes) -> int:
    """Blocks the validator missed in its current liveness window."""
    info = slashing.get_signing_info(state, address)
    return 0 if info is None else info.missed_count


def _address(value: Any) -> bytes:
    """A bech32 (or 0x-hex) address parameter, else InvalidParams."""
    if type(value) is not str:
        raise InvalidParams(f"address must be a string, got {type(value).__name__}")
    try:
        return parse_address(value)
    except AddressError as exc:
        raise InvalidParams(f"invalid address: {exc}") from exc


def _amount_param(value: Any, what: str) -> int:
    """A uint64 amount given as a decimal string or an integer, else InvalidParams."""
    if type(value) is str and value.isascii() and value.isdigit():
        value = int(value)
    return _check_int(value, what, 0, UINT64_MAX)


def _ratio_param(value: Any, what: str) -> Ratio:
    """A positive ratio: a decimal string ("1.25") or {"num": .., "den": ..}, else InvalidParams."""
    if isinstance(value, dict) and set(value) == {"num", "den"}:
        num = _amount_param(value["num"], f"{what}.num")
        den = _amount_param(value["den"], f"{what}.den")
    elif type(value) is str and _DECIMAL.fullmatch(value):
        whole, _, frac = value.partition(".")
        num, den = int(whole + frac), 10 ** len(frac)
    else:
        raise InvalidParams(f"{what} must be a decimal string or {{num, den}}, got {value!r:.40}")
    if num == 0 or den == 0:
        raise InvalidParams(f"{what} must be positive, got {num}/{den}")
    common = math.gcd(num, den)
    try:
        return Ratio(num // common, den // common)
    except ParamsError as exc:
        raise InvalidParams(f"{what}: {exc}") from exc


def _check_int(value: Any, what: str, low: int, high: int) -> int:
    """An integer parameter within [low, high], else InvalidParams."""
    if type(value) is not int or not low <= value <= high:
        raise InvalidParams(f"{what} must be an integer from {low} to {high}, got {value!r:.40}")
    return value
