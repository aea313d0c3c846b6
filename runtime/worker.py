"""The process torchrun starts for ``layerfit run``: ``python -m layerfit.runtime.worker JOB.json``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (c10d rendezvous gives ranks by arrival,
so a rank takes the partition of its global RANK, whatever node it lands on). The job is
JSON and safetensors (:mod:`layerfit.runtime.jobfile`): nothing is unpickled.
"""

from __future__ import annotations

import os
import sys

from .jobfile import read_job
from .rank import run_rank


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m layerfit.runtime.worker JOB_FILE", file=sys.stderr)
        return 2
    job = read_job(args[0])
    run_rank(int(os.environ["RANK"]), job, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
