"""`gannet tokenomics` through click's CliRunner: the schedule, the projection, the plot."""

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chain.crypto import SigningKey
from consensus.params import GPU, Ratio, default_params
from consensus.projection import project_supply
from genesis.document import add_validator, dump_genesis, new_genesis
from node.amounts import format_gpu
from node.cli import main
from node.cli_tokenomics import parse_price

M = 1_000_000 * GPU


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["tokenomics", *args])


def assert_one_line_failure(result: Result, words: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert words in lines[0], lines[0]


def table(output: str, header: str) -> list[list[str]]:
    """The rows of the table under the line starting with `header`, split on 2+ spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append([cell.strip() for cell in line.strip().split("  ") if cell.strip()])
    return rows


def test_plan_schedule_eight_years_exact_to_the_base_unit() -> None:
    result = run()
    assert result.exit_code == 0, result.output
    assert "31536000 blocks a year, halving every 63072000 blocks" in result.output
    assert "halving heights: 63072001 126144001 189216001\n" in result.output
    periods = table(result.output, "period")
    # format_gpu is exact: "30000000 GPU" is 30,000,000 * 10^9 base units, no remainder.
    assert [row[3] for row in periods] == [
        "30000000 GPU",
        "15000000 GPU",
        "7500000 GPU",
        "3750000 GPU",
    ]
    assert periods[3][1:3] == ["189216001", "252288000"]
    years = table(result.output, "year")
    assert [row[2] for row in years] == [format_gpu(15 * M >> (i // 2)) for i in range(8)]
    assert years[-1][4] == "56250000 GPU"
    assert years[-1][-1] == "186250000 GPU"  # 130M at genesis + 56.25M minted
    assert "deflation crossover: none within 8 years" in result.output


def test_revenue_and_price_burn_and_crossover() -> None:
    result = run("--years", "4", "--revenue", str(5 * M), "--price", "0.5")
    assert result.exit_code == 0, result.output
    years = table(result.output, "year")
    expected = project_supply(default_params(), 1, 4, 5 * M, Ratio(1, 2))
    assert [row[3] for row in years] == [format_gpu(r.burned) for r in expected]
    assert [row[-1] for row in years] == [format_gpu(r.supply) for r in expected]
    assert years[2][2:4] == ["7500000 GPU", "10000000 GPU"]
    assert "deflation crossover: year 3 (burned 10000000 GPU > emitted 7500000 GPU" in (
        result.output
    )


def test_genesis_params_and_first_height(tmp_path: Path) -> None:
    genesis = new_genesis("gannet-tok", 0, default_params(500))
    key = SigningKey.from_seed(bytes(32))
    genesis = add_validator(genesis, key.public_key, 1000 * GPU, bytes(20))
    path = tmp_path / "genesis.json"
    dump_genesis(genesis, path)
    result = run("--genesis", str(path), "--years", "2")
    assert result.exit_code == 0, result.output
    assert f"tokenomics of {path}" in result.output
    assert "block time 500 ms: 63072000 blocks a year" in result.output
    years = table(result.output, "year")
    assert [row[:3] for row in years] == [
        ["1", "63072000", "15000000 GPU"],
        ["2", "126144000", "15000000 GPU"],
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--price", "0"], "must be positive"),
        (["--price", "0/5"], "must be positive"),
        (["--price", "1/0"], "must be positive"),
        (["--price", "abc"], "bad price"),
        (["--price", "-1"], "bad price"),
        (["--years", "-1"], "bad years"),
        (["--years", "1001"], "years must be 0..1000"),
        (["--revenue", "1.5"], "bad revenue"),
        (["--genesis", "/nonexistent/genesis.json"], "cannot read genesis file"),
    ],
)
def test_bad_inputs_fail_on_one_line(args: list[str], words: str) -> None:
    assert_one_line_failure(run(*args), words)


def test_invalid_genesis_fails_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text('{"chain_id": "BAD"}')
    assert_one_line_failure(run("--genesis", str(path)), "problems")


@pytest.mark.parametrize(
    ("text", "ratio"),
    [
        ("1", Ratio(1, 1)),
        ("0.25", Ratio(25, 100)),
        ("3/2", Ratio(3, 2)),
        (" 2.50 ", Ratio(250, 100)),
    ],
)
def test_parse_price_is_exact(text: str, ratio: Ratio) -> None:
    assert parse_price(text) == ratio


def test_plot_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = run("--years", "2", "--plot", str(tmp_path / "supply.png"))
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == (
        "Error: --plot needs matplotlib, which is not installed: install gannet[plot]"
    )
    assert not (tmp_path / "supply.png").exists()


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "supply.png"
    result = run("--years", "3", "--revenue", str(M), "--plot", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
