import pytest

from layerfit import InstanceError, format_size, parse_size
from layerfit.model.units import dtype_bytes


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0),
        (123, 123),
        (5e7, 50_000_000),
        ("50MB", 50_000_000),
        ("50 MB", 50_000_000),
        ("1kB", 1000),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1.5 KiB", 1536),
        ("50MiB", 52_428_800),
        ("40MiB", 41_943_040),
        ("2GiB", 2 * 2**30),
        ("1TiB", 2**40),
        ("0.25GB", 250_000_000),
        ("1e3B", 1000),
        ("3TB", 3 * 10**12),
    ],
)
def test_sizes_parse_exactly(value, expected):
    assert parse_size(value, "capacity") == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (-1, r"^capacity: must not be negative, got -1$"),
        ("-5MB", r"^capacity: must not be negative, got '-5MB'$"),
        (float("nan"), r"^capacity: expected a finite number, got nan$"),
        (float("inf"), r"^capacity: expected a finite number, got inf$"),
        ("5 XB", r"^capacity: unknown unit 'XB' in '5 XB' \(allowed: B, kB, KB, MB, GB, TB, KiB, MiB, GiB, TiB\)$"),
        ("mb", r"^capacity: expected a size \(bytes as an integer, or a string such as '32MiB'\), got 'mb'$"),
        ("0.5B", r"^capacity: '0.5B' is not a whole number of bytes$"),
        (1.5, r"^capacity: 1.5 is not a whole number of bytes$"),
        (True, r"^capacity: expected a size"),
        (None, r"^capacity: expected a size"),
        ([1], r"^capacity: expected a size"),
    ],
)
def test_bad_sizes_name_field_and_value(value, message):
    with pytest.raises(InstanceError, match=message):
        parse_size(value, "capacity")


@pytest.mark.parametrize(
    "dtype, count, expected",
    [("fp32", 10, 40), ("bf16", 10, 20), ("fp16", 10, 20), ("fp8", 10, 10), ("int8", 10, 10), ("int4", 10, 5), ("int4", 3, 2)],
)
def test_dtype_bytes(dtype, count, expected):
    assert dtype_bytes(dtype, count, "dtype") == expected


def test_unknown_dtype():
    with pytest.raises(InstanceError, match=r"^dtype: unknown dtype 'fp64' \(allowed: fp32, bf16, fp16, fp8, int8, int4\)$"):
        dtype_bytes("fp64", 1, "dtype")


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1 kB"), (52_428_800, "52.43 MB"), (10_485_760_000, "10.49 GB"), (3.75e9, "3.75 GB"), (80e9, "80 GB")],
)
def test_format_size(n, text):
    assert format_size(n) == text
