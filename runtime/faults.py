"""Which rank failed first, and why: what each rank records, and how a launcher reads it.

Every rank of a run (``runtime.execute`` or ``layerfit run``) leaves, in the job's folder:

* ``state{rank}.json`` when it starts (its pid, host and main thread), rewritten with
  ``"finished": true`` when it ends well;
* ``error{rank}.json`` when it raises: the exception that started it all — the innermost of
  its ``raise ... from`` chain, as Python prints it (type and message, one line), not a
  wrapper's text such as ``torch.distributed.pipelining``'s "failed to run forward" — with the
  whole traceback, the time, and whether it is a *peer* error (raised by the communication
  backend: a reset connection, a timed-out wait, which a peer's failure causes);
* ``stack{rank}.txt`` when the launcher stops it (SIGTERM): the Python stack of each of its
  threads at that moment (:mod:`faulthandler`, which writes it from the signal handler, even
  while the rank is blocked in C).

When a run fails, the launcher (:func:`first_failure`) names one rank, in this order:

1. the rank whose own error (not a peer error) came first, with that error;
2. a rank that died without a record (``os._exit``, a signal, a crash), with its exit code;
3. a rank that hung: stopped, with no record, neither finished nor waiting in
   ``torch.distributed`` (its stack says where it was), named with the peers whose waits on it
   timed out;
4. else the earliest record of any kind.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RankRecorder", "clear_records", "describe_exception", "finished", "first_failure", "is_peer_error", "root_cause"]

RECORD_PATTERNS = ("state*.json", "error*.json", "stack*.txt", ".error*.json.tmp", ".state*.json.tmp")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s explicit chain (``raise ... from``)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def describe_exception(exc: BaseException) -> str:
    """The exception as Python's traceback ends with it (``Type: message``), in one line."""
    text = "".join(traceback.format_exception_only(type(exc), exc))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _torch_distributed_dir() -> str:
    import torch.distributed

    return os.path.dirname(os.path.abspath(torch.distributed.__file__)) + os.sep


def _innermost_file(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    return os.path.abspath(frames[-1].filename) if frames else None


def is_peer_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from the communication backend (a peer's failure, or a wait on a
    peer that timed out), not from the rank's own work: a ``torch.distributed.DistError``, or a
    plain ``RuntimeError`` (what gloo's and NCCL's C++ errors become) raised by a call into
    ``torch.distributed``."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    where = _innermost_file(exc)
    return type(exc) is RuntimeError and where is not None and where.startswith(_torch_distributed_dir())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Whole or absent, even if the process is killed while writing."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


class RankRecorder:
    """What one rank leaves in the job's folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path, rank: int) -> None:
        self.out, self.rank = Path(out_dir), rank
        # The stack at the moment the launcher stops this rank (SIGTERM), written from the signal
        # handler itself; then the default action (the rank ends) follows, as without it. Set up
        # before the state is written: a rank with a state leaves its stack when stopped.
        self._stack = open(self.out / f"stack{rank}.txt", "w")  # noqa: SIM115 (open while the rank runs)
        faulthandler.register(signal.SIGTERM, file=self._stack, all_threads=True, chain=True)
        self.state = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(),
                      "main_thread": threading.main_thread().ident, "started": time.time(), "finished": False}
        _write_json(self.out / f"state{rank}.json", self.state)

    def failed(self, exc: BaseException) -> None:
        root = root_cause(exc)
        record = {"rank": self.rank, "time": time.time(), "error": describe_exception(root),
                  "peer": is_peer_error(root), "traceback": "".join(traceback.format_exception(exc))}
        _write_json(self.out / f"error{self.rank}.json", record)

    def finished(self) -> None:
        _write_json(self.out / f"state{self.rank}.json", {**self.state, "finished": True, "ended": time.time()})

    def close(self) -> None:
        faulthandler.unregister(signal.SIGTERM)
        self._stack.close()


def clear_records(out: Path) -> None:
    """Forget what an earlier run left in ``out`` (a job folder used again)."""
    for pattern in (*RECORD_PATTERNS, "report*.pt", "grads*.pt", "outputs.pt", "failures-*.json"):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(out: Path, prefix: str) -> dict[int, dict[str, Any]]:
    found = {}
    for path in out.glob(f"{prefix}*.json"):
        data = _read(path)
        if isinstance(data, dict) and isinstance(data.get("rank"), int):
            found[data["rank"]] = data
    return found


_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


@dataclass
class Frame:
    file: str
    line: int
    function: str

    def __str__(self) -> str:
        here = os.getcwd() + os.sep
        shown = self.file[len(here):] if self.file.startswith(here) else self.file
        return f"{self.function} at {shown}:{self.line}"


def stopped_at(out: Path, rank: int, main_thread: int | None) -> Frame | None:
    """Where rank ``rank``'s main thread was when it was stopped: the innermost frame of its
    dumped stack (None: it was not stopped, or left no stack)."""
    try:
        text = (out / f"stack{rank}.txt").read_text(errors="replace")
    except OSError:
        return None
    blocks: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    for line in text.splitlines():
        if (thread := _THREAD.match(line)) is not None:
            current = blocks.setdefault(int(thread.group(1), 16), [])
        elif (frame := _FRAME.match(line)) is not None and current is not None:
            current.append(Frame(frame.group(1), int(frame.group(2)), frame.group(3)))
    frames = blocks.get(main_thread) if main_thread is not None else None
    if frames is None and len(blocks) == 1:
        frames = next(iter(blocks.values()))
    return frames[0] if frames else None


def _exit_words(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


def finished(out: Path, rank: int) -> bool:
    """Whether rank ``rank`` ended well (its state says so)."""
    state = _read(out / f"state{rank}.json")
    return isinstance(state, dict) and state.get("finished") is True


def _dumped(out: Path, rank: int) -> bool:
    path = out / f"stack{rank}.txt"
    return path.exists() and path.stat().st_size > 0


def first_failure(out: Path, world: int, exits: dict[int, int | None], timeout_s: float) -> tuple[int | None, str, str]:
    """(rank, one-line message, that rank's traceback or '') for a failed run.

    ``exits``: each rank's exit code as the launcher saw it when it noticed the failure, before
    it stopped anyone (None or absent: still running then, or unknown).
    """
    states, errors = _records(out, "state"), _records(out, "error")
    own = sorted((e for e in errors.values() if not e.get("peer")), key=lambda e: e["time"])
    if own:
        first = own[0]
        return first["rank"], f"rank {first['rank']} failed: {first['error']}", first.get("traceback", "")
    silent = [r for r in range(world) if r not in errors and not states.get(r, {}).get("finished")]
    first_error = min((e["time"] for e in errors.values()), default=None)
    for rank in silent:  # died on its own, before the launcher stopped anyone
        code = exits.get(rank)
        if code == -signal.SIGTERM and _dumped(out, rank) and first_error is not None \
                and (out / f"stack{rank}.txt").stat().st_mtime > first_error:
            continue  # stopped after a peer failed (torchrun reports the ranks it stops too)
        if code not in (None, 0):
            return rank, f"rank {rank} died ({_exit_words(code)})" + ("" if rank in states else " before it started"), ""
    for rank in silent:  # gone, though nobody stopped it (it would have left its stack)
        if rank in states and exits.get(rank) is None and not _dumped(out, rank):
            return rank, f"rank {rank} died (exit code unknown)", ""
    waiting = sorted(r for r, e in errors.items() if e.get("peer"))
    torch_dir = _torch_distributed_dir()
    for rank in silent:  # stopped while busy with its own work, as its peers gave up on it
        frame = stopped_at(out, rank, states.get(rank, {}).get("main_thread"))
        if waiting and frame is not None and not os.path.abspath(frame.file).startswith(torch_dir):
            return rank, f"rank {rank} hung in {frame}: {_ranks(waiting)} timed out waiting for it ({timeout_s:g} s)", ""
    if errors:
        first = min(errors.values(), key=lambda e: e["time"])
        return first["rank"], f"rank {first['rank']} failed: {first['error']}", first.get("traceback", "")
    return None, "a rank failed without a report", ""
