"""The hostile-input corpus (tests/hostile/, made by its make_corpus.py; issue #15): every
malformed instance, plan, placement and topology gets exit 2 and exactly one line on stderr,
``layerfit: error: ...`` naming the field (or the file) and the value, the text of
tests/hostile/expected.json; nothing on stdout, no traceback, and no hang.

Each case runs in-process through ``layerfit.cli.main`` (a handful also as a subprocess). A
case that has not returned after 10 s fails as a hang: a guard, not a timing assertion (each
takes milliseconds)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from helpers import ROOT
from layerfit.cli import main

HOSTILE = ROOT / "tests" / "hostile"
EXPECTED: dict[str, str] = json.loads((HOSTILE / "expected.json").read_text(encoding="utf-8"))
HANG_GUARD_S = 10


def argv_for(name: str) -> list[str]:
    """The command that reads the file: solve an instance, export a plan or placement, map onto a topology."""
    kind = name.split("-")[0]
    if kind == "instance":
        method = name.removesuffix(".json").rpartition("-for-")[2] if "-for-" in name else "auto"
        return ["solve", name, "--method", method]
    if kind in ("plan", "placement") and name.endswith("-for-map.json"):
        return ["map", name, "--instance", "base-instance.json", "--topology", "dgx-h100"]
    if kind in ("plan", "placement"):
        return ["export", name, "--instance", "base-instance.json", "--to", "deepspeed"]
    assert kind == "topology", name
    return ["map", "base-instance.json", "--topology", name]


@contextmanager
def hang_guard(seconds: int):
    def hung(signum, frame):  # type: ignore[no-untyped-def]
        raise AssertionError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_corpus_is_complete():
    files = sorted(p.name for p in HOSTILE.iterdir() if p.name.split("-")[0] in ("instance", "plan", "placement",
                                                                                   "topology") and p.is_file())
    assert files == sorted(EXPECTED)
    assert len(files) >= 60
    for kind in ("instance", "plan", "placement", "topology"):
        assert any(name.startswith(kind + "-") for name in files), kind


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_input_gets_exit_2_and_one_line(name, capsys, monkeypatch):
    monkeypatch.chdir(HOSTILE)
    with hang_guard(HANG_GUARD_S):
        code = main(argv_for(name))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.splitlines() == [EXPECTED[name]]


SUBPROCESS_CASES = ["instance-nested-200000.json", "instance-capacity-1e999999999B.json",
                    "instance-seed-num-layers-1e12.json", "instance-bad-utf8-name.json", "plan-metrics-list.json"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_hostile_input_through_the_console_script(name):
    done = subprocess.run([sys.executable, "-m", "layerfit.cli", *argv_for(name)], cwd=HOSTILE, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [EXPECTED[name]]
