"""`layerfit solve --json` is byte-identical across runs for the deterministic methods (dp,
greedy, the MIP on CBC and HiGHS, CP-SAT with one worker), and so is `layerfit map --json`: the
wall time is left out unless --timing asks for it (docs/cli.md)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from helpers import INSTANCES
from layerfit.cli import main

RUNS = [["--method", "dp"], ["--method", "greedy"], ["--method", "mip"], ["--method", "mip", "--backend", "highs"],
        ["--method", "cpsat", "--workers", "1"]]
FILES = ["llama-2-7b-1f1b-train-h100-hbm.json", "random-uniform-24.json"]


def output(argv: list[str]) -> bytes:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue().encode()


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("argv", RUNS, ids=lambda a: "-".join(a[1::2]))
def test_solve_json_is_byte_identical_across_runs(name, argv):
    command = ["solve", str(INSTANCES / name), "--json", *argv]
    first, second = output(command), output(command)
    assert first == second
    assert "solve_time_s" not in json.loads(first)
    timed = json.loads(output([*command, "--timing"]))
    assert timed["solve_time_s"] >= 0


def test_map_json_is_byte_identical_across_runs():
    command = ["map", str(INSTANCES / "random-uniform-24.json"), "--topology", "dgx-h100", "--num-partitions", "4",
               "--json"]
    assert output(command) == output(command)
