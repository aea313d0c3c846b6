"""Metrics of a plan, whatever method made it (the seed's performance metrics).

* Memory: per partition S(P) by component and utilization S(P) / C.
* Communication: at each cut, the activation leaving the partition's last layer crosses
  to the next device; the number of transfers is the number of cuts.
* Load balance over the partition sizes S_1 … S_k: population variance
  σ² = Σ (S_j − S̄)² / k, coefficient of variation σ / S̄, and S_max / S̄.
* KV tokens, when the instance has ``kv_tokens``: per stage the tokens of KV cache its free
  memory buys for its own layers, and the pipeline's, the least of them (its binding stage).
* Time, when every layer has one: per partition Σ time on its device's speed, the slowest
  stage, and the pipeline's estimate — m micro-batches take (m + k − 1) slots of the
  slowest stage, a bubble of (k − 1) / (m + k − 1) (GPipe and 1F1B alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..model.instance import Instance
from ..model.memory import (MEMORY_MODEL, capacity_at, device_capacity, in_flight, kv_token_bytes, plan_footprints,
                            plan_kv_tokens, with_kv_tokens)
from ..model.graph import dag_cuts

__all__ = ["plan_metrics"]


def plan_metrics(instance: Instance, partitions: Sequence[Sequence[int]],
                 devices: Sequence[str] | None = None, kv_tokens: int | None = None) -> dict[str, Any]:
    """Memory, communication, balance (and time) of ``partitions`` on ``instance`` (on
    ``devices``, the chosen devices of a free pool); with ``kv_tokens`` (a ``max_kv_tokens``
    plan), every stage holding that many tokens of KV cache. On an instance with
    ``kv_tokens``, also the tokens each stage's free memory buys and which stage binds."""
    if not partitions:
        return {}
    served = plan_kv_tokens(instance, partitions, devices) if instance.kv_tokens and any(kv_token_bytes(instance)) \
        else None
    if kv_tokens is not None:
        instance = with_kv_tokens(instance, kv_tokens)
    capacity = instance.capacity
    rows = []
    footprints = plan_footprints(instance, partitions)  # a DAG's relayed tensors count as activation
    for j, (part, fp) in enumerate(zip(partitions, footprints)):
        row: dict[str, Any] = {
            "index": j,
            "first_layer": instance.layers[part[0]].name,
            "last_layer": instance.layers[part[-1]].name,
            "num_layers": len(part),
            "bytes": fp.total,
            "weight_bytes": fp.weight,
            "activation_bytes": fp.activation,
            "buffer_bytes": fp.buffer,
            "training_state_bytes": fp.training_state,
            "kv_cache_bytes": fp.kv_cache,
            "utilization": fp.total / (device_capacity(instance, devices[j]) if devices else capacity_at(instance, j)),
        }
        if devices:
            row["device"] = devices[j]
        elif instance.devices is not None:
            row["device"] = instance.devices[j].name
        if served is not None:
            row["kv_tokens"] = served[1][j]  # None: a stage without cache limits nothing
        if instance.schedule != "none":
            row["micro_batches_in_flight"] = in_flight(instance, j, len(partitions))
        if instance.has_times:
            row["time"] = instance.stage_time(part, j, devices[j] if devices else None)  # on its device, whole ps
        rows.append(row)
    if instance.edges is not None:

        cuts = [{"after_layer": instance.layers[part[-1]].name, "bytes": sent}
                for part, sent in zip(partitions, dag_cuts(instance, partitions))]
    else:
        cuts = [
            {"after_layer": instance.layers[part[-1]].name, "bytes": instance.layers[part[-1]].sent_bytes}
            for part in partitions[:-1]
        ]
    sizes = [row["bytes"] for row in rows]
    k = len(sizes)
    mean = sum(sizes) / k
    variance = sum((s - mean) ** 2 for s in sizes) / k
    std = math.sqrt(variance)
    out: dict[str, Any] = {
        "memory_model": "+".join([MEMORY_MODEL]
                                 + ([instance.schedule] if instance.schedule != "none" else [])
                                 + (["buffer_reuse"] if instance.buffer_reuse else [])
                                 + (["recompute"] if instance.activation_recompute else [])),
        "capacity": capacity,
        "num_partitions": k,
        "partitions": rows,
        "max_bytes": max(sizes),
        "max_utilization": max(row["utilization"] for row in rows),
        "communication": {
            "transfers": len(cuts),
            "total_bytes": sum(c["bytes"] for c in cuts),
            "max_bytes": max((c["bytes"] for c in cuts), default=0),
            "cuts": cuts,
        },
        "balance": {
            "min_bytes": min(sizes),
            "max_bytes": max(sizes),
            "mean_bytes": mean,
            "variance": variance,
            "std_bytes": std,
            "cv": std / mean if mean else 0.0,
            "max_over_mean": max(sizes) / mean if mean else 1.0,
        },
    }
    if served is not None:
        tokens, stages = served
        out["kv_tokens"] = {
            "tokens": tokens,  # what the pipeline serves: its tightest stage's
            "binding_stage": None if tokens is None else stages.index(tokens),
            "bytes_per_token": sum(kv_token_bytes(instance)),
        }
    if instance.has_times:
        slowest = max(row["time"] for row in rows)
        m = instance.micro_batches
        # A pipeline of k stages runs m micro-batches in (m + k − 1) slots of the slowest stage.
        batch = (m + k - 1) * slowest
        out["max_time"] = slowest
        out["pipeline"] = {
            "micro_batches": m,
            "batch_time_s": batch,
            "micro_batches_per_s": m / batch if batch else math.inf,
            "bubble_fraction": (k - 1) / (m + k - 1),
        }
    return out
