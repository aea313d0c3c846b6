"""Which method honours which option: one table, from which ``solve()``'s refusals and the
docs' table are both made (never kept by hand).

A method that cannot honour an option refuses it, naming the option, rather than plan
without it. ``"auto"`` honours every option of the instance and the objective (it picks a
method that does); the options of one method (``num_workers``, ``backend``, ``warm_start``)
name that method.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError

__all__ = ["CAPABILITIES", "Capability", "capability_table", "honours", "refuse_unless"]

METHOD_COLUMNS = ("greedy", "dp", "cpsat", "mip")


@dataclass(frozen=True)
class Capability:
    """One option: what each method does with it, and the refusal of the methods that cannot."""

    option: str  # how the docs name it
    cells: dict[str, str]  # method → what it does ("exact", "✓ …"); a method not here refuses
    refusal: str = ""  # the error, formatted with the method (and the option, where one row covers several)
    by_auto: bool = True  # an option of the instance or objective, which "auto" picks a method for

    def honoured_by(self, method: str) -> bool:
        return method in self.cells or (method == "auto" and self.by_auto)


_EXACT = {"dp": "exact", "cpsat": "exact", "mip": "exact"}

# A search option that a method has no use for (it finishes in polynomial time, or uses no
# randomness) is accepted and changes nothing; the table says so rather than refuse it.
_UNUSED = "accepted, unused"

CAPABILITIES: dict[str, Capability] = {
    "min_partitions": Capability(
        "objective `min_partitions` (the default: fewest partitions, then the smallest largest)",
        {"greedy": "✓ (fewest; not balanced)", **_EXACT}),
    "chain": Capability(
        "the methodology's chain, training state, KV cache, reserve", {"greedy": "✓", **_EXACT}),
    "stage_memory": Capability(
        "schedules (GPipe/1F1B), buffer reuse, recomputation, tied weights (replicate)",
        {"greedy": "✓ (plans for the worst stage)", **_EXACT}),
    "structural": Capability(
        "pins, layer counts, cut rules, tied groups kept together", dict(_EXACT),
        "constraints: pinned layers, layer counts, cut rules and tied groups kept together are honoured by the exact "
        "methods ('dp', 'cpsat', 'mip'), not by the seed's greedy"),
    "ordered_pool": Capability("ordered device pools", {"greedy": "✓ (in order)", **_EXACT}),
    "free_pool": Capability(
        "free device pools (the planner picks the devices)",
        {"greedy": "✓ (listed order)", "dp": "exact (≤ 20,000 mixes)", "cpsat": "exact (additive memory, schedules)",
         "mip": "exact (the same)"}),
    "free_pool_buffer_reuse": Capability(
        "buffer reuse on a free device pool", {"greedy": "✓", "dp": "exact", "cpsat": "exact"},
        "{option}: on a free device pool planned by methods 'dp' and 'cpsat' (exact), not {method!r}"),
    "free_pool_rules": Capability(
        "recomputation, tied weights on a free device pool", {"greedy": "✓", "dp": "exact"},
        "{option}: on a free device pool planned by method 'dp' (exact), not {method!r}"),
    "fixed_count": Capability(
        "a given number of partitions (`num_partitions`, objective `min_bottleneck`)", dict(_EXACT),
        "method: 'greedy' (the seed algorithm) chooses its own count; use objective 'min_partitions'"),
    "stage_objectives": Capability(
        "objectives `min_stage_time`, `min_utilization` (chains, ordered and free pools)", {"dp": "exact"},
        "objective: {objective!r} is planned by method 'dp' (exact) in this version, not {method!r}"),
    "kv_tokens": Capability(
        "objective `max_kv_tokens` (the most KV-cache tokens over `num_partitions` stages)",
        {"dp": "exact (chains, ordered pools, free pools ≤ 20,000 mixes)", "cpsat": "exact (free pools)"},
        "objective: 'max_kv_tokens' is planned by methods 'dp' and 'cpsat' (exact) in this version, not {method!r}"),
    "edges": Capability(
        "DAGs (`edges`), with or without a schedule; pins, layer counts, reserve",
        {"greedy": "✓ (topological order; the worst stage; no pins or counts)", "cpsat": "exact", "mip": "exact"},
        "edges: DAG instances are planned by methods 'cpsat' and 'mip' (exact) and 'greedy' in this version, "
        "not 'dp'"),
    "topology": Capability(
        "partitions and GPUs chosen together (`topology=`)", {"cpsat": "exact"},
        "topology: joint partitioning and placement is a CP-SAT model; use method 'auto' or 'cpsat', not {method!r}"),
    "time_limit": Capability(
        "`time_limit` (the best plan so far, with its bound)",
        {"greedy": _UNUSED, "dp": _UNUSED, "cpsat": "✓", "mip": "✓"}),
    "seed": Capability(
        "`seed` (the search's random seed; recorded in the plan)",
        {"greedy": _UNUSED, "dp": _UNUSED, "cpsat": "✓", "mip": "✓ (CBC's and HiGHS's seed)"}),
    "num_workers": Capability("`num_workers`", {"cpsat": "✓"},
                              "num_workers: an option of method 'cpsat', not of method {method!r}", by_auto=False),
    "backend": Capability("`backend` (`cbc`, `highs`)", {"mip": "✓"},
                          "backend: an option of method 'mip', not of method {method!r}", by_auto=False),
    "warm_start": Capability("`warm_start` (`dp`, `greedy`, `none`)", {"cpsat": "✓", "mip": "✓"},
                             "warm_start: an option of methods 'cpsat' and 'mip', not of method {method!r}",
                             by_auto=False),
}


def honours(method: str, key: str) -> bool:
    """Whether ``method`` honours the option ``key`` (a key of :data:`CAPABILITIES`)."""
    return CAPABILITIES[key].honoured_by(method)


def refuse_unless(method: str, key: str, **fields: object) -> None:
    """Raise the refusal of option ``key`` unless ``method`` honours it."""
    row = CAPABILITIES[key]
    if not row.honoured_by(method):
        raise OptionError(row.refusal.format(method=method, **fields))


def capability_table() -> str:
    """The table as Markdown: one row per option, one column per method ("—": refused at ``solve``)."""
    lines = ["| option | " + " | ".join(METHOD_COLUMNS) + " |", "|---" * (len(METHOD_COLUMNS) + 1) + "|"]
    for row in CAPABILITIES.values():
        lines.append(f"| {row.option} | " + " | ".join(row.cells.get(m, "—") for m in METHOD_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
