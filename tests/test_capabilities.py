"""The capability table (layerfit.methods.capabilities) is what solve() does: every method it
says refuses an option is refused with the table's message, every method it says honours the
option plans it, and the docs' table is generated from it."""

import re

import pytest

from layerfit import Device, Instance, OptionError, load_topology, solve
from layerfit.methods.capabilities import CAPABILITIES, METHOD_COLUMNS, capability_table

from helpers import ROOT


def chain(**options):
    raw = {"name": "c", "capacity": 100, "layers": [{"name": f"l{i}", "weight_bytes": 10 + i} for i in range(4)]}
    raw.update(options)
    return Instance.from_dict(raw)


FREE = [{"name": f"g{i}", "capacity": 100} for i in range(3)]

# Per option: a call that asks for it (an instance and solve's keyword arguments), and the
# fields its refusal names.
ASKS = {
    "structural": (lambda: chain(constraints={"pinned": {"l0": 0}}), {}, {}),
    "free_pool_buffer_reuse": (lambda: chain(devices=FREE, device_order="free", buffer_reuse=True), {},
                               {"option": "buffer_reuse"}),
    "free_pool_rules": (lambda: chain(devices=FREE, device_order="free", activation_recompute=True), {},
                        {"option": "activation_recompute"}),
    "kv_tokens": (lambda: chain(devices=FREE, device_order="free", kv_tokens=2, layers=[
        {"name": f"l{i}", "weight_bytes": 10 + i, "kv_cache_bytes": 8} for i in range(4)]),
        {"objective": "max_kv_tokens", "num_partitions": 2}, {}),
    "fixed_count": (lambda: chain(), {"objective": "min_bottleneck", "num_partitions": 2}, {}),
    "stage_objectives": (lambda: chain(devices=FREE), {"objective": "min_utilization", "num_partitions": 2},
                         {"objective": "min_utilization"}),
    "edges": (lambda: chain(edges=[["l0", "l1"], ["l1", "l2"], ["l2", "l3"], ["l0", "l3"]]), {}, {}),
    "topology": (lambda: chain(), {"topology": load_topology("dgx-h100")}, {}),
    "num_workers": (lambda: chain(), {"num_workers": 2}, {}),
    "backend": (lambda: chain(), {"backend": "highs"}, {}),
    "warm_start": (lambda: chain(), {"warm_start": "none"}, {}),
}


def test_every_refusing_row_has_a_call_that_asks_for_it():
    refusing = {key for key, row in CAPABILITIES.items() if set(METHOD_COLUMNS) - set(row.cells)}
    assert refusing == set(ASKS)


@pytest.mark.parametrize("method", METHOD_COLUMNS)
@pytest.mark.parametrize("key", sorted(ASKS))
def test_solve_refuses_exactly_what_the_table_says(key, method):
    make, kwargs, fields = ASKS[key]
    row = CAPABILITIES[key]
    if key in ("stage_objectives", "kv_tokens") and method not in CAPABILITIES["fixed_count"].cells:
        row, fields = CAPABILITIES["fixed_count"], {}  # the call also asks for k partitions, checked first
    if method in row.cells:
        plan = solve(make(), method, **kwargs)
        assert plan.status.value in ("optimal", "feasible")
    else:
        message = row.refusal.format(method=method, **fields)
        with pytest.raises(OptionError, match="^" + re.escape(message) + "$"):
            solve(make(), method, **kwargs)


@pytest.mark.parametrize("key", sorted(k for k, row in CAPABILITIES.items() if row.by_auto))
def test_auto_honours_every_option_of_the_instance_and_objective(key):
    if key in ASKS:
        make, kwargs, _ = ASKS[key]
        assert solve(make(), **kwargs).status.value == "optimal"


def test_the_docs_table_is_generated_from_it():
    table = capability_table()
    lines = table.splitlines()
    assert lines[0] == "| option | greedy | dp | cpsat | mip |"
    assert len(lines) == 2 + len(CAPABILITIES)
    for line, row in zip(lines[2:], CAPABILITIES.values()):
        assert line.startswith(f"| {row.option} |")
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        assert cells == [row.cells.get(m, "—") for m in METHOD_COLUMNS]
    methods_page = (ROOT / "docs" / "methods.md").read_text()
    assert "<!-- capabilities -->" in methods_page and "| option | greedy |" not in methods_page  # never by hand


def test_a_free_pool_too_big_for_the_dp_goes_to_cpsat_under_auto():
    from layerfit.methods.pools import MAX_MIXES, mixes

    pool = tuple(Device(f"g{i}-{j}", 100 + 10 * i) for i in range(6) for j in range(12))
    inst = Instance(name="big", capacity=200, layers=chain().layers, devices=pool, device_order="free")
    assert mixes(inst) > MAX_MIXES
    assert solve(inst).method == "cpsat"


@pytest.mark.parametrize("method", ["greedy", "dp"])
def test_search_options_a_method_does_not_use_are_accepted_and_change_nothing(method):
    for key in ("time_limit", "seed"):
        assert CAPABILITIES[key].cells[method] == "accepted, unused"
    plain = solve(chain(), method)
    searched = solve(chain(), method, time_limit=0.5, seed=7)
    assert (searched.partitions, searched.objective, searched.bound) == (plain.partitions, plain.objective, plain.bound)
