"""torchrun, as ``layerfit run`` launches it: ``python -m layerfit.runtime.torchrun FAILURES.json ARGS...``.

The same launcher as the ``torchrun`` command (``torch.distributed.run``, ARGS as torchrun
takes them), which also writes, when ranks fail, each failed rank's exit code as torchrun saw
it to FAILURES.json (``{"rank": {"exitcode": ..., "pid": ...}}``): a rank that exits without a
word (``os._exit``, a signal) is then named with its code rather than blamed on the peer whose
connection it reset (:func:`layerfit.runtime.faults.first_failure`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m layerfit.runtime.torchrun FAILURES_JSON TORCHRUN_ARGS...", file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(args[1:]))
    except ChildFailedError as exc:
        failures = {str(rank): {"exitcode": failure.exitcode, "pid": failure.pid}
                    for rank, failure in exc.failures.items()}
        Path(args[0]).write_text(json.dumps(failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
