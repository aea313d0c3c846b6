"""Topology presets: common 8-GPU servers, PCIe boxes, and clusters of them over InfiniBand.

Single hosts are written as the ``nvidia-smi topo -m`` codes their vendors' machines show;
memory and L2 per GPU are vendor specs. Clusters ``N×<preset>`` (or ``Nx<preset>``) give
every GPU its own NIC (as DGX A100/H100 have: 8 compute NICs per node) on an InfiniBand
switch; GPUs are named ``node<h>:GPU<i>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import TopologyError
from .topology import PCIE_X16, LinkTable, add_cpus, link_properties, new_topology

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["PRESETS", "preset", "host_graph"]

GB, MiB = 10**9, 2**20


def _uniform(n: int, code: str) -> list[list[str]]:
    return [["X" if i == j else code for j in range(n)] for i in range(n)]


# The DGX-1 (V100) hybrid cube-mesh as nvidia-smi shows it: 6 NVLinks per GPU, NV1 or NV2
# to four peers, SYS (across sockets, no NVLink) to the other three.
_DGX1 = """X NV1 NV1 NV2 NV2 SYS SYS SYS
NV1 X NV2 NV1 SYS NV2 SYS SYS
NV1 NV2 X NV2 SYS SYS NV1 SYS
NV2 NV1 NV2 X SYS SYS SYS NV1
NV2 SYS SYS SYS X NV1 NV1 NV2
SYS NV2 SYS SYS NV1 X NV2 NV1
SYS SYS NV1 SYS NV1 NV2 X NV2
SYS SYS SYS NV1 NV2 NV1 NV2 X"""

# The bundled dual-socket PCIe box: pairs on one switch (PIX), same socket (NODE), across (SYS).
_PCIE6 = """X PIX NODE NODE SYS SYS
PIX X NODE NODE SYS SYS
NODE NODE X PIX SYS SYS
NODE NODE PIX X SYS SYS
SYS SYS SYS SYS X PIX
SYS SYS SYS SYS PIX X"""


@dataclass(frozen=True)
class HostSpec:
    description: str
    codes: list[list[str]]
    numa: list[int]
    memory: int
    l2: int
    pcie_gen: int
    infiniband: float  # per-GPU NIC port, bytes/s one way, for clusters


PRESETS: dict[str, HostSpec] = {
    "dgx-a100": HostSpec("8× A100 80GB SXM4 behind NVSwitch (NV12), two NUMA nodes, HDR InfiniBand",
                         _uniform(8, "NV12"), [0] * 4 + [1] * 4, 80 * GB, 40 * MiB, 4, 25 * GB),
    "dgx-h100": HostSpec("8× H100 SXM5 80GB behind NVSwitch (NV18), two NUMA nodes, NDR InfiniBand",
                         _uniform(8, "NV18"), [0] * 4 + [1] * 4, 80 * GB, 50 * MiB, 5, 50 * GB),
    "hgx-h200": HostSpec("8× H200 SXM 141GB behind NVSwitch (NV18), two NUMA nodes, NDR InfiniBand",
                         _uniform(8, "NV18"), [0] * 4 + [1] * 4, 141 * GB, 60 * 10**6, 5, 50 * GB),
    "dgx2-v100": HostSpec("16× V100 SXM3 32GB behind NVSwitch (NV6 between every pair), two NUMA nodes",
                          _uniform(16, "NV6"), [0] * 8 + [1] * 8, 32 * GB, 6 * 10**6, 3, 12.5 * GB),
    "dgx1-v100": HostSpec("8× V100 SXM2 32GB in the hybrid cube-mesh (NV1/NV2, SYS), EDR-class InfiniBand",
                          [row.split() for row in _DGX1.splitlines()], [0] * 4 + [1] * 4, 32 * GB, 6 * 10**6, 3,
                          12.5 * GB),
    "pcie-6gpu": HostSpec("6 GPUs on PCIe only, two sockets: PIX pairs, NODE within a socket, SYS across",
                          [row.split() for row in _PCIE6.splitlines()], [0] * 4 + [1] * 2, 24 * GB, 72 * MiB, 4,
                          25 * GB),
    "pcie-4gpu-node": HostSpec("4× L40S 48GB on CPU root ports of one socket (NODE)",
                               _uniform(4, "NODE"), [0] * 4, 48 * GB, 96 * MiB, 4, 25 * GB),
}

_CLUSTER = re.compile(r"^(\d+)\s*[x×]\s*(\S+)$")


def host_graph(name: str, spec: HostSpec, table: LinkTable) -> nx.Graph:
    """The graph of one host of a preset (GPU0…GPUn-1, one edge per pair)."""
    graph = new_topology(name)
    graph.graph["hosts"] = ["host0"]
    graph.graph["description"] = spec.description
    n = len(spec.codes)
    for i in range(n):
        graph.add_node(f"GPU{i}", kind="gpu", index=i, host="host0", host_index=0, numa=spec.numa[i],
                       cpu_affinity=None, memory=spec.memory, l2=spec.l2)
    for i in range(n):
        for j in range(i + 1, n):
            code = spec.codes[i][j]
            bandwidth, latency = link_properties(code, table, where=f"preset {name}: GPU{i}–GPU{j}")
            graph.add_edge(f"GPU{i}", f"GPU{j}", kind=code, bandwidth=bandwidth, latency=latency)
    add_cpus(graph, table)
    return graph


def preset(name: str, table: LinkTable | None = None) -> nx.Graph:
    """A preset host by name, or a cluster ``N×<preset>`` of them over InfiniBand."""
    match = _CLUSTER.match(name)
    base = match.group(2) if match else name
    if base not in PRESETS:
        raise TopologyError(
            f"unknown topology preset {name!r} (presets: {', '.join(PRESETS)}; clusters: N×<preset>, e.g. 4×dgx-h100)"
        )
    spec = PRESETS[base]
    if table is None:
        table = LinkTable().with_pcie_gen(spec.pcie_gen)
    if match is None:
        return host_graph(name, spec, table)
    hosts = int(match.group(1))
    if hosts < 1:
        raise TopologyError(f"{name!r}: a cluster needs at least one host")
    return _cluster(name, hosts, spec, table)


def _cluster(name: str, hosts: int, spec: HostSpec, table: LinkTable) -> nx.Graph:
    graph = new_topology(name)
    graph.graph["hosts"] = [f"node{h}" for h in range(hosts)]
    graph.graph["description"] = f"{hosts} hosts of: {spec.description}"
    switch = "ib-switch"
    graph.add_node(switch, kind="switch")
    one = host_graph("host", spec, table)
    pcie = PCIE_X16[spec.pcie_gen]
    for h in range(hosts):
        prefix = f"node{h}:"
        for node, data in one.nodes(data=True):
            graph.add_node(prefix + node, **{**data, "host": f"node{h}", "host_index": h})
            if data["kind"] != "gpu":
                continue
            gpu = node
            nic = f"{prefix}NIC{data['index']}"
            graph.add_node(nic, kind="nic", host=f"node{h}")
            # GPU and NIC share a PCIe switch (PXB) on these servers.
            graph.add_edge(prefix + gpu, nic, kind="PXB", bandwidth=pcie, latency=table.pcie_latency)
            graph.add_edge(nic, switch, kind="IB", bandwidth=spec.infiniband, latency=table.ib_latency)
        for a, b, data in one.edges(data=True):
            graph.add_edge(prefix + a, prefix + b, **data)
    return graph
