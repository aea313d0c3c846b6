"""Interconnect topologies as networkx graphs, and the bandwidth rule between two GPUs.

Nodes have ``kind`` ("gpu", "nic", "cpu", "switch"); GPUs also ``index``, ``host``,
``numa``, and where known ``memory`` and ``l2`` (bytes). Edges have ``kind`` (the link
code: NV#, PIX, PXB, PHB, NODE, SYS, IB), ``bandwidth`` (bytes per second, one way) and
``latency`` (seconds).

Inside a host, ``nvidia-smi topo -m`` names the path between every pair of GPUs; each pair
becomes one edge of that kind. Each NUMA node is a ``cpu`` node its GPUs attach to (PHB). Between hosts, each GPU reaches its own NIC and the NICs
an InfiniBand switch, so a cluster of thousands of GPUs has no edge per pair of hosts.

The bandwidth rule (:func:`link_bandwidth`): the direct edge's bandwidth when two GPUs
share one; otherwise the widest path's narrowest edge (max over paths of the min edge
bandwidth), and the latency adds up along that path.

Bandwidth per link kind, one way (:class:`LinkTable`, every figure overridable):

======  ===================================  ============================================
kind    default                              source
======  ===================================  ============================================
NV#     # × 25 GB/s                          NVLink gen 2/3/4: 25 GB/s per link per
                                             direction (gen 5: 50, set ``nvlink_per_link``)
PIX     PCIe x16: 31 GB/s (gen 4)            PCIe gen 4 x16 one way; gen 5: 63 GB/s
PXB     PCIe x16                             as PIX (more bridges, same link width)
PHB     PCIe x16                             through the host bridge
NODE    PCIe x16                             between host bridges of one NUMA node
SYS     0.9 × PCIe x16                       across sockets: measured 47–50 vs 52–55 GB/s
                                             one way on the bundled 6-GPU PCIe box
IB      50 GB/s (NDR, 400 Gb/s per port)     HDR: 25 GB/s (200 Gb/s)
======  ===================================  ============================================

Latencies are nominal figures for small messages (NVLink 2 µs, PCIe 5 µs, SYS 7 µs, IB
10 µs), not measurements; they matter only for tiny transfers.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import TopologyError

if TYPE_CHECKING:  # networkx is imported when a topology is built, not with `import solver`
    import networkx as nx

__all__ = ["LinkTable", "link_properties", "link_bandwidth", "link", "gpus", "new_topology", "add_cpus", "PCIE_X16"]

GB = 10**9
PCIE_X16 = {3: 15.75 * GB, 4: 31 * GB, 5: 63 * GB, 6: 121 * GB}  # one way, per direction
_NV = re.compile(r"^NV(\d+)$")
PCIE_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")


@dataclass(frozen=True)
class LinkTable:
    """One-way bandwidth (bytes/s) and latency (s) per link kind; see the module table."""

    nvlink_per_link: float = 25 * GB
    pcie: float = PCIE_X16[4]
    sys_factor: float = 0.9
    infiniband: float = 50 * GB
    nvlink_latency: float = 2e-6
    pcie_latency: float = 5e-6
    sys_latency: float = 7e-6
    ib_latency: float = 10e-6

    def with_pcie_gen(self, gen: int) -> LinkTable:
        if gen not in PCIE_X16:
            raise TopologyError(f"pcie_gen: unknown PCIe generation {gen!r} (known: {', '.join(map(str, PCIE_X16))})")
        return replace(self, pcie=PCIE_X16[gen])


def link_properties(code: str, table: LinkTable, where: str = "link") -> tuple[float, float]:
    """(bandwidth, latency) of a link code such as ``"NV12"`` or ``"PIX"``."""
    match = _NV.match(code)
    if match:
        count = int(match.group(1))
        if count < 1:
            raise TopologyError(f"{where}: NVLink code {code!r} has no links")
        return count * table.nvlink_per_link, table.nvlink_latency
    if code in ("PIX", "PXB", "PHB", "NODE"):
        return table.pcie, table.pcie_latency
    if code == "SYS":
        return table.pcie * table.sys_factor, table.sys_latency
    if code == "IB":
        return table.infiniband, table.ib_latency
    raise TopologyError(
        f"{where}: unknown link code {code!r} (known: NV# such as NV12, PIX, PXB, PHB, NODE, SYS, IB)"
    )


def new_topology(name: str) -> nx.Graph:
    import networkx as nx

    graph = nx.Graph(name=name)
    graph.graph["_widest"] = {}
    return graph


def add_cpus(graph: nx.Graph, table: LinkTable) -> None:
    """One ``cpu`` node per NUMA node of each host (CPU0, …), each GPU attached by PCIe (PHB).

    GPU pairs inside a host keep their direct edge, so these add no faster path; they put
    the sockets in the graph for what reads it.
    """
    for name, data in list(graph.nodes(data=True)):
        if data.get("kind") != "gpu":
            continue
        prefix = name.rsplit("GPU", 1)[0]  # "" on one host, "node3:" in a cluster
        cpu = f"{prefix}CPU{data.get('numa') or 0}"
        if cpu not in graph:
            graph.add_node(cpu, kind="cpu", host=data.get("host"), numa=data.get("numa") or 0)
        graph.add_edge(name, cpu, kind="PHB", bandwidth=table.pcie, latency=table.pcie_latency)


def gpus(topology: nx.Graph) -> list[str]:
    """GPU names in rank order: by host, then by index."""
    names = [n for n, d in topology.nodes(data=True) if d.get("kind") == "gpu"]
    return sorted(names, key=lambda n: (topology.nodes[n].get("host_index", 0), topology.nodes[n]["index"]))


def _check_gpu(topology: nx.Graph, name: str) -> None:
    if name not in topology or topology.nodes[name].get("kind") != "gpu":
        known = gpus(topology)
        shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        raise TopologyError(f"{name!r} is not a GPU of topology {topology.graph.get('name')!r} (GPUs: {shown})")


def _widest_from(topology: nx.Graph, source: str) -> dict[str, tuple[float, float, str]]:
    """Widest-path tree from ``source``: node -> (bottleneck bandwidth, latency, bottleneck kind).

    Dijkstra with max-min in place of sums; ties broken by lower latency. Cached per source.
    """
    cache: dict[str, Any] = topology.graph.setdefault("_widest", {})
    if source in cache:
        return cache[source]
    best: dict[str, tuple[float, float, str]] = {source: (float("inf"), 0.0, "")}
    heap: list[tuple[float, float, str, str]] = [(-float("inf"), 0.0, "", source)]
    done: set[str] = set()
    while heap:
        neg_bw, latency, kind, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        for other, data in topology[node].items():
            if other in done:
                continue
            bw = min(-neg_bw, data["bandwidth"])
            lat = latency + data["latency"]
            bottleneck_kind = data["kind"] if data["bandwidth"] <= -neg_bw else kind
            current = best.get(other)
            if current is None or bw > current[0] or (bw == current[0] and lat < current[1]):
                best[other] = (bw, lat, bottleneck_kind)
                heapq.heappush(heap, (-bw, lat, bottleneck_kind, other))
    cache[source] = best
    return best


def link(topology: nx.Graph, a: str, b: str) -> tuple[str, float, float]:
    """(kind, one-way bandwidth, latency) between GPUs ``a`` and ``b`` by the documented rule."""
    _check_gpu(topology, a)
    _check_gpu(topology, b)
    if a == b:
        raise TopologyError(f"a link needs two different GPUs, got {a!r} twice")
    if topology.has_edge(a, b):
        data = topology.edges[a, b]
        return data["kind"], data["bandwidth"], data["latency"]
    reached = _widest_from(topology, a).get(b)
    if reached is None:
        raise TopologyError(f"no path between {a!r} and {b!r}")
    bandwidth, latency, kind = reached
    return kind, bandwidth, latency


def link_bandwidth(topology: nx.Graph, a: str, b: str) -> float:
    """One-way bandwidth in bytes/s between GPUs ``a`` and ``b``.

    The direct edge's bandwidth if they share one, else the narrowest edge of the widest
    path between them (through NICs and switches across hosts).

    Examples
    --------
    >>> from layerfit import load_topology
    >>> link_bandwidth(load_topology("dgx-a100"), "GPU0", "GPU3") / 1e9
    300.0
    """
    return link(topology, a, b)[1]
