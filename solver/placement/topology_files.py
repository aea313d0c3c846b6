"""Reading ``nvidia-smi topo -m`` output (and measured P2P bandwidth matrices) into graphs.

The matrix has a header of device names (GPU0…, NIC0… or mlx5_0…), then one row per
device: its name, one link code per column (``X`` on the diagonal), then affinity
columns (CPU Affinity, NUMA Affinity, GPU NUMA ID) that GPU rows carry and NIC rows may
not. Columns are separated by tabs or spaces. A ``Legend:`` section, when present, ends
the matrix; its ``NIC Legend`` maps NIC# to device names (mlx5_0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TopologyError
from .topology import LinkTable, add_cpus, link_properties, new_topology

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["load_topology", "parse_topo_matrix", "parse_bandwidth_matrix", "apply_bandwidth_matrix"]

_DEVICE = re.compile(r"^(GPU\d+|NIC\d+|mlx5_\d+|[a-z]+\d*_\d+)$")
_GPU = re.compile(r"^GPU(\d+)$")


def _device_kind(name: str) -> str:
    return "gpu" if _GPU.match(name) else "nic"


def parse_topo_matrix(text: str, *, name: str, table: LinkTable, source: str = "topology") -> nx.Graph:
    """The graph of one host from the text of ``nvidia-smi topo -m``.

    Raises
    ------
    TopologyError
        On a missing header, a row that is not the next device, a matrix that is not square,
        an asymmetric pair, a diagonal that is not X, or an unknown link code (named).
    """
    lines = [line.rstrip("\n") for line in text.splitlines()]
    header_at = next((i for i, line in enumerate(lines) if line.split()[:1] and _GPU.match(line.split()[0])), None)
    if header_at is None:
        raise TopologyError(f"{source}: no `nvidia-smi topo -m` header (a line starting with GPU0)")
    header = lines[header_at].split()
    devices = []
    for token in header:
        if not _DEVICE.match(token):
            break
        devices.append(token)
    rows: dict[str, list[str]] = {}
    extras: dict[str, list[str]] = {}
    for lineno, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0].rstrip(":") in ("Legend", "NIC"):
            break
        row_name = tokens[0]
        if not _DEVICE.match(row_name):
            raise TopologyError(f"{source}, line {lineno}: expected a device row, got {row_name!r}")
        if row_name not in devices:
            raise TopologyError(f"{source}, line {lineno}: row {row_name!r} has no column in the header")
        cells = tokens[1 : 1 + len(devices)]
        if len(cells) < len(devices):
            raise TopologyError(
                f"{source}, line {lineno}: row {row_name} has {len(cells)} link codes, the header names "
                f"{len(devices)} devices (the matrix must be square)"
            )
        rows[row_name] = cells
        extras[row_name] = tokens[1 + len(devices) :]
    missing = [d for d in devices if d not in rows]
    if missing:
        raise TopologyError(
            f"{source}: the header names {len(devices)} devices but there is no row for {missing[0]} "
            "(the matrix must be square)"
        )
    nic_names = _nic_legend(lines)

    graph = new_topology(name)
    graph.graph["hosts"] = ["host0"]
    for device in devices:
        if _device_kind(device) == "gpu":
            cpu, numa = _affinity(extras[device])
            graph.add_node(device, kind="gpu", index=int(_GPU.match(device).group(1)), host="host0",
                           host_index=0, numa=numa, cpu_affinity=cpu, memory=None, l2=None)
        else:
            graph.add_node(device, kind="nic", device=nic_names.get(device, device), host="host0")
    for i, a in enumerate(devices):
        for j, b in enumerate(devices):
            code = rows[a][j]
            if i == j:
                if code != "X":
                    raise TopologyError(f"{source}: {a}–{a} must be X (self), got {code!r}")
                continue
            if rows[b][i] != code:
                raise TopologyError(f"{source}: {a}–{b} is {code} but {b}–{a} is {rows[b][i]} (not symmetric)")
            if j < i:
                continue
            bandwidth, latency = link_properties(code, table, where=f"{source}: {a}–{b}")
            graph.add_edge(a, b, kind=code, bandwidth=bandwidth, latency=latency)
    add_cpus(graph, table)
    return graph


def _nic_legend(lines: Sequence[str]) -> dict[str, str]:
    names = {}
    for line in lines:
        match = re.match(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$", line)
        if match:
            names[match.group(1)] = match.group(2)
    return names


def _affinity(extra: list[str]) -> tuple[str | None, int | None]:
    """CPU affinity and NUMA node from a GPU row's trailing columns (N/A where absent)."""
    cpu = extra[0] if extra and extra[0] != "N/A" else None
    numa = None
    if len(extra) > 1 and extra[1].isdigit():
        numa = int(extra[1])
    return cpu, numa


def parse_bandwidth_matrix(text: str, *, source: str = "bandwidth matrix") -> list[list[float]]:
    """A square matrix of measured P2P bandwidth in GB/s (``D\\D 0 1 ...`` layout), in bytes/s."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or not re.match(r"^\d+$", tokens[0]):
            continue
        try:
            rows.append([float(t) * 1e9 for t in tokens[1:]])
        except ValueError:
            raise TopologyError(f"{source}, line {lineno}: expected numbers (GB/s), got {line.strip()!r}") from None
    if not rows:
        raise TopologyError(f"{source}: no matrix rows (lines starting with a device index)")
    for i, row in enumerate(rows):
        if len(row) != len(rows):
            raise TopologyError(f"{source}: row {i} has {len(row)} values, expected {len(rows)} (the matrix must be square)")
    return rows


def apply_bandwidth_matrix(graph: nx.Graph, matrix: Sequence[Sequence[float]], *, source: str) -> None:
    """Replace each GPU pair's bandwidth by the measured one (bytes/s, one way).

    The graph is undirected: a pair gets the smaller of its two directions.
    """
    from .topology import gpus

    names = gpus(graph)
    if len(matrix) != len(names) or any(len(row) != len(matrix) for row in matrix):
        raise TopologyError(
            f"{source}: a {len(matrix)}×{len(matrix[0]) if matrix else 0} matrix for {len(names)} GPUs "
            "(it must be square, one row per GPU)"
        )
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j <= i:
                continue
            measured = min(matrix[i][j], matrix[j][i])
            if not measured > 0:
                raise TopologyError(f"{source}: {a}–{b} bandwidth must be positive, got {measured / 1e9:g} GB/s")
            graph.edges[a, b]["bandwidth"] = measured
            graph.edges[a, b]["measured"] = True
    graph.graph["_widest"] = {}


def load_topology(
    source: str | Path,
    *,
    link_table: LinkTable | None = None,
    bandwidth_matrix: str | Path | Sequence[Sequence[float]] | None = None,
) -> nx.Graph:
    """A topology graph from a ``nvidia-smi topo -m`` text file or a preset name.

    Parameters
    ----------
    source:
        A path to the saved output of ``nvidia-smi topo -m``, or a preset
        (``dgx-a100``, ``dgx-h100``, ``hgx-h200``, ``dgx1-v100``, ``pcie-6gpu``,
        ``pcie-4gpu-node``), or a cluster of presets such as ``"4×dgx-h100"``.
    link_table:
        Bandwidth and latency per link kind (default :class:`~layerfit.placement.topology.LinkTable`;
        presets default to their own PCIe generation).
    bandwidth_matrix:
        Measured one-way P2P bandwidth between the GPUs: a file in the ``D\\D`` layout of
        NVIDIA's p2pBandwidthLatencyTest (GB/s), or a square matrix in bytes/s. It replaces
        the table's figure for every GPU pair.

    Raises
    ------
    TopologyError
        For a source that is neither a file nor a preset, or a malformed file or matrix.

    Examples
    --------
    >>> topo = load_topology("dgx1-v100")
    >>> topo.edges["GPU0", "GPU3"]["kind"], topo.edges["GPU0", "GPU5"]["kind"]
    ('NV2', 'SYS')
    """
    from .presets import preset

    path = Path(source)
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        graph = parse_topo_matrix(text, name=path.stem, table=link_table or LinkTable(), source=str(path))
    elif isinstance(source, str) and not source.endswith((".txt", ".log")) and "/" not in source:
        graph = preset(source, link_table)
    else:
        raise TopologyError(f"{source}: no such file (and not a preset name)")
    if bandwidth_matrix is not None:
        if isinstance(bandwidth_matrix, (str, Path)):
            matrix_path = Path(bandwidth_matrix)
            if not matrix_path.is_file():
                raise TopologyError(f"{matrix_path}: no such file")
            matrix = parse_bandwidth_matrix(matrix_path.read_text(), source=str(matrix_path))
            where = str(matrix_path)
        else:
            matrix, where = [list(row) for row in bandwidth_matrix], "bandwidth_matrix"
        apply_bandwidth_matrix(graph, matrix, source=where)
    return graph
