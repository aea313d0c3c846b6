"""Faults in a rank, under runtime.execute and under layerfit run (torchrun): the rank that
failed first is named with its own message; nothing of a one-machine run listens beyond
127.0.0.1; the job file is no pickle; a script without a main guard gets one line.

Rank 1 of a two-rank chain (l0 l1 | l2 l3) holds the faulty layer l2. The models live here:
spawned ranks import them from this module, torchrun's from ``--model test_faults:...``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit import Instance, Layer, runtime  # noqa: E402
from layerfit.report.metrics import plan_metrics  # noqa: E402
from layerfit import Plan, Status  # noqa: E402

from layerfit.runtime.execute import MAIN_GUARD  # noqa: E402
from helpers import ROOT  # noqa: E402

HERE = Path(__file__).resolve().parent
FOLDER = "LAYERFIT_TEST_FAULTS"  # where a faulty layer notes its pid, and waits for a release
ENV = {**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}"}
OTHERS = "; the other ranks were stopped"


class Fault(nn.Module):
    """A layer that, once the timed step runs it (after the warm-up: inside the pipeline's
    stage, as a real layer's error would be), raises, exits, or parks (notes its pid, then
    sleeps until released: a hang, or a rank to signal)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.inner = nn.Linear(16, 16)
        self.kind, self.calls = kind, 0

    def forward(self, x):
        if x.is_meta:  # the pipeline's shape inference
            return self.inner(x)
        self.calls += 1
        if self.calls < 2 or self.kind == "none":  # the warm-up step's first micro-batch
            return self.inner(x)
        if self.kind == "raise":
            raise ValueError("bad weights in l2\nsecond line of the message")
        if self.kind == "exit":
            os._exit(3)
        folder = Path(os.environ[FOLDER])
        (folder / f"parked-{os.getpid()}").touch()
        while not (folder / "release").exists():
            time.sleep(0.05)
        return self.inner(x)


def faulty(kind: str) -> nn.Sequential:
    layers = [(f"l{i}", nn.Linear(16, 16)) for i in range(4)]
    layers[2] = ("l2", Fault(kind))
    return nn.Sequential(OrderedDict(layers))


def raising():
    return faulty("raise")


def exiting():
    return faulty("exit")


def parking():
    return faulty("park")


def example_inputs(batch: int):
    return torch.randn(batch, 16), torch.randn(batch, 16)


PARK_LINE = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1) if "time.sleep(0.05)" in line)
WHERE = f"forward at {Path(__file__).resolve().relative_to(ROOT)}:{PARK_LINE}"


def plan_dict():
    inst = Instance(name="f", capacity=10**6, layers=[Layer(f"l{i}", weight_bytes=1) for i in range(4)])
    partitions = [[0, 1], [2, 3]]
    metrics = plan_metrics(inst, partitions)
    return Plan(status=Status.FEASIBLE, partitions=partitions, objective_name="min_bottleneck",
                objective=metrics["max_bytes"], bound=0, method="manual", instance_name=inst.name, num_layers=4,
                metrics=metrics, num_partitions_requested=2).to_dict()


# -- listening sockets of a process tree, from /proc ------------------------------------------

def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # /proc prints each 32-bit word in host order
    joined = b"".join(words)
    if joined[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in joined[12:])  # IPv4-mapped
    return ":".join(joined[i:i + 2].hex() for i in range(0, 16, 2))


def listening(root: int) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket listening in ``root``'s process tree."""
    inodes = {}
    for pid in _tree(root):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.append((inodes[fields[9]], _address(address), int(port, 16)))
    return found


# -- the runs --------------------------------------------------------------------------------

EXECUTE = """
import sys, torch
from layerfit import runtime
import test_faults
if __name__ == "__main__":
    try:
        runtime.execute({plan!r}, getattr(test_faults, {model!r})(), torch.randn(4, 16), micro_batches=2,
                        timeout_s={timeout})
    except runtime.ExecutionError as exc:
        print(f"ExecutionError: {{exc}}", file=sys.stderr)
        sys.exit(1)
"""


def _command(launcher, model, tmp_path, timeout):
    if launcher == "execute":
        script = tmp_path / "run.py"
        script.write_text(EXECUTE.format(plan=plan_dict(), model=model, timeout=timeout))
        return [sys.executable, str(script)]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_dict()))
    return [sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", f"test_faults:{model}", "--batch", "4",
            "--micro-batches", "2", "--timeout", str(timeout), "--job-dir", str(tmp_path / "job")]


def _start(launcher, model, tmp_path, timeout=60):
    folder = tmp_path / "faults"
    folder.mkdir()
    # SIGINT as a terminal gives it, even when these tests run in a background job (which ignores it).
    process = subprocess.Popen(_command(launcher, model, tmp_path, timeout), cwd=ROOT, env={**ENV, FOLDER: str(folder)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, folder


def _finish(process, folder):
    try:
        _, err = process.communicate(timeout=180)
    finally:
        (folder / "release").touch()  # a parked rank left behind goes
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err


def _run(launcher, model, tmp_path, monkeypatch, timeout=60):
    """(exit code, stderr) of the run: ``layerfit run`` as a command; ``runtime.execute`` here,
    in this process (its ExecutionError said as the script above says it)."""
    if launcher != "execute":
        return _finish(*_start(launcher, model, tmp_path, timeout))
    folder = tmp_path / "faults"
    folder.mkdir()
    monkeypatch.setenv(FOLDER, str(folder))  # the ranks inherit it
    try:
        runtime.execute(plan_dict(), globals()[model](), torch.randn(4, 16), micro_batches=2, timeout_s=timeout)
    except runtime.ExecutionError as exc:
        assert exc.rank == 1
        return 1, f"ExecutionError: {exc}\n"
    finally:
        (folder / "release").touch()
    return 0, ""


def _last_line(err):
    return err.rstrip("\n").splitlines()[-1]


def _expected(launcher, message):
    return f"ExecutionError: {message}" if launcher == "execute" else f"layerfit: error: {message}"


LAUNCHERS = ["execute", "layerfit run"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_rank_that_raises_is_named_with_its_own_whole_message(launcher, tmp_path, monkeypatch):
    # Raised inside torch.distributed.pipelining's stage, which wraps it ("failed to run forward:
    # args: ... kwargs: {}"): the rank's own exception is what is named, its message whole.
    if launcher == "layerfit run":  # a pickle planted where the job goes is never loaded
        job = tmp_path / "job"
        job.mkdir()
        planted = tmp_path / "planted"
        torch.save(_Planted(str(planted)), job / "job.pt")
    code, err = _run(launcher, "raising", tmp_path, monkeypatch)
    assert code == 1
    assert _last_line(err) == _expected(launcher, "rank 1 failed: ValueError: bad weights in l2 second line of the "
                                                  "message" + OTHERS), err[-3000:]
    if launcher == "layerfit run":
        assert not planted.exists()
        from safetensors.torch import load_file

        data = json.loads((job / "job.json").read_text())  # the job: JSON and safetensors
        assert data["model"]["spec"] == "test_faults:raising" and data["partitions"] == [[0, 1], [2, 3]]
        assert set(load_file(str(job / "job.safetensors"))) == {"inputs", "target"}
        assert (job / "job.pt").read_bytes()[:2] == b"PK"  # the planted file, untouched


class _Planted:
    """Unpickling it would create a file: the proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_rank_that_exits_is_named_not_its_peer(launcher, tmp_path, monkeypatch):
    code, err = _run(launcher, "exiting", tmp_path, monkeypatch)
    assert code == 1
    assert _last_line(err) == _expected(launcher, "rank 1 died (exit code 3)" + OTHERS), err[-3000:]
    if launcher == "layerfit run":  # the job folder layerfit made is private
        assert (tmp_path / "job").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_hung_rank_is_named_by_the_peers_waiting_on_it(launcher, tmp_path, monkeypatch):
    code, err = _run(launcher, "parking", tmp_path, monkeypatch, timeout=8)
    assert code == 1
    assert _last_line(err) == _expected(launcher, f"rank 1 hung in {WHERE}: rank 0 timed out waiting for it (8 s)"
                                        + OTHERS), err[-3000:]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sigint_in_a_rank_names_it_and_nothing_listens_beyond_loopback(launcher, tmp_path):
    process, folder = _start(launcher, "parking", tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("parked-*")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        parked = list(folder.glob("parked-*"))
        assert parked, process.communicate(timeout=5)
        sockets = listening(process.pid)  # rank 1 sits in l2; both ranks, their store and gloo are up
        assert sockets and all(address == "127.0.0.1" for _, address, _ in sockets), sockets
        os.kill(int(parked[0].name.split("-")[1]), signal.SIGINT)
    finally:
        code, err = _finish(process, folder)
    assert code == 1
    assert _last_line(err) == _expected(launcher, "rank 1 failed: KeyboardInterrupt" + OTHERS), err[-3000:]


def test_a_script_without_a_main_guard_gets_one_line(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import torch\nfrom layerfit import runtime\nimport test_faults\n"
                      f"runtime.execute({plan_dict()!r}, test_faults.faulty('none'), torch.randn(4, 16))\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert out.returncode == 1
    assert _last_line(out.stderr) == f"layerfit.runtime.execute.ExecutionError: {MAIN_GUARD}"
    assert "multiprocessing" not in out.stderr and len(out.stderr.splitlines()) < 10, out.stderr


# -- the launcher's reading of the records, without processes --------------------------------

def _records(folder, states=(), errors=(), stacks=()):
    from layerfit.runtime.faults import _write_json

    for rank, finished in states:
        _write_json(folder / f"state{rank}.json", {"rank": rank, "main_thread": 1, "finished": finished})
    for rank, when, error, peer in errors:
        _write_json(folder / f"error{rank}.json", {"rank": rank, "time": when, "error": error, "peer": peer})
    for rank, file in stacks:
        (folder / f"stack{rank}.txt").write_text(f'Current thread 0x0000000000000001 (most recent call first):\n'
                                                 f'  File "{file}", line 7 in forward\n')


def test_the_first_own_error_wins_over_earlier_peer_errors(tmp_path):
    from layerfit.runtime.faults import first_failure

    _records(tmp_path, states=[(0, False), (1, False), (2, False)],
             errors=[(0, 1.0, "RuntimeError: Connection reset by peer", True), (2, 3.0, "KeyError: 'x'", False),
                     (1, 2.0, "ValueError: late", False)])
    assert first_failure(tmp_path, 3, {}, 60)[:2] == (1, "rank 1 failed: ValueError: late")


def test_a_rank_torchrun_stopped_is_not_one_that_died(tmp_path):
    import signal as signals

    from layerfit.runtime.faults import first_failure

    # Rank 1 was stopped (SIGTERM, its stack written) after rank 0 timed out waiting on it: torchrun
    # lists it among the failures, but it hung; rank 2 vanished with no record and no stack.
    _records(tmp_path, states=[(0, False), (1, False)], errors=[(0, 1.0, "RuntimeError: Timed out", True)],
             stacks=[(1, "/somewhere/model.py")])
    os.utime(tmp_path / "stack1.txt", (5.0, 5.0))
    assert first_failure(tmp_path, 2, {0: 1, 1: -signals.SIGTERM}, 9)[:2] == (
        1, "rank 1 hung in forward at /somewhere/model.py:7: rank 0 timed out waiting for it (9 s)")
    _records(tmp_path, states=[(2, False)])
    assert first_failure(tmp_path, 3, {0: 1, 1: -signals.SIGTERM}, 9)[:2] == (2, "rank 2 died (exit code unknown)")
    assert first_failure(tmp_path, 3, {2: -signals.SIGKILL}, 9)[:2] == (2, "rank 2 died (killed by SIGKILL)")
