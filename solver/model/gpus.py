"""GPUs by name: the memory the driver reports for each, and the reserve held back by default.

A capacity (the instance's or a device's) may be a GPU name instead of a size: ``"H100-80GB"``
means that GPU's memory as the driver reports it (``nvidia-smi --query-gpu=memory.total``, in
MiB, here as exact bytes; ``rocm-smi --showmeminfo vram`` for the MI300X). Not all of it is the
model's: the CUDA context, NCCL's buffers and the allocator's fragmentation take some, so a
GPU name also brings a **default reserve**, held back on every device
(``constraints.reserve``) unless the instance gives its own (``0`` included)::

    reserve = ceil_GiB(2 GiB + 3% of the GPU's memory)

* 2 GiB, fixed: the CUDA context with its loaded kernels and cuBLAS/cuDNN workspaces
  (0.5–1 GiB on Hopper), the part of the driver's total that CUDA itself does not hand out
  (H100: 81,559 MiB in ``nvidia-smi``, 81,079 MiB as CUDA's total, 480 MiB apart), and NCCL's
  buffers (4 MiB per channel and peer by default, up to a GiB with NVLink SHARP on NVSwitch);
* 3% of the memory: the caching allocator's fragmentation (blocks rounded up, freed segments
  kept cached), which grows with what the device holds;
* rounded up to a whole GiB.

On an H100 that is 5 GiB of its 79.6 GiB; vLLM's default ``gpu_memory_utilization=0.9`` holds
back 10% (8 GiB) for the same reasons and its own sampler. Where each figure comes from is the
``source`` of its row; ``docs/concepts.md`` has the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InstanceError
from .units import parse_size

__all__ = ["GPU", "GPUS", "RESERVE_FIXED", "RESERVE_FRACTION", "default_reserve", "find_gpu", "gpu_table",
           "parse_capacity"]

MiB, GiB = 2**20, 2**30
RESERVE_FIXED = 2 * GiB  # CUDA context, the driver's own share, NCCL buffers
RESERVE_FRACTION = (3, 100)  # the caching allocator's fragmentation: 3% of the memory


def default_reserve(memory: int) -> int:
    """The reserve held back by default on a GPU of ``memory`` bytes: 2 GiB + 3% of the
    memory, rounded up to a whole GiB (the module's docstring says why)."""
    num, den = RESERVE_FRACTION
    wanted = RESERVE_FIXED + -(-memory * num // den)
    return -(-wanted // GiB) * GiB


@dataclass(frozen=True)
class GPU:
    """A GPU model: its name, the memory its driver reports (bytes) and where that figure is from."""

    name: str
    memory: int
    source: str

    @property
    def reserve(self) -> int:
        """The default reserve on this GPU (:func:`default_reserve`)."""
        return default_reserve(self.memory)


_ROWS = (
    GPU("H100-80GB", 81_559 * MiB,
        "nvidia-smi memory.total 81559MiB on H100 80GB HBM3 (SXM5), driver 550 (NVIDIA/nccl#1264, "
        "wilicc/gpu-burn#114, modal-labs/modal-client#2797); CUDA's own total is 81,079 MiB, 480 MiB less, "
        "which the reserve covers"),
    GPU("H200", 143_771 * MiB, "nvidia-smi memory.total 143771MiB on H200 SXM 141GB (several published outputs)"),
    GPU("A100-40GB", 40_960 * MiB,
        "nvidia-smi memory.total 40960MiB on A100-SXM4-40GB and A100-PCIE-40GB (modal-labs/modal-client#2797)"),
    GPU("A100-80GB", 81_920 * MiB,
        "nvidia-smi memory.total 81920MiB on A100-SXM4-80GB and A100 80GB PCIe (modal-labs/modal-client#2797)"),
    GPU("L40S", 46_068 * MiB, "nvidia-smi memory.total 46068MiB on L40S (modal-labs/modal-client#2797)"),
    GPU("L4", 23_034 * MiB,
        "nvidia-smi memory.total 23034MiB on L4, the 24 GB GDDR6 card (modal-labs/modal-client#2797, "
        "several published outputs, drivers 525 and 535)"),
    GPU("RTX4090", 24_564 * MiB, "nvidia-smi memory.total 24564MiB on GeForce RTX 4090"),
    GPU("B200", 183_359 * MiB,
        "nvidia-smi memory.total 183359MiB on B200, drivers 570 and 595 (several published outputs); CUDA's "
        "own total, as PyTorch reports it, is 178.35 GiB (191.5 GB), 0.7 GiB less, which the reserve covers"),
    GPU("MI300X", 205_822_885_888,
        "rocm-smi VRAM Total Memory 205822885888 B (196,288 MiB) on Instinct MI300X, also HIP's totalGlobalMem"),
)

GPUS: dict[str, GPU] = {gpu.name: gpu for gpu in _ROWS}


def _key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).upper()


_BY_KEY = {_key(name): gpu for name, gpu in GPUS.items()}


def find_gpu(name: object, field: str) -> GPU:
    """The GPU called ``name`` (case, spaces, hyphens and underscores aside: ``"h100 80gb"`` is
    ``"H100-80GB"``).

    Raises
    ------
    InstanceError
        ``capacity: unknown GPU 'H100' (known: H100-80GB, H200, …)``.
    """
    gpu = _BY_KEY.get(_key(name)) if isinstance(name, str) else None
    if gpu is None:
        raise InstanceError(f"{field}: unknown GPU {name!r} (known: {', '.join(GPUS)})")
    return gpu


def _looks_like_gpu(value: str) -> bool:
    """A string that names a GPU rather than a size: it starts with a letter and has a digit."""
    text = value.strip()
    return bool(text) and text[0].isalpha() and any(c.isdigit() for c in text)


def parse_capacity(value: object, field: str) -> tuple[int, GPU | None]:
    """A capacity: a size (:func:`~layerfit.model.units.parse_size`), or a GPU name, which is
    that GPU's memory as the driver reports it. Returns the bytes and the GPU, if one was named.

    Examples
    --------
    >>> parse_capacity("H100-80GB", "capacity")[0], parse_capacity("80GB", "capacity")
    (85520809984, (80000000000, None))
    """
    if isinstance(value, str) and _looks_like_gpu(value):
        gpu = find_gpu(value, field)
        return gpu.memory, gpu
    return parse_size(value, field), None


def gpu_table() -> str:
    """The GPU table as Markdown (the docs print it from here, never by hand)."""
    rows = ["| name | memory the driver reports | default reserve | left for the model | source |",
            "|---|---:|---:|---:|---|"]
    for gpu in GPUS.values():
        mib = f"{gpu.memory // MiB:,} MiB" if gpu.memory % MiB == 0 else f"{gpu.memory / MiB:,.1f} MiB"
        left = gpu.memory - gpu.reserve
        rows.append(f"| `{gpu.name}` | {mib} ({gpu.memory:,} B, {gpu.memory / 1e9:.2f} GB) | "
                    f"{gpu.reserve // GiB} GiB | {left / 1e9:.2f} GB | {gpu.source} |")
    return "\n".join(rows)
