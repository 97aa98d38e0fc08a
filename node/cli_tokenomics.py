"""`gannet tokenomics`: the emission schedule and a supply projection, as a table or a plot.

    gannet tokenomics                              the plan's defaults, 8 years
    gannet tokenomics --genesis genesis.json --years 20 --revenue 5000000000000000 --price 0.5
    gannet tokenomics --plot supply.png            needs matplotlib (pip install gannet[plot])

Amounts are GPU (exact, from base units); revenue is stable base units a year
and the price stable per GPU (a decimal such as 0.25 or a fraction such as
1/4), so each year burns revenue / price GPU. The figures come from
`consensus.projection`, the chain's own emission arithmetic.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from consensus.emission import network_allocation
from consensus.params import NetworkParams, ParamsError, Ratio
from consensus.projection import (
    PeriodRow,
    ProjectionError,
    YearRow,
    blocks_per_year,
    find_crossover,
    genesis_supply,
    halving_heights,
    periods_covering,
    project_periods,
    project_supply,
)
from genesis.document import GenesisError, load_genesis
from node.amounts import format_gpu

_PRICE_RE = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?|(?P<num>[0-9]+)/(?P<den>[0-9]+)")
_UINT_RE = re.compile(r"[0-9]+")


def parse_price(text: str) -> Ratio:
    """A positive price as an exact Ratio: "0.25" -> 25/100, "3/2" -> 3/2; ValueError otherwise."""
    match = _PRICE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"bad price {text!r}: expected a decimal (0.25) or a fraction (1/4)")
    if match["num"] is not None:
        num, den = int(match["num"]), int(match["den"])
    else:
        frac = match["frac"] or ""
        num, den = int(match["whole"] + frac), 10 ** len(frac)
    if num == 0 or den == 0:
        raise ValueError(f"bad price {text!r}: must be positive")
    try:
        return Ratio(num, den)
    except ParamsError as error:
        raise ValueError(f"bad price {text!r}: {error}") from None


def _parse_count(text: str, what: str) -> int:
    """A non-negative decimal integer; ValueError naming `what` otherwise."""
    if not _UINT_RE.fullmatch(text.strip()):
        raise ValueError(f"bad {what} {text!r}: expected a non-negative integer")
    return int(text)


def _load_params(genesis_file: str | None) -> tuple[NetworkParams, int, str]:
    """(params, first height, where they came from): the genesis file's, or the plan's."""
    if genesis_file is None:
        return NetworkParams(), 1, "the plan's default parameters"
    genesis = load_genesis(genesis_file, require_validators=False)
    return genesis.params, genesis.initial_height, genesis_file


@click.command("tokenomics")
@click.option("--genesis", "genesis_file", default=None, help="Use this genesis file's params.")
@click.option("--years", default="8", show_default=True, help="Years to project.")
@click.option("--revenue", default="0", show_default=True, help="Stable base units a year.")
@click.option("--price", default="1", show_default=True, help="Stable per GPU (0.25 or 1/4).")
@click.option("--plot", "plot_file", default=None, help="Draw the curves to this PNG file.")
def tokenomics_cmd(
    genesis_file: str | None, years: str, revenue: str, price: str, plot_file: str | None
) -> None:
    """Print the emission schedule and the supply projection (emission vs. buyback burn)."""
    try:
        params, first_height, source = _load_params(genesis_file)
        count = _parse_count(years, "years")
        rows = project_supply(
            params, first_height, count, _parse_count(revenue, "revenue"), parse_price(price)
        )
        periods = project_periods(params, first_height, periods_covering(params, count))
    except (GenesisError, ProjectionError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    for line in format_report(params, first_height, source, periods, rows):
        click.echo(line)
    if plot_file is not None:
        draw_plot(rows, Path(plot_file))
        click.echo(f"plot written to {plot_file}")


def format_report(
    params: NetworkParams,
    first_height: int,
    source: str,
    periods: list[PeriodRow],
    rows: list[YearRow],
) -> list[str]:
    """The report's lines: supply figures, halvings, the period table, the year table."""
    tokenomics = params.tokenomics
    halvings = halving_heights(params, first_height, max(len(periods) - 1, 0))
    lines = [
        f"tokenomics of {source}",
        f"total supply {format_gpu(tokenomics.total_supply)}; network allocation "
        f"{format_gpu(network_allocation(tokenomics))} (emitted over time); at genesis "
        f"{format_gpu(genesis_supply(params))}",
        f"block time {params.block.block_time_ms} ms: {blocks_per_year(params)} blocks a year, "
        f"halving every {tokenomics.halving_period_blocks} blocks from height {first_height}",
        "halving heights: " + (" ".join(str(height) for height in halvings) or "none"),
        "",
        f"{'period':>6}  {'first height':>14}  {'last height':>14}  {'emission':>24}",
    ]
    lines += [
        f"{p.period:>6}  {p.first_height:>14}  {p.last_height:>14}  {format_gpu(p.emitted):>24}"
        for p in periods
    ]
    lines += ["", _year_header()] + [_year_line(row) for row in rows] + ["", _crossover(rows)]
    return lines


def _year_header() -> str:
    names = ("year", "end height", "emitted", "burned", "minted total", "burned total", "supply")
    widths = (4, 12, 22, 22, 22, 22, 24)
    return "  ".join(f"{name:>{width}}" for name, width in zip(names, widths, strict=True))


def _year_line(row: YearRow) -> str:
    amounts = (row.emitted, row.burned, row.minted_total, row.burned_total)
    cells = "  ".join(f"{format_gpu(amount):>22}" for amount in amounts)
    return f"{row.year:>4}  {row.end_height:>12}  {cells}  {format_gpu(row.supply):>24}"


def _crossover(rows: list[YearRow]) -> str:
    """The deflation crossover line: the first year burn exceeds emission, if any."""
    row = find_crossover(rows)
    if row is None:
        return f"deflation crossover: none within {len(rows)} years (burn never exceeds emission)"
    return (
        f"deflation crossover: year {row.year} (burned {format_gpu(row.burned)} > emitted "
        f"{format_gpu(row.emitted)}; supply falls)"
    )


def draw_plot(rows: list[YearRow], path: Path) -> None:
    """Draw supply, yearly emission and yearly burn (millions of GPU) to a PNG file.

    matplotlib is imported here only: it is the optional extra gannet[plot].
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib, which is not installed: install gannet[plot]"
        ) from None
    years = [row.year for row in rows]
    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.plot(years, [_millions(row.supply) for row in rows], marker="o", label="supply")
    top.set_ylabel("million GPU")
    top.legend()
    bottom.plot(years, [_millions(row.emitted) for row in rows], marker="o", label="emitted")
    bottom.plot(years, [_millions(row.burned) for row in rows], marker="o", label="burned")
    bottom.set_xlabel("year")
    bottom.set_ylabel("million GPU a year")
    bottom.legend()
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as error:
        raise click.ClickException(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)


def _millions(base_units: int) -> float:
    """Base units as millions of GPU, for drawing only (never for a rule)."""
    return base_units / 10**15
