"""Placing a plan's partitions on the GPUs of a topology: ``map_plan``.

The problem: partitions 0 … p−1 form a chain; boundary j carries b_j bytes (the
activation leaving partition j) from the GPU of partition j to that of j+1, taking
t_j = latency + b_j / bandwidth over the link between them (layerfit.placement.topology's rule).
Choose distinct GPUs π_0 … π_{p−1}, each with the memory for its partition, minimising

    min_bottleneck:  max_j t_j(π_j, π_{j+1})        min_total:  Σ_j t_j(π_j, π_{j+1})

Methods
-------
subset-dp     Exact, for one host of up to 20 GPUs: dynamic programming over (set of GPUs
              used, last GPU), one layer of states per partition, vectorised with numpy.
hierarchical  For clusters: hosts first, then GPUs inside a host. A DP over the chain
              cuts it into blocks of consecutive partitions, one block per host, each
              placed exactly inside its host by subset-dp; boundaries between blocks cross
              InfiniBand. The same DP without the limit on the number of hosts is a lower
              bound on every placement (see _hierarchical), reported beside it. For
              min_bottleneck on hosts whose GPUs are all alike inside (NVSwitch), runs of
              partitions are also packed into hosts, several to a host (_packed_bottleneck),
              which often meets the bound. The status is OPTIMAL only when it is met.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import OptionError, PlanError, TopologyError
from ..model.instance import Instance
from .placement import MAP_OBJECTIVES, Placement
from ..model.plan import Plan, Status
from .topology import gpus, link
from ..model.units import format_bytes
from ..report.validation import validate_plan

if TYPE_CHECKING:
    import networkx as nx
    import numpy as np

__all__ = ["map_plan", "build_placement", "evaluate", "subset_dp", "EXACT_GPU_LIMIT"]

EXACT_GPU_LIMIT = 20


def map_plan(
    instance: Instance, plan: Plan, topology: nx.Graph, objective: str = "min_bottleneck"
) -> Placement:
    """Place each partition of ``plan`` on a distinct GPU of ``topology``.

    Parameters
    ----------
    instance, plan:
        The instance and a plan for it (status optimal or feasible).
    topology:
        A graph from :func:`layerfit.load_topology`.
    objective:
        ``"min_bottleneck"`` (the slowest boundary) or ``"min_total"`` (their sum).

    Returns
    -------
    Placement
        With the chosen GPUs, per-boundary costs, the bound, and the naive rank-order
        placement beside it.

    Raises
    ------
    OptionError
        For an unknown objective, a plan without partitions, more partitions than GPUs,
        or a partition larger than every GPU's memory.

    Examples
    --------
    >>> from layerfit import Instance, Layer, load_topology, solve
    >>> inst = Instance(name="x", capacity="2GB", layers=[Layer(f"l{i}", weight_bytes=10**8,
    ...                 activation_bytes=10**9 if i == 0 else 10**6) for i in range(4)])
    >>> plan = solve(inst, objective="min_bottleneck", num_partitions=4)
    >>> placement = map_plan(inst, plan, load_topology("dgx1-v100"))
    >>> placement.boundaries[0]["kind"], round(placement.naive_ratio, 2)  # the 1 GB cut on NV2, not NV1
    ('NV2', 2.0)
    """
    started = time.perf_counter()
    if objective not in MAP_OBJECTIVES:
        raise OptionError(f"objective: unknown mapping objective {objective!r} (allowed: {', '.join(MAP_OBJECTIVES)})")
    validate_plan(instance, plan)  # before anything else reads the plan
    if not plan.status.has_plan:
        raise OptionError(f"plan: status {plan.status} has no partitions to place")
    names = gpus(topology)
    p = plan.num_partitions
    if p > len(names):
        raise OptionError(
            f"plan: {p} partitions but topology {topology.graph.get('name')!r} has {len(names)} GPUs "
            "(each partition needs a GPU of its own)"
        )
    part_bytes = [row["bytes"] for row in plan.metrics["partitions"]]
    cut_bytes = [cut["bytes"] for cut in plan.metrics["communication"]["cuts"]]
    memory = [topology.nodes[g].get("memory") for g in names]
    known = [m for m in memory if m is not None]
    for j, size in enumerate(part_bytes):
        if known and len(known) == len(memory) and size > max(known):
            raise OptionError(
                f"plan: partition {j} holds {format_bytes(size)}, more than any GPU's memory "
                f"(the largest has {format_bytes(max(known))})"
            )
    hosts = topology.graph.get("hosts", ["host0"])
    if len(hosts) == 1 and len(names) > EXACT_GPU_LIMIT:
        raise TopologyError(f"one host of {len(names)} GPUs: the exact mapper takes at most {EXACT_GPU_LIMIT}")
    if len(hosts) == 1:
        devices = _exact(topology, names, part_bytes, cut_bytes, objective)
        lower, method = None, "subset-dp"
    else:
        devices, lower = _hierarchical(topology, part_bytes, cut_bytes, objective)
        method = "hierarchical"
        if objective == "min_bottleneck":
            packed = _packed_bottleneck(topology, part_bytes, cut_bytes)
            if packed is not None:
                if devices is None or evaluate(topology, plan, packed, objective) < evaluate(topology, plan, devices, objective):
                    devices = packed
    return build_placement(instance, plan, topology, devices, objective, method=method, lower=lower, started=started)


def evaluate(topology: nx.Graph, plan: Plan, devices: Sequence[str], objective: str) -> float | None:
    """The placement objective of ``devices`` for ``plan``, or None if a partition does not fit."""
    part_bytes = [row["bytes"] for row in plan.metrics["partitions"]]
    cut_bytes = [cut["bytes"] for cut in plan.metrics["communication"]["cuts"]]
    for j, g in enumerate(devices):
        m = topology.nodes[g].get("memory")
        if m is not None and part_bytes[j] > m:
            return None
    costs = [_cost(topology, devices[j], devices[j + 1], cut_bytes[j]) for j in range(len(devices) - 1)]
    return max(costs, default=0.0) if objective == "min_bottleneck" else sum(costs)


def build_placement(
    instance: Instance,
    plan: Plan,
    topology: nx.Graph,
    devices: Sequence[str] | None,
    objective: str,
    *,
    method: str,
    lower: float | None,
    started: float,
) -> Placement:
    """The Placement of ``plan`` on ``devices``, with its boundaries and the rank-order baseline.

    ``lower`` is the method's proven lower bound (None: the method is exact).
    """
    part_bytes = [row["bytes"] for row in plan.metrics["partitions"]]
    cut_bytes = [cut["bytes"] for cut in plan.metrics["communication"]["cuts"]]
    naive = gpus(topology)[: plan.num_partitions]
    naive_value = evaluate(topology, plan, naive, objective)
    common: dict[str, Any] = {
        "objective_name": objective, "method": method, "topology_name": str(topology.graph.get("name")),
        "instance_name": instance.name, "num_layers": instance.num_layers, "partitions": plan.partitions,
        "partition_bytes": part_bytes, "naive_devices": naive, "naive_objective": naive_value,
    }
    if devices is None:
        return Placement(
            status=Status.INFEASIBLE, objective=None, bound=None, devices=[], boundaries=[],
            explanation="no assignment of partitions to distinct GPUs fits every partition in its GPU's memory",
            solve_time_s=time.perf_counter() - started, **common,
        )
    value = evaluate(topology, plan, devices, objective)
    if value is None:
        raise PlanError("a placement puts a partition on a GPU without the memory for it")
    if naive_value is not None and math.isclose(naive_value, value, rel_tol=1e-12, abs_tol=0.0):
        devices, value = naive, naive_value  # among equals, keep rank order
    bound = value if lower is None else min(value, lower)
    boundaries = []
    for j in range(plan.num_partitions - 1):
        kind, bandwidth, latency = link(topology, devices[j], devices[j + 1])
        boundaries.append({
            "from": devices[j], "to": devices[j + 1], "kind": kind, "bandwidth": bandwidth,
            "bytes": cut_bytes[j], "time": latency + cut_bytes[j] / bandwidth,
        })
    times = [b["time"] for b in boundaries]
    status = Status.OPTIMAL if math.isclose(bound, value, rel_tol=1e-9, abs_tol=1e-15) else Status.FEASIBLE
    return Placement(
        status=status, objective=value, bound=bound, devices=list(devices), boundaries=boundaries,
        naive_ratio=None if naive_value is None or value == 0 else naive_value / value,
        solve_time_s=time.perf_counter() - started,
        totals={"total_time_s": sum(times), "max_time_s": max(times, default=0.0), "total_bytes": sum(cut_bytes)},
        **common,
    )


def _cost(topology: nx.Graph, a: str, b: str, nbytes: int) -> float:
    _, bandwidth, latency = link(topology, a, b)
    return latency + nbytes / bandwidth


def _cost_matrices(topology: nx.Graph, names: Sequence[str], cut_bytes: Sequence[int]) -> list[np.ndarray]:
    """C_j[g, h] = t_j from GPU g to GPU h (inf on the diagonal)."""
    import numpy as np

    n = len(names)
    bandwidth = np.full((n, n), np.inf)
    latency = np.zeros((n, n))
    for i, a in enumerate(names):
        for k, b in enumerate(names):
            if i != k:
                _, bandwidth[i, k], latency[i, k] = link(topology, a, b)
    out = []
    for nbytes in cut_bytes:
        c = latency + nbytes / bandwidth
        np.fill_diagonal(c, np.inf)
        out.append(c)
    return out


def _fits(topology: nx.Graph, names: Sequence[str], part_bytes: Sequence[int]) -> np.ndarray:
    import numpy as np

    memory = [topology.nodes[g].get("memory") for g in names]
    return np.array([[m is None or size <= m for m in memory] for size in part_bytes], dtype=bool)


def subset_dp(costs: Sequence[np.ndarray], fits: np.ndarray, objective: str) -> list[int] | None:
    """Exact chain embedding: GPU indices for partitions 0 … p−1, or None if none fits.

    States are (mask of GPUs used, last GPU) after placing s+1 partitions, kept as sorted
    keys mask·G + last with their best value and the key they came from.
    """
    import numpy as np

    p, n = fits.shape
    first = np.flatnonzero(fits[0])
    keys = np.sort((np.left_shift(1, first).astype(np.int64)) * n + first)
    values = np.zeros(len(keys))
    history = [(keys, values, np.full(len(keys), -1, dtype=np.int64))]
    for s in range(p - 1):
        masks, last = keys // n, keys % n
        new_keys, new_values, parents = [], [], []
        for h in np.flatnonzero(fits[s + 1]):
            free = (masks >> h) & 1 == 0
            if not free.any():
                continue
            edge = costs[s][last[free], h]
            v = np.maximum(values[free], edge) if objective == "min_bottleneck" else values[free] + edge
            new_keys.append((masks[free] | (1 << int(h))) * n + h)
            new_values.append(v)
            parents.append(keys[free])
        if not new_keys:
            return None
        all_keys, all_values, all_parents = np.concatenate(new_keys), np.concatenate(new_values), np.concatenate(parents)
        order = np.lexsort((all_values, all_keys))  # by key, then value: the first of each key is its best
        sorted_keys = all_keys[order]
        first_of_key = np.ones(len(order), dtype=bool)
        first_of_key[1:] = sorted_keys[1:] != sorted_keys[:-1]
        keep = order[first_of_key]
        keys, values = all_keys[keep], all_values[keep]
        history.append((keys, values, all_parents[keep]))
    at = int(np.argmin(values))
    path = []
    for s in range(len(history) - 1, -1, -1):
        keys_s, _, parents_s = history[s]
        path.append(int(keys_s[at] % n))
        if s > 0:
            at = int(np.searchsorted(history[s - 1][0], parents_s[at]))
    return path[::-1]


def _exact(topology, names, part_bytes, cut_bytes, objective) -> list[str] | None:  # type: ignore[no-untyped-def]
    path = subset_dp(_cost_matrices(topology, names, cut_bytes), _fits(topology, names, part_bytes), objective)
    return None if path is None else [names[i] for i in path]


def _host_gpus(topology: nx.Graph) -> dict[str, list[str]]:
    by_host: dict[str, list[str]] = {}
    for g in gpus(topology):
        by_host.setdefault(topology.nodes[g]["host"], []).append(g)
    return by_host


def _hierarchical(topology, part_bytes, cut_bytes, objective) -> tuple[list[str] | None, float]:  # type: ignore[no-untyped-def]
    """Blocks of consecutive partitions, one host each, placed exactly inside the host.

    Returns the devices and a lower bound. Hosts of a preset cluster are identical and every
    pair of GPUs on different hosts has the same link (GPU, NIC, switch, NIC, GPU), so a
    block's best placement is computed once and any host can take any block. Any placement
    at all is a sequence of runs of consecutive partitions on one host (at most a host's GPUs
    each), with a cross-host boundary between runs, and a run can do no better than its best
    placement on a whole host: the same DP without the limit on the number of hosts is a
    lower bound, and it is attained when its best uses no more blocks than there are hosts.
    """
    by_host = _host_gpus(topology)
    hosts = list(by_host)
    local = by_host[hosts[0]]
    per_host = len(local)
    p = len(part_bytes)
    host_costs = _cost_matrices(topology, local, cut_bytes)
    host_fits = _fits(topology, local, part_bytes)
    cross = [_cost(topology, by_host[hosts[0]][0], by_host[hosts[1]][0], b) for b in cut_bytes]
    combine = max if objective == "min_bottleneck" else (lambda a, b: a + b)
    memo: dict[tuple[int, int], tuple[float, list[int]] | None] = {}

    def chain_value(a: int, path: Sequence[int]) -> float:
        value = 0.0
        for j in range(a, a + len(path) - 1):
            value = combine(value, float(host_costs[j][path[j - a], path[j - a + 1]]))
        return value

    def block(a: int, b: int) -> tuple[float, list[int]] | None:
        """Best placement of partitions a … b on one host: (value, local GPU indices)."""
        if (a, b) not in memo:
            path = subset_dp(host_costs[a:b], host_fits[a : b + 1], objective)
            if path is None:
                memo[(a, b)] = None
            else:
                value = chain_value(a, path)
                in_order = list(range(b - a + 1))  # among equals, GPUs in rank order
                if all(host_fits[a + i, i] for i in in_order) and chain_value(a, in_order) <= value:
                    path = in_order
                memo[(a, b)] = (value, path)
        return memo[(a, b)]

    # best[j][m] = (value, start of the last block) for partitions 0 … j−1 in m blocks;
    # free[j] = the best value with any number of blocks (the lower bound).
    best: list[dict[int, tuple[float, int]]] = [{} for _ in range(p + 1)]
    free = [math.inf] * (p + 1)
    best[0][0] = (0.0, -1)
    free[0] = 0.0
    for j in range(p):
        for length in range(1, min(per_host, p - j) + 1):
            placed = block(j, j + length - 1)
            if placed is None:
                continue

            def extend(value: float) -> float:
                total = value if j == 0 else combine(value, cross[j - 1])
                return combine(total, placed[0])

            if free[j] < math.inf:
                free[j + length] = min(free[j + length], extend(free[j]))
            for m, (value, _) in best[j].items():
                if m < len(hosts):
                    total = extend(value)
                    current = best[j + length].get(m + 1)
                    if current is None or total < current[0]:
                        best[j + length][m + 1] = (total, j)
    if not best[p]:
        return None, free[p]
    m = min(best[p], key=lambda k: (best[p][k][0], k))
    blocks = []
    j = p
    while j > 0:
        start = best[j][m][1]
        blocks.append((start, j - 1))
        j, m = start, m - 1
    devices: list[str] = []
    for h, (a, b) in enumerate(reversed(blocks)):
        placed = block(a, b)
        assert placed is not None
        devices.extend(by_host[hosts[h]][i] for i in placed[1])
    return devices, free[p]


def _packed_bottleneck(topology, part_bytes, cut_bytes) -> list[str] | None:  # type: ignore[no-untyped-def]
    """Clusters whose hosts are uniform inside (NVSwitch): runs packed into hosts, revisits allowed.

    When every GPU pair inside a host has the same link, only which boundaries cross hosts
    matters. For a threshold T, every boundary whose cross-host time exceeds T must stay
    inside a host, gluing partitions into runs; T is achievable when the runs pack into the
    hosts (first-fit decreasing; a host may take several runs). The smallest T that packs
    is taken, scanning the boundary times upwards. None when the hosts are not uniform.
    """
    by_host = _host_gpus(topology)
    hosts = list(by_host)
    local = by_host[hosts[0]]
    per_host = len(local)
    if any(len(g) != per_host for g in by_host.values()) or per_host < 2:
        return None
    inside = {(topology.edges[a, b]["bandwidth"], topology.edges[a, b]["latency"])
              for i, a in enumerate(local) for b in local[i + 1 :]}
    memories = {topology.nodes[g].get("memory") for g in gpus(topology)}
    if len(inside) != 1 or len(memories) != 1:
        return None
    memory = memories.pop()
    if memory is not None and max(part_bytes) > memory:
        return None
    ((bw_in, lat_in),) = inside
    intra = [lat_in + b / bw_in for b in cut_bytes]
    cross = [_cost(topology, local[0], by_host[hosts[1]][0], b) for b in cut_bytes]
    p = len(part_bytes)
    for threshold in sorted(set(intra) | set(cross)):
        if any(t > threshold for t in intra):
            continue
        runs, start = [], 0
        for j in range(p - 1):
            if cross[j] <= threshold:  # may cross: end the run here
                runs.append((start, j))
                start = j + 1
        runs.append((start, p - 1))
        if any(b - a + 1 > per_host for a, b in runs):
            continue
        free = [per_host] * len(hosts)
        where: dict[tuple[int, int], int] = {}
        for run in sorted(runs, key=lambda r: r[0] - r[1]):  # longest first
            length = run[1] - run[0] + 1
            h = next((h for h in range(len(hosts)) if free[h] >= length), None)
            if h is None:
                break
            where[run] = h
            free[h] -= length
        else:
            used = [0] * len(hosts)
            devices = []
            for run in runs:
                h = where[run]
                for _ in range(run[1] - run[0] + 1):
                    devices.append(by_host[hosts[h]][used[h]])
                    used[h] += 1
            return devices
    return None
