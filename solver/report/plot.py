"""A picture of a placement: the GPUs and their links, and where the partitions run.

GPUs sit on a circle per host (hosts side by side); a link's width grows with its
bandwidth and its colour says its kind. The placement is drawn on top: each used GPU is
labelled with its partition, and each boundary is an arrow labelled with the bytes it
carries and its transfer time. Only hosts the placement uses are drawn. Needs matplotlib
(``pip install layerfit[plot]``); nothing else in layerfit imports it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LayerfitError
from ..placement.placement import Placement
from ..placement.topology import gpus
from ..model.units import format_size

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["plot_placement"]

_KIND_COLOURS = {"NV": "tab:green", "PIX": "tab:blue", "PXB": "tab:blue", "PHB": "tab:purple",
                 "NODE": "tab:orange", "SYS": "tab:red", "IB": "tab:gray"}


def _colour(kind: str) -> str:
    return _KIND_COLOURS["NV"] if kind.startswith("NV") else _KIND_COLOURS.get(kind, "black")


def plot_placement(placement: Placement, topology: nx.Graph, path: str | Path) -> Path:
    """Draw ``placement`` on ``topology`` into ``path`` (PNG); returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:  # pragma: no cover - matplotlib is in the test requirements
        raise LayerfitError("--plot needs matplotlib: pip install 'layerfit[plot]'") from None

    used_hosts = []
    for device in placement.devices:
        host = topology.nodes[device]["host"]
        if host not in used_hosts:
            used_hosts.append(host)
    by_host = {h: [g for g in gpus(topology) if topology.nodes[g]["host"] == h] for h in used_hosts}
    position = {}
    for h, (host, names) in enumerate(by_host.items()):
        for i, name in enumerate(names):
            angle = math.pi / 2 - 2 * math.pi * i / len(names)
            position[name] = (h * 3.0 + math.cos(angle), math.sin(angle))

    fig, ax = plt.subplots(figsize=(max(6.0, 4.0 * len(by_host)), 6.0))
    widest = max((d["bandwidth"] for a, b, d in topology.edges(data=True) if a in position and b in position), default=1)
    kinds_seen = set()
    for a, b, data in topology.edges(data=True):
        if a in position and b in position:
            kinds_seen.add("NV#" if data["kind"].startswith("NV") else data["kind"])
            (x0, y0), (x1, y1) = position[a], position[b]
            ax.plot([x0, x1], [y0, y1], color=_colour(data["kind"]), alpha=0.25, zorder=1,
                    linewidth=0.5 + 5.0 * data["bandwidth"] / widest)
    for boundary in placement.boundaries:
        kinds_seen.add("NV#" if boundary["kind"].startswith("NV") else boundary["kind"])
        (x0, y0), (x1, y1) = position[boundary["from"]], position[boundary["to"]]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=3,
                    arrowprops={"arrowstyle": "-|>", "color": _colour(boundary["kind"]), "lw": 2.5,
                                "shrinkA": 14, "shrinkB": 14, "connectionstyle": "arc3,rad=0.12"})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{format_size(boundary['bytes'])}\n{boundary['time'] * 1e3:.3g} ms",
                fontsize=7, ha="center", va="center", zorder=4,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    partition_of = {device: j for j, device in enumerate(placement.devices)}
    for name, (x, y) in position.items():
        used = name in partition_of
        ax.scatter([x], [y], s=900, zorder=5, color="gold" if used else "lightgrey", edgecolors="black")
        label = name.split(":")[-1] + (f"\nP{partition_of[name]}" if used else "")
        ax.text(x, y, label, ha="center", va="center", fontsize=7, zorder=6)
    for h, host in enumerate(by_host):
        if len(by_host) > 1:
            ax.text(h * 3.0, 1.35, host, ha="center", fontsize=10, fontweight="bold")
    handles = [Line2D([0], [0], color=_colour(k if k != "NV#" else "NV"), lw=3, label=k) for k in sorted(kinds_seen)]
    handles.append(Line2D([0], [0], marker="o", color="w", markerfacecolor="gold", markeredgecolor="black",
                          markersize=10, label="GPU running partition P#"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=8,
              title="link (width ∝ bandwidth; arrows: the placement's transfers)", title_fontsize=8, frameon=False)
    ax.set_title(
        f"{placement.instance_name} on {placement.topology_name}\n{placement.objective_name} "
        f"{placement.objective * 1e3:.3g} ms ({placement.status}); rank order "
        + (f"{placement.naive_ratio:.2f}× slower" if placement.naive_ratio else "does not fit"),
        fontsize=10,
        pad=28,
    )
    ax.set_aspect("equal")
    ax.axis("off")
    ax.margins(0.15)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
