"""The differential fuzz at scale (issue #15): thousands of random small instances across every
option, solved by every method that accepts them (greedy, dp, CP-SAT with one worker and with
eight, the MIP on CBC and on HiGHS; every warm start), each plan checked by validate_plan and
against the exhaustive oracle of tests/fuzz_cases.py.

    python benchmarks/fuzz.py [--examples 3000] [--seed 0]

Prints the count of problems, of solves by method and status, and every disagreement (with the
problem as JSON to reproduce it); exits 1 if there was any. docs/results.md keeps the last run's.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings, seed  # noqa: E402

from fuzz_cases import check, describe, problems  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    solves: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    failures: list[str] = []

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(problems())
    def run(problem):  # type: ignore[no-untyped-def]
        inst = problem[0]
        kinds["DAG" if inst.edges else f"{inst.device_order} pool" if inst.devices else "chain"] += 1
        outcome = check(*problem)
        for name, status in outcome.runs.items():
            solves[(name, status)] += 1
        failures.extend(f"{f}\n  {describe(*problem)}" for f in outcome.failures)

    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    problems_run = sum(kinds.values())
    print(f"{problems_run} problems ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
          f"{sum(solves.values())} solves, {len(failures)} disagreements, {wall:.0f} s")
    methods = sorted({name for name, _ in solves})
    print("| method | " + " | ".join(("optimal", "feasible", "infeasible", "unknown")) + " |")
    print("|---|---:|---:|---:|---:|")
    for name in methods:
        print(f"| {name} | " + " | ".join(str(solves[(name, s)]) for s in ("optimal", "feasible", "infeasible",
                                                                            "unknown")) + " |")
    for failure in failures:
        print("DISAGREEMENT", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
