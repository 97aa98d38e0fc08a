"""Amounts as people type and read them: base units or GPU with up to 9 decimals.

1 GPU = 10^9 base units. Parsing is exact integer arithmetic (never floats), so
"0.000000001gpu" is exactly 1 base unit and "1.0000000001gpu" is an error
rather than a silent rounding. Every amount must fit uint64, like on chain.
"""

import re

from chain.types import BASE_UNITS_PER_GPU, UINT64_MAX

GPU_DECIMALS = len(str(BASE_UNITS_PER_GPU)) - 1  # 9: 10^9 base units per GPU
GPU_SUFFIX = "gpu"

_BASE_UNITS = re.compile(r"[0-9]+")
_GPU_AMOUNT = re.compile(r"(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?")


def parse_amount(text: str) -> int:
    """Base units of `text`: "12345" (base units) or "1.5gpu" / "1.5 GPU" / "2gpu".

    Raises ValueError saying what is wrong: empty, negative, malformed, more
    than 9 decimals, or above 2^64 - 1 base units.
    """
    if not isinstance(text, str):
        raise ValueError(f"amount must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("amount is empty")
    if stripped.startswith("-"):
        raise ValueError(f"amount must not be negative, got {text!r}")
    if stripped.lower().endswith(GPU_SUFFIX):
        value = _parse_gpu(stripped[: -len(GPU_SUFFIX)].rstrip(), text)
    elif _BASE_UNITS.fullmatch(stripped):
        value = int(stripped)
    elif _GPU_AMOUNT.fullmatch(stripped):
        raise ValueError(
            f"amount {text!r} has a decimal point but no unit: write it as {stripped}gpu, "
            "or give whole base units"
        )
    else:
        raise ValueError(f"amount {text!r} is not base units (12345) or GPU (1.5gpu)")
    if value > UINT64_MAX:
        raise ValueError(f"amount {text!r} exceeds the maximum of {UINT64_MAX} base units")
    return value


def _parse_gpu(number: str, original: str) -> int:
    """Base units of a decimal GPU figure such as "1.5" (at most 9 decimals)."""
    match = _GPU_AMOUNT.fullmatch(number)
    if match is None or not (match["whole"] or match["frac"]):
        raise ValueError(f"amount {original!r} is not a decimal number of GPU (e.g. 1.5gpu)")
    whole = match["whole"] or "0"
    frac = match["frac"] or ""
    if len(frac) > GPU_DECIMALS:
        raise ValueError(
            f"amount {original!r} has {len(frac)} decimals; GPU has at most {GPU_DECIMALS} "
            "(1 base unit = 0.000000001 GPU)"
        )
    return int(whole) * BASE_UNITS_PER_GPU + int(frac.ljust(GPU_DECIMALS, "0"))


def format_gpu(base_units: int) -> str:
    """`base_units` shown in GPU with trailing zeros trimmed: 1_500_000_000 -> "1.5 GPU"."""
    if not isinstance(base_units, int) or isinstance(base_units, bool) or base_units < 0:
        raise ValueError(f"base units must be a non-negative int, got {base_units!r}")
    whole, frac = divmod(base_units, BASE_UNITS_PER_GPU)
    digits = f"{frac:0{GPU_DECIMALS}d}".rstrip("0")
    return f"{whole}.{digits} GPU" if digits else f"{whole} GPU"
