"""Amount parsing and formatting: exact base units, GPU with up to 9 decimals."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.types import BASE_UNITS_PER_GPU, UINT64_MAX
from node.amounts import format_gpu, parse_amount

uint64 = st.integers(min_value=0, max_value=UINT64_MAX)


@given(uint64)
def test_format_then_parse_is_identity(base_units: int) -> None:
    assert parse_amount(format_gpu(base_units)) == base_units


@given(uint64)
def test_base_units_parse_as_themselves(base_units: int) -> None:
    assert parse_amount(str(base_units)) == base_units


@given(
    st.integers(min_value=0, max_value=UINT64_MAX // BASE_UNITS_PER_GPU - 1),
    st.integers(min_value=0, max_value=BASE_UNITS_PER_GPU - 1),
    st.sampled_from(["gpu", "GPU", " gpu", "  Gpu"]),
)
def test_decimal_gpu_is_exact(whole: int, frac: int, suffix: str) -> None:
    text = f"{whole}.{frac:09d}{suffix}"
    assert parse_amount(text) == whole * BASE_UNITS_PER_GPU + frac


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345", 12345),
        ("0", 0),
        ("1.5gpu", 1_500_000_000),
        ("1.5GPU", 1_500_000_000),
        ("2 gpu", 2_000_000_000),
        (" 2 gpu ", 2_000_000_000),
        (".5gpu", 500_000_000),
        ("1.gpu", 1_000_000_000),
        ("0.000000001gpu", 1),
        ("18446744073.709551615gpu", UINT64_MAX),
        (str(UINT64_MAX), UINT64_MAX),
    ],
)
def test_parse_examples(text: str, expected: int) -> None:
    assert parse_amount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-1", "negative"),
        ("-1.5gpu", "negative"),
        ("1.0000000001gpu", "10 decimals"),
        ("1.5", "no unit"),
        (str(UINT64_MAX + 1), "exceeds"),
        ("18446744073.709551616gpu", "exceeds"),
        ("gpu", "not a decimal"),
        (".gpu", "not a decimal"),
        ("1e9", "not base units"),
        ("1,000", "not base units"),
        ("1_000", "not base units"),
        ("+5", "not base units"),
        ("1.5 stable", "not base units"),
        ("1..5gpu", "not a decimal"),
        ("\u0661\u0662", "not base units"),  # Arabic-Indic digits are not ours
    ],
)
def test_parse_rejections(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_amount(text)


@pytest.mark.parametrize(
    ("base_units", "expected"),
    [
        (0, "0 GPU"),
        (1, "0.000000001 GPU"),
        (1_500_000_000, "1.5 GPU"),
        (2_000_000_000, "2 GPU"),
        (1_234_567_890, "1.23456789 GPU"),
        (UINT64_MAX, "18446744073.709551615 GPU"),
    ],
)
def test_format_examples(base_units: int, expected: str) -> None:
    assert format_gpu(base_units) == expected


@pytest.mark.parametrize("bad", [-1, True, 1.5, "5"])
def test_format_rejects_non_amounts(bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        format_gpu(bad)  # type: ignore[arg-type]
