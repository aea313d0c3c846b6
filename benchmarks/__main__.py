"""Run every benchmark and copy the results into the documentation.

    python -m benchmarks [--quick]

Each script writes benchmarks/results/<name>.json, .md (and .png where it plots); the
results page of the docs (docs/results.md) and the README's summary are then regenerated
from the .md files by benchmarks/update_docs.py. ``--quick`` trims sizes and repeats so the
whole run takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [  # (script, takes --quick)
    ("bench_compare.py", False),
    ("bench_quality.py", True),
    ("bench_mapping.py", False),
    ("bench_free_pool.py", True),
    ("bench_solver.py", True),
    ("bench_runtime.py", True),
    ("bench_hf_runtime.py", True),
    ("bench_hf_activations.py", False),
    ("bench_kv_tokens.py", False),
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for script, has_quick in SCRIPTS:
        started = time.perf_counter()
        command = [sys.executable, str(HERE / script), *(["--quick"] if args.quick and has_quick else [])]
        done = subprocess.run(command, stdout=subprocess.DEVNULL)
        print(f"{script}: {'ok' if done.returncode == 0 else f'failed ({done.returncode})'} in {time.perf_counter() - started:.1f} s")
        if done.returncode != 0:
            return done.returncode
    subprocess.run([sys.executable, str(HERE / "update_docs.py")], check=True)
    print("docs/results.md and the README's summary updated from benchmarks/results/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
