"""The seed's deployment step 4: keep a stage's weights in the GPU's L2 cache.

On Ampere and later GPUs part of L2 can be set aside for persisting accesses
(``cudaLimitPersistingL2CacheSize``), and a stream's access-policy window marks an address
range as persisting. When a stage's weights fit the set-aside, :func:`reserve_weights`
packs them into one contiguous buffer (the parameters become views of it, values kept),
sets the limit, and opens a window over the buffer on the current stream — through the
CUDA runtime library that the installed torch ships (``libcudart``, by ctypes; torch has no
wrapper for these calls). Elsewhere it reserves nothing and says why: on CPU, on a GPU
without persisting L2, when the weights do not fit, or when the runtime library is missing.

The CUDA path is written against the CUDA 12 and 13 runtime API (the enum values and the
64-byte attribute union checked against their headers); it has not yet run on a GPU in this
project's sessions (none was lent), so its report is the thing to check first there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["reserve_weights"]

_LIMIT_PERSISTING_L2 = 0x06  # cudaLimitPersistingL2CacheSize
_ATTR_MAX_PERSISTING_L2 = 108  # cudaDevAttrMaxPersistingL2CacheSize
_ATTR_MAX_WINDOW = 109  # cudaDevAttrMaxAccessPolicyWindowSize
_STREAM_ATTR_ACCESS_POLICY_WINDOW = 1  # cudaStreamAttributeAccessPolicyWindow
_STREAMING, _PERSISTING = 1, 2  # cudaAccessPropertyStreaming, cudaAccessPropertyPersisting
_ALIGN = 256  # bytes: each parameter's view starts aligned


class _AccessPolicyWindow(ctypes.Structure):
    _fields_ = [("base_ptr", ctypes.c_void_p), ("num_bytes", ctypes.c_size_t), ("hitRatio", ctypes.c_float),
                ("hitProp", ctypes.c_int), ("missProp", ctypes.c_int)]


class _StreamAttrValue(ctypes.Union):
    # cudaStreamAttrValue (cudaLaunchAttributeValue in CUDA 12): padded to 64 bytes there.
    _fields_ = [("accessPolicyWindow", _AccessPolicyWindow), ("pad", ctypes.c_char * 64)]


def _loaded_cudart() -> list[str]:
    """The libcudart this process has already loaded (torch's, once CUDA is initialised)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps if "libcudart" in line.rsplit("/", 1)[-1]})


def _cudart() -> ctypes.CDLL | None:
    """The CUDA runtime torch uses: the copy already loaded, else a pip wheel's, else the system's."""
    candidates = _loaded_cudart()
    for root in {os.path.dirname(torch.__file__), *(p for p in sys.path if "-packages" in p)}:
        # nvidia-cuda-runtime wheels: nvidia/cuda_runtime/lib (CUDA 12), nvidia/cu13/lib (CUDA 13)
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libcudart.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "lib", "libcudart*.so*")))
    found = ctypes.util.find_library("cudart")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _check(cudart: ctypes.CDLL, code: int, call: str) -> None:
    """Raise, naming the CUDA error, when a runtime call did not return cudaSuccess."""
    if code != 0:
        cudart.cudaGetErrorName.restype = ctypes.c_char_p
        name = (cudart.cudaGetErrorName(code) or b"an unknown error").decode()
        raise RuntimeError(f"{call} failed: {name} ({code})")


def _pack(module: nn.Module, device: torch.device) -> tuple[torch.Tensor, int]:
    """Move the module's parameters into one byte buffer (aligned views, values copied)."""
    params = [p for p in module.parameters()]
    offsets, total = [], 0
    for p in params:
        total = -(-total // _ALIGN) * _ALIGN
        offsets.append(total)
        total += p.numel() * p.element_size()
    flat = torch.empty(total, dtype=torch.uint8, device=device)
    with torch.no_grad():
        for p, offset in zip(params, offsets):
            size = p.numel() * p.element_size()
            view = flat[offset:offset + size].view(p.dtype).view(p.shape)
            view.copy_(p.data)
            p.data = view
    return flat, total


def reserve_weights(module: nn.Module, device: torch.device) -> dict[str, Any]:
    """Reserve ``module``'s weights in the persisting L2 of ``device`` when they fit.

    Returns the report entry: ``reserved_bytes`` (the set-aside now in force, 0 if none),
    ``weight_bytes``, ``window_bytes``, ``hit_ratio``, ``l2_bytes``, ``persisting_l2_max_bytes``
    (the most the GPU can set aside) and ``note``. A CUDA call that fails is reported in the
    note, never raised: the stage runs without the reservation.
    """
    try:
        return _reserve(module, device)
    except (RuntimeError, OSError, AttributeError) as exc:
        return {**_nothing_reserved(module), "note": f"the reservation failed ({exc}); nothing reserved"}


def _nothing_reserved(module: nn.Module) -> dict[str, Any]:
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    return {"reserved_bytes": 0, "weight_bytes": weight_bytes, "window_bytes": 0, "hit_ratio": 0.0, "l2_bytes": None,
            "persisting_l2_max_bytes": None}


def _reserve(module: nn.Module, device: torch.device) -> dict[str, Any]:
    report = _nothing_reserved(module)
    weight_bytes = report["weight_bytes"]
    if device.type != "cuda":
        return {**report, "note": f"{device.type}: no L2 persisting cache to reserve; nothing reserved"}
    props = torch.cuda.get_device_properties(device)
    report["l2_bytes"] = getattr(props, "L2_cache_size", None)
    cudart = _cudart()
    if cudart is None:
        return {**report, "note": "the CUDA runtime library (libcudart) was not found; nothing reserved"}
    index = device.index if device.index is not None else torch.cuda.current_device()
    most = ctypes.c_int(0)
    _check(cudart, cudart.cudaDeviceGetAttribute(ctypes.byref(most), _ATTR_MAX_PERSISTING_L2, index),
           "cudaDeviceGetAttribute(MaxPersistingL2CacheSize)")
    report["persisting_l2_max_bytes"] = most.value
    if most.value == 0:
        return {**report, "note": f"{props.name} has no persisting L2 set-aside (before Ampere); nothing reserved"}
    if weight_bytes == 0 or weight_bytes > most.value:
        return {**report, "note": f"the stage's weights ({weight_bytes:,} B) do not fit the persisting set-aside "
                                  f"({most.value:,} B); nothing reserved"}
    window_most = ctypes.c_int(0)
    _check(cudart, cudart.cudaDeviceGetAttribute(ctypes.byref(window_most), _ATTR_MAX_WINDOW, index),
           "cudaDeviceGetAttribute(MaxAccessPolicyWindowSize)")
    torch.cuda.set_device(index)
    flat, total = _pack(module, device)
    _check(cudart, cudart.cudaDeviceSetLimit(_LIMIT_PERSISTING_L2, ctypes.c_size_t(total)), "cudaDeviceSetLimit")
    granted = ctypes.c_size_t(0)
    _check(cudart, cudart.cudaDeviceGetLimit(ctypes.byref(granted), _LIMIT_PERSISTING_L2), "cudaDeviceGetLimit")
    window = min(total, window_most.value)
    value = _StreamAttrValue()
    value.accessPolicyWindow.base_ptr = flat.data_ptr()
    value.accessPolicyWindow.num_bytes = window
    value.accessPolicyWindow.hitRatio = min(1.0, granted.value / window) if window else 0.0
    value.accessPolicyWindow.hitProp = _PERSISTING
    value.accessPolicyWindow.missProp = _STREAMING
    stream = ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)
    _check(cudart, cudart.cudaStreamSetAttribute(stream, _STREAM_ATTR_ACCESS_POLICY_WINDOW, ctypes.byref(value)),
           "cudaStreamSetAttribute(AccessPolicyWindow)")
    module._l2_buffer = flat  # type: ignore[attr-defined]  # keeps the packed weights alive with the module
    return {**report, "reserved_bytes": granted.value, "window_bytes": window,
            "hit_ratio": value.accessPolicyWindow.hitRatio,
            "note": f"weights packed into one {total:,} B buffer; persisting set-aside {granted.value:,} B of "
                    f"{most.value:,} B, window {window:,} B on the stage's stream"}
