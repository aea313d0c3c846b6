"""The job file ``layerfit run`` hands to its ranks: JSON and safetensors, never a pickle.

A pickle runs whatever code it names when loaded, and the job's folder may be one the user
chose (``--job-dir``, shared by the nodes): anyone who could write there could run code as the
user. So the job is ``job.json`` (plain data: the plan, the options, the model *spec* — a factory
``package.module:function`` or a Hugging Face directory, with its checkpoint or ``init`` — and
the instance of a DAG plan) and ``job.safetensors`` (the batch: ``inputs`` and ``target``). Each
rank rebuilds the model from its spec, as the launcher did. What the ranks write back is read
with ``torch.load(weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from layerfit import Instance

from .errors import ModelError
from .graph import Graph
from .model import FactorySource, PreparedModel, resolve_model
from .rank import Job

__all__ = ["JOB_FILE", "TENSORS_FILE", "read_job", "write_job"]

JOB_FILE, TENSORS_FILE = "job.json", "job.safetensors"
_NOT_DATA = ("model", "inputs", "target", "graph", "loss_fn")


def _spec(prepared: PreparedModel) -> dict[str, Any]:
    from .hf import HFSource

    source = prepared.source
    if isinstance(source, HFSource):
        spec = source.directory
    elif isinstance(source, FactorySource) and isinstance(source.factory, str):
        spec = source.factory
    else:
        raise ModelError("model: layerfit run's ranks rebuild the model from 'package.module:function' or a Hugging "
                         f"Face directory, not from {type(source).__name__}")
    return {"spec": spec, "checkpoint": getattr(source, "checkpoint", None), "init": source.init,
            "names": list(prepared.names), "shared": prepared.shared}


def write_job(job: Job, folder: Path, instance: Instance | None) -> Path:
    """Write ``job`` (and the instance its DAG plan follows) as ``folder/job.json`` and
    ``folder/job.safetensors``; the path of the JSON."""
    from safetensors.torch import save_file

    if job.loss_fn is not None:
        raise ModelError("loss_fn: layerfit run's ranks use the model's own loss (or mean squared error)")
    data = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name not in _NOT_DATA}
    data["model"] = _spec(job.model)
    data["graph_instance"] = instance.to_dict() if job.graph is not None and instance is not None else None
    # Each its own copy: safetensors refuses tensors that share memory, as a causal LM's labels
    # often do its inputs (the target is the token ids).
    tensors = {name: value.detach().cpu().clone(memory_format=torch.contiguous_format)
               for name, value in (("inputs", job.inputs), ("target", job.target)) if value is not None}
    save_file(tensors, str(folder / TENSORS_FILE))
    path = folder / JOB_FILE
    path.write_text(json.dumps(data))
    return path


def read_job(path: str | Path) -> Job:
    """The job written by :func:`write_job` (``path``: its JSON; the tensors lie beside it)."""
    from safetensors.torch import load_file

    path = Path(path)
    data = json.loads(path.read_text())
    model = data.pop("model")
    graph_instance = data.pop("graph_instance")
    source = resolve_model(model["spec"], checkpoint=model["checkpoint"], init=model["init"])
    prepared = PreparedModel(source, model["names"], [dict(group) for group in model["shared"]])
    tensors = load_file(str(path.with_name(TENSORS_FILE)))
    graph = Graph(Instance.from_dict(graph_instance)) if graph_instance is not None else None
    return Job(model=prepared, inputs=tensors.get("inputs"), target=tensors.get("target"), graph=graph, loss_fn=None,
               **data)
