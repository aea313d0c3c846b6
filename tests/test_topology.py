"""Topology graphs: every shared `nvidia-smi topo -m` file, hand-written edge cases, presets."""

import pytest

from layerfit import LinkTable, TopologyError, link_bandwidth, load_topology
from layerfit.placement.topology import gpus, link

from helpers import INSTANCES

DATA = INSTANCES / "topologies"  # verbatim copies of the shared reference outputs
GB = 1e9

EXPECTED = {
    # file: (GPUs, kinds of the GPU pairs, NUMA node of each GPU)
    "2gpu-nv2.txt": (2, {"NV2"}, [None, None]),
    "2gpu-phb.txt": (2, {"PHB"}, [None, None]),
    "g6e-4xl40s-node.txt": (4, {"NODE"}, [0, 0, 0, 0]),
    "p4d-8xa100-nv12.txt": (8, {"NV12"}, [0, 0, 0, 0, 1, 1, 1, 1]),
    "p5-8xh100-nv18.txt": (8, {"NV18"}, [0, 0, 0, 0, 1, 1, 1, 1]),
    "pcie-6gpu-pix-node-sys.txt": (6, {"PIX", "NODE", "SYS"}, [0, 0, 0, 0, 1, 1]),
}

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_file_parses_into_the_right_graph(name):
    graph = load_topology(DATA / name)
    count, kinds, numa = EXPECTED[name]
    names = gpus(graph)
    assert names == [f"GPU{i}" for i in range(count)]
    gpu_edges = [(a, b, d) for a, b, d in graph.edges(data=True) if a in names and b in names]
    assert len(gpu_edges) == count * (count - 1) // 2  # one edge per pair
    assert {d["kind"] for _, _, d in gpu_edges} == kinds
    sockets = {n for n, d in graph.nodes(data=True) if d["kind"] == "cpu"}
    assert sockets == {f"CPU{numa or 0}" for numa in numa}  # a cpu node per NUMA node, GPUs attached
    assert all(graph.has_edge(g, f"CPU{graph.nodes[g]['numa'] or 0}") for g in names)
    assert [graph.nodes[g]["numa"] for g in names] == numa
    for _, _, data in graph.edges(data=True):
        assert data["bandwidth"] > 0 and data["latency"] > 0


def test_parsed_codes_match_the_file():
    graph = load_topology(DATA / "pcie-6gpu-pix-node-sys.txt")
    assert graph.edges["GPU0", "GPU1"]["kind"] == "PIX"
    assert graph.edges["GPU0", "GPU2"]["kind"] == "NODE"
    assert graph.edges["GPU1", "GPU5"]["kind"] == "SYS"
    assert graph.nodes["GPU4"]["cpu_affinity"] == "32-63,96-127"


def test_bandwidth_rule_by_kind():
    a100 = load_topology(DATA / "p4d-8xa100-nv12.txt")
    assert link_bandwidth(a100, "GPU0", "GPU7") == 12 * 25 * GB
    h100 = load_topology(DATA / "p5-8xh100-nv18.txt")
    assert link_bandwidth(h100, "GPU0", "GPU7") == 18 * 25 * GB  # 450 GB/s one way
    pcie = load_topology(DATA / "pcie-6gpu-pix-node-sys.txt")
    assert link_bandwidth(pcie, "GPU0", "GPU1") == 31 * GB
    assert link_bandwidth(pcie, "GPU0", "GPU5") == pytest.approx(0.9 * 31 * GB)
    gen5 = load_topology(DATA / "pcie-6gpu-pix-node-sys.txt", link_table=LinkTable().with_pcie_gen(5))
    assert link_bandwidth(gen5, "GPU0", "GPU1") == 63 * GB


def test_a_measured_matrix_overrides_the_table():
    graph = load_topology(DATA / "pcie-6gpu-pix-node-sys.txt",
                          bandwidth_matrix=DATA / "pcie-6gpu-p2p-unidirectional-GBps.txt")
    assert link_bandwidth(graph, "GPU0", "GPU1") == pytest.approx(52.2 * GB)  # min(52.2, 54.5)
    assert link_bandwidth(graph, "GPU0", "GPU4") == pytest.approx(46.7 * GB)
    assert graph.edges["GPU0", "GPU1"]["kind"] == "PIX"


def write(tmp_path, text, name="topo.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


NIC_TOPO = (
    "\tGPU0\tGPU1\tNIC0\tNIC1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
    "GPU0\t X \tNV1\tPXB\tSYS\t0-11\t0\t\tN/A\n"
    "GPU1\tNV1\t X \tSYS\tPXB\t12-23\t1\t\tN/A\n"
    "NIC0\tPXB\tSYS\t X \tSYS\n"
    "NIC1\tSYS\tPXB\tSYS\t X \n"
    "\nLegend:\n\n  X    = Self\n  NV#  = Connection traversing a bonded set of # NVLinks\n\n"
    "NIC Legend:\n\n  NIC0: mlx5_0\n  NIC1: mlx5_1\n"
)


def test_tabs_nic_rows_and_the_nic_legend(tmp_path):
    graph = load_topology(write(tmp_path, NIC_TOPO))
    assert gpus(graph) == ["GPU0", "GPU1"]
    assert graph.nodes["NIC0"] == {"kind": "nic", "device": "mlx5_0", "host": "host0"}
    assert graph.edges["GPU0", "NIC0"]["kind"] == "PXB"
    assert graph.edges["GPU0", "GPU1"]["kind"] == "NV1"
    assert graph.nodes["GPU1"]["numa"] == 1 and graph.nodes["GPU1"]["cpu_affinity"] == "12-23"


def test_without_legend_and_with_many_links(tmp_path):
    text = "        GPU0    GPU1    GPU2\nGPU0     X      NV4     NV24\nGPU1    NV4      X      SYS\nGPU2    NV24    SYS      X\n"
    graph = load_topology(write(tmp_path, text))
    assert link_bandwidth(graph, "GPU0", "GPU2") == 24 * 25 * GB


def test_links_through_a_path_use_the_widest():
    cluster = load_topology("2×dgx-h100")
    kind, bandwidth, latency = link(cluster, "node0:GPU0", "node1:GPU3")
    assert (kind, bandwidth) == ("IB", 50 * GB)  # GPU–NIC (PCIe gen 5, 63 GB/s), NDR InfiniBand 50 GB/s
    assert latency == pytest.approx(2 * 5e-6 + 2 * 10e-6)
    assert link_bandwidth(cluster, "node1:GPU0", "node1:GPU7") == 450 * GB


@pytest.mark.parametrize(
    "text, message",
    [
        ("        GPU0    GPU1\nGPU0     X      NVX\nGPU1    NVX      X\n",
         r"GPU0–GPU1: unknown link code 'NVX' \(known: NV# such as NV12, PIX, PXB, PHB, NODE, SYS, IB\)$"),
        ("        GPU0    GPU1\nGPU0     X      NV2\n",
         r"the header names 2 devices but there is no row for GPU1 \(the matrix must be square\)$"),
        ("        GPU0    GPU1    GPU2\nGPU0     X      NV2\nGPU1    NV2      X\nGPU2 X\n",
         r"line 2: row GPU0 has 2 link codes, the header names 3 devices \(the matrix must be square\)$"),
        ("        GPU0    GPU1\nGPU0     X      NV2\nGPU1    PIX      X\n", r"GPU0–GPU1 is NV2 but GPU1–GPU0 is PIX \(not symmetric\)$"),
        ("        GPU0    GPU1\nGPU0    NV2     NV2\nGPU1    NV2      X\n", r"GPU0–GPU0 must be X \(self\), got 'NV2'$"),
        ("hello\n", r"no `nvidia-smi topo -m` header \(a line starting with GPU0\)$"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(TopologyError, match=message):
        load_topology(write(tmp_path, text))


def test_bad_bandwidth_matrices(tmp_path):
    topo = DATA / "pcie-6gpu-pix-node-sys.txt"
    bad = write(tmp_path, "   D\\D 0 1\n 0 1 2\n 1 3\n", "m.txt")
    with pytest.raises(TopologyError, match=r"row 1 has 1 values, expected 2 \(the matrix must be square\)$"):
        load_topology(topo, bandwidth_matrix=bad)
    with pytest.raises(TopologyError, match=r"a 2×2 matrix for 6 GPUs \(it must be square, one row per GPU\)$"):
        load_topology(topo, bandwidth_matrix=[[1, 2], [3, 4]])


def test_presets():
    v100 = load_topology("dgx1-v100")
    kinds = [v100.edges[a, b]["kind"] for a, b in v100.edges if a.startswith("GPU") and b.startswith("GPU")]
    assert kinds.count("NV2") == 8 and kinds.count("NV1") == 8 and kinds.count("SYS") == 12
    for g in gpus(v100):  # six NVLinks per V100
        assert sum(int(v100.edges[g, o]["kind"][2:]) for o in v100[g] if v100.edges[g, o]["kind"].startswith("NV")) == 6
    assert {n for n, d in v100.nodes(data=True) if d["kind"] == "cpu"} == {"CPU0", "CPU1"}
    a100 = load_topology("dgx-a100")
    parsed = load_topology(DATA / "p4d-8xa100-nv12.txt")
    assert {(a, b, d["kind"]) for a, b, d in a100.edges(data=True)} == {(a, b, d["kind"]) for a, b, d in parsed.edges(data=True)}
    assert "node2:CPU1" in load_topology("4×dgx-a100")
    assert a100.nodes["GPU0"]["memory"] == 80 * 10**9 and a100.nodes["GPU0"]["l2"] == 40 * 2**20
    assert load_topology("hgx-h200").nodes["GPU3"]["memory"] == 141 * 10**9
    cluster = load_topology("4x dgx-a100")
    assert len(gpus(cluster)) == 32 and gpus(cluster)[8] == "node1:GPU0"
    assert cluster.graph["hosts"] == ["node0", "node1", "node2", "node3"]
    assert link_bandwidth(cluster, "node0:GPU0", "node3:GPU0") == 25 * GB  # HDR InfiniBand


def test_unknown_sources():
    with pytest.raises(TopologyError, match=r"^unknown topology preset 'dgx-z900' \(presets: dgx-a100, "):
        load_topology("dgx-z900")
    with pytest.raises(TopologyError, match=r"^missing/topo.txt: no such file \(and not a preset name\)$"):
        load_topology("missing/topo.txt")
    with pytest.raises(TopologyError, match=r"'GPU9' is not a GPU of topology 'dgx-h100'"):
        link_bandwidth(load_topology("dgx-h100"), "GPU0", "GPU9")
