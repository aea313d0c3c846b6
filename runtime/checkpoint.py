"""Checkpoint files, read lazily by key: what a rank loads of the weights is its own layers'.

A checkpoint is one of

* a safetensors file;
* a folder of safetensors files: shards listed by ``model.safetensors.index.json`` (its
  ``weight_map``, as ``save_pretrained`` writes it), or every ``*.safetensors`` file in it;
* a torch ``state_dict`` saved with ``torch.save``, read with ``weights_only=True`` (nothing
  is unpickled but tensors) and memory-mapped, so that untouched tensors are never read.

Headers (names, shapes, dtypes) are read without the data, so a 70B checkpoint is checked
against the model in milliseconds; :meth:`Checkpoint.read` then reads one tensor and notes
its name and bytes, which is how a rank proves what it loaded.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ModelError

__all__ = ["Checkpoint", "INDEX_FILE", "check_keys", "refuse_unexpected"]

INDEX_FILE = "model.safetensors.index.json"


class Checkpoint:
    """The tensors of a checkpoint by name: shapes from the headers, data on :meth:`read`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files: dict[str, Path] = {}  # tensor name -> safetensors file
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._state: Mapping[str, torch.Tensor] | None = None  # a torch state_dict, memory-mapped
        self._handles: dict[Path, Any] = {}
        self.read_keys: list[str] = []
        self.read_bytes = 0
        if self.path.is_dir():
            self._open_folder()
        elif self.path.is_file():
            if self.path.suffix == ".safetensors":
                self._add_safetensors(self.path)
            else:
                self._open_state_dict()
        else:
            raise ModelError(f"checkpoint: no such file or folder {str(self.path)!r}")

    # -- opening --------------------------------------------------------------------------

    def _open_folder(self) -> None:
        index = self.path / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"checkpoint: {index} is not a safetensors index with a weight_map ({exc})") from None
            if not isinstance(weight_map, dict):
                raise ModelError(f"checkpoint: {index}: weight_map must map tensor names to files")
            for shard in sorted(set(weight_map.values())):
                self._add_safetensors(self.path / str(shard), listed=weight_map)
            unlisted = sorted(set(weight_map) - set(self._files))
            if unlisted:
                raise ModelError(f"checkpoint: {index} lists {unlisted[0]!r} in {weight_map[unlisted[0]]!r}, "
                                 "which has no such tensor")
            return
        shards = sorted(self.path.glob("*.safetensors"))
        if not shards:
            raise ModelError(f"checkpoint: {self.path} holds no *.safetensors file")
        for shard in shards:
            self._add_safetensors(shard)

    def _add_safetensors(self, file: Path, listed: Mapping[str, str] | None = None) -> None:
        from safetensors import SafetensorError, safe_open

        if not file.is_file():
            raise ModelError(f"checkpoint: no such file {str(file)!r}")
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            names = list(handle.keys())
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"checkpoint: {file} is not a safetensors file ({exc})") from None
        self._handles[file] = handle
        for name in names:
            if listed is not None and listed.get(name) != file.name:
                continue  # the index places it in another shard
            if name in self._files:
                raise ModelError(f"checkpoint: tensor {name!r} is in both {self._files[name].name} and {file.name}")
            self._files[name] = file
            self._shapes[name] = shapes[name]

    def _open_state_dict(self) -> None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            raise ModelError(f"checkpoint: {self.path} holds objects other than tensors, which layerfit does not "
                             "unpickle; save the state_dict alone (torch.save(model.state_dict(), ...)) or as "
                             "safetensors") from None
        except Exception as exc:  # an unreadable file: said in one line
            raise ModelError(f"checkpoint: cannot read {self.path} as a weights-only torch state_dict "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in state.items()):
            raise ModelError(f"checkpoint: {self.path} is not a state_dict (a mapping of names to tensors)")
        self._state = state
        self._shapes = {name: tuple(t.shape) for name, t in state.items()}

    # -- reading --------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self._shapes)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def __contains__(self, key: object) -> bool:
        return key in self._shapes

    def read(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (on the CPU), noted as read."""
        if self._state is not None:
            tensor = self._state[key].clone()  # off the memory map: the file may change or close
        else:
            tensor = self._handles[self._files[key]].get_tensor(key)
        self.read_keys.append(key)
        self.read_bytes += tensor.numel() * tensor.element_size()
        return tensor


def check_keys(checkpoint: Checkpoint, wanted: Mapping[str, tuple[tuple[str, ...], tuple[int, ...], str]],
               ignored: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Which checkpoint key gives each tensor the model needs; ModelError naming the first
    missing, mis-shaped or unexpected key.

    ``wanted`` maps each of the model's parameters and persistent buffers (by its own name) to
    (the names it may be stored under — a tied weight's are all its owners' names —, its
    shape, the layer that holds it). ``ignored``: which other names are no error (on a rank:
    every other rank's).
    """
    chosen: dict[str, str] = {}
    for key, (aliases, shape, layer) in wanted.items():
        found = next((alias for alias in aliases if alias in checkpoint), None)
        if found is None:
            raise ModelError(f"checkpoint: no tensor {key!r} (layer {layer!r}) in {checkpoint.path}")
        if checkpoint.shape(found) != tuple(shape):
            raise ModelError(f"checkpoint: {found!r} has shape {list(checkpoint.shape(found))} in {checkpoint.path}, "
                             f"the model {list(shape)}")
        chosen[key] = found
    known = {alias for aliases, _, _ in wanted.values() for alias in aliases}
    refuse_unexpected([key for key in checkpoint.keys() if key not in known and not (ignored and ignored(key))],
                      checkpoint.path)
    return chosen


def refuse_unexpected(extra: Sequence[str], where: Path) -> None:
    """ModelError naming the first checkpoint key that no tensor of the model takes, if any."""
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ModelError(f"checkpoint: {extra[0]!r} in {where} is no parameter or persistent buffer of the model{more}")
