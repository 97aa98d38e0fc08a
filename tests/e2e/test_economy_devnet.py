"""The token economy on a running `gannet devnet`, observed over JSON-RPC only.

- Emission halves after `halving_period_blocks` (compressed to 30 blocks) and the
  minted total matches the schedule (`consensus.emission`) to the base unit.
- Revenue paid in one buyback period is spent in the next in equal slices, each
  buying GPU from the pool and burning it; a big swap right before a slice (a
  sandwich) makes that slice skip instead of paying the inflated price. Every
  slice is checked against an independent model of the pool and the TWAP guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chain.records import DENOM_GPU, DENOM_STABLE, PayRevenue, Swap
from chain.types import BASE_UNITS_PER_GPU
from consensus.emission import emitted_through, scheduled_emission
from consensus.params import from_json
from tests.e2e.harness import (
    DevnetProcess,
    DevSigner,
    hash_hex,
    load_dev_key,
    raw_hex,
    read_at_one_height,
    read_genesis,
    wait_included,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
TIMEOUT_S = 40.0
GPU = BASE_UNITS_PER_GPU
STABLE = BASE_UNITS_PER_GPU  # the stable unit has 9 decimals too

HALVING_BLOCKS = 30

BUYBACK_PERIOD = 40
BUYBACK_INTERVAL = 2
SLICES = BUYBACK_PERIOD // BUYBACK_INTERVAL
REVENUE = 2_000 * STABLE  # 100 stable a slice
FRONT_RUN_STABLE = 300_000 * STABLE  # lifts the spot price of the devnet's pool by ~70 %
PRICE_SCALE = 2**64  # the oracle's fixed point: stable per GPU * 2^64
BPS = 10_000


def _supply(node: DevnetProcess) -> tuple[int, dict[str, Any]]:
    """(height, gannet_getSupply) read at one height."""
    height, (supply,) = read_at_one_height(node.url, [("gannet_getSupply", [])])
    assert supply["height"] == height, supply
    return height, supply


def _wait_head(node: DevnetProcess, height: int, timeout_s: float = TIMEOUT_S) -> None:
    wait_until(lambda: node.rpc("gannet_blockNumber") >= height, timeout_s,
               f"height {height}", log=node)


def test_emission_halves_and_minted_matches_the_schedule(tmp_path: Path) -> None:
    params = {"tokenomics": {"halving_period_blocks": HALVING_BLOCKS}}
    with DevnetProcess(tmp_path / "devnet", block_time_ms=BLOCK_TIME_MS,
                       params=params) as node:
        genesis = read_genesis(node.home)
        tokenomics = from_json(genesis["params"]).tokenomics
        first = genesis["initial_height"]
        assert tokenomics.halving_period_blocks == HALVING_BLOCKS
        total = tokenomics.emission_first_period
        assert total % (2 * HALVING_BLOCKS) == 0, "choose a period that divides E/2"
        per_block = total // HALVING_BLOCKS  # every block of period 0 mints exactly this
        halving_height = first + HALVING_BLOCKS

        _wait_head(node, first + 3)
        seen: dict[int, int] = {}
        h1, supply = _supply(node)
        assert h1 + 1 < halving_height, f"the devnet reached {h1} before the first check"
        emission = supply["emission"]
        assert int(emission["next_block"]) == per_block
        assert (emission["halving_period"], int(emission["period_emission"])) == (0, total)
        assert emission["next_halving_height"] == halving_height
        seen[h1] = int(supply["minted"])

        _wait_head(node, halving_height + 3)
        h2, supply = _supply(node)
        emission = supply["emission"]
        assert int(emission["next_block"]) == per_block // 2, emission
        assert (emission["halving_period"], int(emission["period_emission"])) == (1, total // 2)
        assert emission["next_halving_height"] == halving_height + HALVING_BLOCKS
        seen[h2] = int(supply["minted"])

        _wait_head(node, h2 + 3)
        h3, supply = _supply(node)
        seen[h3] = int(supply["minted"])
        assert int(supply["burned"]) == 0
        assert int(supply["total"]) == int(supply["genesis"]) + seen[h3]
        assert int(supply["modules"]["rewards"]) == seen[h3], "nobody withdrew: all in rewards"

        for height, minted in seen.items():
            assert minted == emitted_through(tokenomics, first, height), (height, minted)
            by_hand = min(height - first + 1, HALVING_BLOCKS) * per_block \
                + max(height - halving_height + 1, 0) * (per_block // 2)
            assert minted == by_hand, (height, minted, by_hand)
        # Per-block emission inside period 1: half of period 0's.
        assert seen[h3] - seen[h2] == (h3 - h2) * (per_block // 2)
        assert seen[h2] - seen[h1] == sum(scheduled_emission(tokenomics, first, h)
                                          for h in range(h1 + 1, h2 + 1))


# --- buyback --------------------------------------------------------------------------


@dataclass
class PoolModel:
    """The constant-product pool as the test expects it to be, reserve by reserve."""

    gpu: int
    stable: int
    fee_bps: int

    def spot(self) -> int:
        """The spot price the oracle observes: stable per GPU in 2^64 fixed point."""
        return self.stable * PRICE_SCALE // self.gpu

    def swap(self, denom_in: int, amount_in: int) -> int:
        """Apply a swap (the fee stays in the pool); what comes out."""
        reserve_in, reserve_out = ((self.gpu, self.stable) if denom_in == DENOM_GPU
                                   else (self.stable, self.gpu))
        after_fee = amount_in * (BPS - self.fee_bps) // BPS
        out = reserve_out * after_fee // (reserve_in + after_fee)
        if denom_in == DENOM_GPU:
            self.gpu, self.stable = self.gpu + amount_in, self.stable - out
        else:
            self.gpu, self.stable = self.gpu - out, self.stable + amount_in
        return out


def _send(node: DevnetProcess, signer: DevSigner, bodies: list[Any], nonce: int,
          fee: int) -> list[dict[str, Any]]:
    """Sign and send bodies with consecutive nonces; their getTransaction answers once
    included, each receipt ok."""
    hashes = []
    for offset, body in enumerate(bodies):
        stx = signer.sign(body, nonce + offset, fee)
        assert node.rpc("gannet_sendRawTransaction", raw_hex(stx)) == hash_hex(stx)
        hashes.append(hash_hex(stx))
    infos = wait_included(node.url, hashes, TIMEOUT_S)
    for info in infos:
        assert info["receipt"]["status"] == "ok", info
    return infos


def _buyback_reads(node: DevnetProcess, address: str) -> tuple[int, list[Any]]:
    """(height, [supply, buyback, pool, dev account]) read at one height."""
    return read_at_one_height(node.url, [
        ("gannet_getSupply", []), ("gannet_getBuyback", [1000]), ("gannet_getPool", []),
        ("gannet_getAccount", [address])])


def _slices_after(node: DevnetProcess, height: int) -> list[dict[str, Any]]:
    return [s for s in node.rpc("gannet_getBuyback", 1000)["history"] if s["height"] >= height]


def test_buyback_burns_in_slices_and_skips_a_sandwiched_slice(tmp_path: Path) -> None:
    params = {"tokenomics": {"buyback_period_blocks": BUYBACK_PERIOD,
                             "buyback_interval_blocks": BUYBACK_INTERVAL}}
    with DevnetProcess(tmp_path / "devnet", block_time_ms=BLOCK_TIME_MS,
                       params=params) as node:
        genesis = read_genesis(node.home)
        tokenomics = from_json(genesis["params"]).tokenomics
        first = genesis["initial_height"]
        slippage_bps = tokenomics.buyback_max_slippage_bps
        signer = DevSigner(load_dev_key(node.home), node.rpc("gannet_chainId"))
        fee = int(node.rpc("gannet_estimateFee")["min_fee"])
        period_1 = first + BUYBACK_PERIOD
        slice_heights = [period_1 + BUYBACK_INTERVAL * k + BUYBACK_INTERVAL - 1
                         for k in range(SLICES)]

        assert genesis["pool"] is not None, "the devnet seeds a pool at genesis"
        seed_gpu, seed_stable = int(genesis["pool"]["gpu"]), int(genesis["pool"]["stable"])

        # Period 0: the dev account pays revenue into the treasury.
        (paid,) = _send(node, signer, [PayRevenue(amount=REVENUE)], 0, fee)
        assert paid["height"] < period_1, f"revenue paid at {paid['height']}, after period 0"
        dev_start = node.rpc("gannet_getAccount", signer.address)
        buyback = node.rpc("gannet_getBuyback")
        assert (buyback["treasury_stable"], buyback["revenue_total"]) == (str(REVENUE),) * 2
        assert buyback["slices_per_period"] == SLICES and buyback["history"] == []

        # Period 1 spends it: a slice every other block, each burning what it bought.
        wait_until(lambda: len(_slices_after(node, period_1)) >= 3, TIMEOUT_S,
                   "three buyback slices", 0.05, node)
        _, (supply, buyback, pool, _) = _buyback_reads(node, signer.address)
        assert buyback["period"] == 1 and int(buyback["budget"]) == REVENUE, buyback
        bought = [s for s in buyback["history"] if not s["skipped"]]
        assert len(bought) == len(buyback["history"]) >= 3, buyback["history"]
        burned_early = int(buyback["burned_total"])
        assert burned_early > 0
        assert int(supply["burned"]) == burned_early == sum(int(s["gpu_burned"]) for s in bought)
        assert int(pool["gpu"]) == seed_gpu - burned_early, "the pool lost what was burned"
        assert int(pool["stable"]) == seed_stable + int(buyback["spent"])

        # The sandwich: a big buy of GPU, the slice, then the attacker sells back.
        (front,) = _send(node, signer, [Swap(denom_in=DENOM_STABLE,
                                             amount_in=FRONT_RUN_STABLE, min_out=1)], 1, fee)
        target = min(h for h in slice_heights if h >= front["height"])
        assert target <= slice_heights[-2], f"front-run at {front['height']}: too late"
        _wait_head(node, target)
        got = int(node.rpc("gannet_getAccount", signer.address)["gpu"]) \
            - int(dev_start["gpu"]) + fee
        (back,) = _send(node, signer, [Swap(denom_in=DENOM_GPU, amount_in=got, min_out=1)],
                        2, fee)
        after_back = min((h for h in slice_heights if h >= back["height"]), default=None)
        assert after_back is not None, f"back-run at {back['height']}: too late"
        _wait_head(node, after_back)
        height, (supply, buyback, pool, dev) = _buyback_reads(node, signer.address)

        history = {s["height"]: s for s in buyback["history"]}
        sandwiched = history[target]
        assert sandwiched["skipped"] and sandwiched["reason"] == "slippage", sandwiched
        assert (sandwiched["stable_in"], sandwiched["gpu_burned"]) == ("0", "0")
        assert history[after_back]["reason"] == "bought", history[after_back]
        assert buyback["slices_skipped"] == 1, buyback["history"]
        assert int(buyback["burned_total"]) > burned_early, "the buyback stopped burning"

        # Every slice, swap and reserve as an independent model of the rules says.
        model = PoolModel(seed_gpu, seed_stable, tokenomics.pool_fee_bps)
        txs = {front["height"]: [(DENOM_STABLE, FRONT_RUN_STABLE, "front")],
               back["height"]: [(DENOM_GPU, got, "back")]}
        outs: dict[str, int] = {}
        spot: dict[int, int] = {}
        expected_slices = [h for h in slice_heights if h <= height]
        assert sorted(history) == expected_slices, sorted(history)
        for h in range(first, height + 1):
            spot[h] = model.spot()  # observed before the block's txs
            for denom, amount, name in txs.get(h, []):
                outs[name] = model.swap(denom, amount)
            if h in history:
                _check_slice(model, history[h], REVENUE // SLICES,
                             (spot[h - 1] + spot[h]) // 2, slippage_bps)
        assert outs["front"] == got, "the front-run swap paid what the model says"
        assert (int(pool["gpu"]), int(pool["stable"])) == (model.gpu, model.stable)
        assert int(dev["gpu"]) == int(dev_start["gpu"]) - 2 * fee
        assert int(dev["stable"]) == int(dev_start["stable"]) - FRONT_RUN_STABLE + outs["back"]

        # Books: burned GPU is gone from the supply; unspent stable stays in the treasury.
        slices = list(history.values())
        spent = sum(int(s["stable_in"]) for s in slices)
        burned = sum(int(s["gpu_burned"]) for s in slices)
        assert int(buyback["spent"]) == spent
        assert int(supply["burned"]) == int(buyback["burned_total"]) == burned
        assert int(buyback["treasury_stable"]) == REVENUE - spent
        assert int(supply["total"]) == int(supply["genesis"]) + int(supply["minted"]) - burned
        # The attacker returned the GPU it took, so the pool lost exactly what was burned.
        assert int(pool["gpu"]) == seed_gpu - burned


def _check_slice(model: PoolModel, entry: dict[str, Any], amount: int, twap: int,
                 slippage_bps: int) -> None:
    """A slice of `amount` stable buys (and the pool moves) iff its price is within the
    slippage bound over the TWAP of the observations since the previous slice."""
    trial = PoolModel(model.gpu, model.stable, model.fee_bps)
    out = trial.swap(DENOM_STABLE, amount)
    within = amount * PRICE_SCALE * BPS <= twap * out * (BPS + slippage_bps)
    if within:
        assert (entry["skipped"], entry["reason"]) == (False, "bought"), entry
        assert (int(entry["stable_in"]), int(entry["gpu_burned"])) == (amount, out), entry
        model.gpu, model.stable = trial.gpu, trial.stable  # the bought GPU is burned
    else:
        assert (entry["skipped"], entry["reason"]) == (True, "slippage"), entry

