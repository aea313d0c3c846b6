"""Byte sizes and data types: parsing unit strings exactly, and printing sizes.

Sizes are exact integers of bytes inside layerfit. Input may be an integer, an integral
float (``5e7``) or a string with a unit. Decimal units are powers of 10 (kB/KB, MB, GB, TB)
and binary units powers of 2 (KiB, MiB, GiB, TiB). Sizes are printed in decimal units
(1 MB = 10**6 B), as the seed methodology and vendors' cache figures use them.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ..errors import InstanceError

__all__ = ["UNITS", "DTYPE_BITS", "DTYPE_SPELLINGS", "MAX_MAGNITUDE", "parse_size", "parse_count", "normalise_dtype",
           "dtype_bytes", "format_size", "format_bytes", "shown"]

UNITS: dict[str, int] = {
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}

# Bits per element of each supported data type (int4 packs two values per byte).
DTYPE_BITS: dict[str, int] = {
    "fp32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "int4": 4,
}

# Hugging Face's (and torch's) names of the same dtypes, as config.json writes them.
DTYPE_SPELLINGS: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)\s*$")

# Sizes and counts are bounded before any integer is built from them, so parsing stays linear
# in the input: 10^36 is beyond every memory and every model (a layer of 10^30 parameters is
# still planned), and a size string longer than this many characters is not a size.
MAX_MAGNITUDE = 36
MAX_SIZE_CHARS = 64


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for a message: one line, its middle elided past ``limit`` characters (a
    5,000-digit integer is named by its first digits and its length)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = len(str(abs(value))) if value.bit_length() < 14000 else None  # str() itself refuses > 4300 digits
        head = str(value)[:12] if digits is not None else hex(value)[:14]
        return f"{head}… ({digits:,} digits)" if digits is not None else f"{head}… ({value.bit_length():,} bits)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-(limit // 2):]} ({len(text):,} characters)"


def _too_large(field: str, value: object) -> InstanceError:
    return InstanceError(f"{field}: {shown(value)} is too large (at most 10^{MAX_MAGNITUDE})")


def _exact_number(value: object, field: str, what: str) -> Fraction:
    """Turn an int or float JSON value into an exact non-negative Fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InstanceError(f"{field}: expected {what}, got {repr(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InstanceError(f"{field}: expected a finite number, got {repr(value)}")
    if value < 0:
        raise InstanceError(f"{field}: must not be negative, got {shown(value)}")
    if value > 10**MAX_MAGNITUDE:
        raise _too_large(field, value)
    return Fraction(value)


def parse_size(value: object, field: str) -> int:
    """Parse a size in bytes: an integer, an integral float, or a string such as ``"50MB"``.

    Parameters
    ----------
    value:
        The raw value (from JSON or Python).
    field:
        Where the value came from, for error messages (``"layers[3].activation_bytes"``).

    Returns
    -------
    int
        The exact number of bytes.

    Raises
    ------
    InstanceError
        If the value is negative, not finite, not a number, has an unknown unit, or is
        not a whole number of bytes.

    Examples
    --------
    >>> parse_size("50MB", "capacity"), parse_size("1.5 KiB", "capacity")
    (50000000, 1536)
    """
    what = "a size (bytes as an integer, or a string such as '32MiB')"
    if isinstance(value, str):
        if len(value) > MAX_SIZE_CHARS:
            raise InstanceError(f"{field}: expected {what}, got a string of {len(value):,} characters")
        match = _SIZE_RE.match(value)
        if match is None:
            if re.match(r"^\s*-", value):
                raise InstanceError(f"{field}: must not be negative, got {value!r}")
            raise InstanceError(f"{field}: expected {what}, got {value!r}")
        number, unit = match.groups()
        if unit not in UNITS:
            allowed = ", ".join(UNITS)
            raise InstanceError(f"{field}: unknown unit {unit!r} in {value!r} (allowed: {allowed})")
        try:
            decimal = Decimal(number)  # linear in the string; no integer is built yet
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise InstanceError(f"{field}: expected {what}, got {value!r}") from None
        if not decimal:
            return 0
        if decimal.adjusted() + len(str(UNITS[unit])) - 1 > MAX_MAGNITUDE:
            raise _too_large(field, value)
        if decimal.as_tuple().exponent < -MAX_MAGNITUDE:  # type: ignore[operator]  # finite: the regex
            raise InstanceError(f"{field}: {value!r} is not a whole number of bytes")
        exact = Fraction(decimal) * UNITS[unit]
    else:
        exact = _exact_number(value, field, what)
    if exact.denominator != 1:
        raise InstanceError(f"{field}: {value!r} is not a whole number of bytes")
    return int(exact)


def parse_count(value: object, field: str) -> int:
    """Parse a non-negative whole count (parameters, batch size, ...): int or integral float."""
    exact = _exact_number(value, field, "a whole number")
    if exact.denominator != 1:
        raise InstanceError(f"{field}: expected a whole number, got {repr(value)}")
    return int(exact)


def normalise_dtype(dtype: object, field: str) -> str:
    """A dtype in layerfit's spelling: ``bf16``, ``fp16``, ``fp32``, ``fp8``, ``int8``, ``int4``,
    or Hugging Face's ``bfloat16``, ``float16``, ``float32`` (which become bf16, fp16, fp32).

    >>> normalise_dtype("bfloat16", "dtype"), normalise_dtype("fp8", "dtype")
    ('bf16', 'fp8')
    """
    if isinstance(dtype, str) and dtype in DTYPE_SPELLINGS:
        return DTYPE_SPELLINGS[dtype]
    if dtype not in DTYPE_BITS:
        allowed = ", ".join(DTYPE_BITS)
        raise InstanceError(f"{field}: unknown dtype {dtype!r} (allowed: {allowed})")
    return str(dtype)


def dtype_bytes(dtype: object, count: int, field: str) -> int:
    """Bytes taken by ``count`` elements of ``dtype``, rounded up to a whole byte."""
    if dtype not in DTYPE_BITS:
        allowed = ", ".join(DTYPE_BITS)
        raise InstanceError(f"{field}: unknown dtype {dtype!r} (allowed: {allowed})")
    return -(-count * DTYPE_BITS[dtype] // 8)


def format_size(num_bytes: float) -> str:
    """Print a size in decimal units, four significant digits: ``'10.49 GB'``."""
    magnitude = abs(num_bytes)
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if magnitude >= scale:
            scaled = num_bytes / scale
            return f"{scaled:.0f} {unit}" if abs(scaled) >= 1000 else f"{scaled:.4g} {unit}"
    return f"{num_bytes:.0f} B"


def format_bytes(num_bytes: int) -> str:
    """A size with its exact byte count: ``'50 MB (50,000,000 B)'`` (just ``'20 B'`` when small)."""
    return format_size(num_bytes) if num_bytes < 1000 else f"{format_size(num_bytes)} ({num_bytes:,} B)"
