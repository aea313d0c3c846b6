"""The objective ``max_kv_tokens`` (issue 16): the most tokens of KV cache a k-stage pipeline
serves, every stage within its memory — against an exhaustive oracle written here from the
issue's definition (not from layerfit.model.memory's KV helpers), on chains (pins, layer counts,
buffer reuse, reserve, gpu_memory_utilization), ordered pools and free pools (DP and CP-SAT);
its refusals, infeasible cases, the plan's JSON round trip, the CLI, and monotonicity."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from fractions import Fraction
from itertools import combinations, permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, InstanceError, Layer, OptionError, Plan, Status, solve, validate_plan
from layerfit.cli import main
from layerfit.model.instance import Constraints

from helpers import ROOT, satisfies

UTILIZATIONS = [None, 0.5, 0.75, 0.9, 0.95, 1.0]


# -- the oracle: the definition, by exhaustive search ------------------------


def per_token_bytes(instance: Instance) -> list[int]:
    """e_i: the bytes one token of layer i's cache takes (kv_cache_bytes / kv_tokens)."""
    return [layer.kv_cache_bytes // instance.kv_tokens for layer in instance.layers]


def within(instance: Instance, capacity: int) -> int:
    """⌊capacity · u⌋ less the reserve (u as the exact value of its float)."""
    u = instance.constraints.gpu_memory_utilization
    held = capacity if u is None else math.floor(Fraction(capacity) * Fraction(u))
    return held - instance.constraints.reserve


def device_limit(instance: Instance, capacity: int) -> int:
    """What a stage on a device of ``capacity`` bytes may hold: within the instance's capacity too."""
    return min(within(instance, instance.capacity), within(instance, capacity))


def other_bytes(instance: Instance, part: list[int]) -> int:
    """A stage's bytes other than its KV cache: weights, activations, and buffers (their sum, or
    the largest with buffer reuse). The test instances have no schedule and no training."""
    layers = [instance.layers[i] for i in part]
    buffers = [layer.buffer_bytes for layer in layers]
    return (sum(layer.weight_bytes for layer in layers) + sum(layer.activation_bytes for layer in layers)
            + (max(buffers) if instance.buffer_reuse else sum(buffers)))


def stage_tokens(others: int, per_token: int, capacity: int) -> float:
    """The tokens one stage holds: ⌊(C − others) / per_token⌋; a stage without cache that fits
    limits nothing (inf), one that does not fit is -inf."""
    if per_token == 0:
        return math.inf if others <= capacity else -math.inf
    return (capacity - others) // per_token


def served(instance: Instance, parts: list[list[int]], capacities: list[int]) -> float:
    """T of a plan whose stage j may hold capacities[j]: the least any stage holds."""
    e = per_token_bytes(instance)
    return min(stage_tokens(other_bytes(instance, p), sum(e[i] for i in p), c) for p, c in zip(parts, capacities))


def plans_of(n: int, k: int):
    """Every cut of n layers into k contiguous non-empty runs."""
    for cuts in combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        yield [list(range(bounds[j], bounds[j + 1])) for j in range(k)]


def placements(instance: Instance, k: int):
    """The capacities of the k stages (and their devices): one choice on a chain or an ordered pool,
    every ordered choice of k distinct devices on a free pool."""
    if instance.devices is None:
        yield [within(instance, instance.capacity)] * k, None
    elif not instance.free_pool:
        if k <= len(instance.devices):
            yield [device_limit(instance, d.capacity) for d in instance.devices[:k]], None
    else:
        for chosen in permutations(instance.devices, k):
            yield [device_limit(instance, d.capacity) for d in chosen], [d.name for d in chosen]


def oracle(instance: Instance, k: int) -> int | None:
    """The most tokens any valid k-stage plan serves, None when no plan serves one."""
    best = 0
    for parts in plans_of(instance.num_layers, k):
        if not satisfies(instance, parts):
            continue
        for capacities, _ in placements(instance, k):
            best = max(best, served(instance, parts, capacities))
    assert best != math.inf  # every plan holds some cache: the strategies give a layer one
    return int(best) if best >= 1 else None


def plan_capacities(instance: Instance, plan: Plan) -> list[int]:
    """The capacity of each of a plan's stages, by the oracle's rules."""
    if plan.devices is not None:
        by_name = {d.name: d.capacity for d in instance.devices}
        return [device_limit(instance, by_name[name]) for name in plan.devices]
    return next(placements(instance, plan.num_partitions))[0]


def check_plan(instance: Instance, plan: Plan, k: int, expected: int | None) -> None:
    """The plan is valid and optimal (the oracle's T), and its metrics say what it serves."""
    validate_plan(instance, plan)
    assert "contradicted" not in (plan.backend_status or "")
    if expected is None:
        assert plan.status is Status.INFEASIBLE and plan.explanation, plan
        return
    assert plan.status is Status.OPTIMAL, (plan.status, plan.explanation)
    assert plan.num_partitions == k
    assert plan.objective == expected and plan.bound == expected and plan.gap == 0.0
    # the plan itself serves T, by the oracle's own arithmetic, and keeps every rule
    assert satisfies(instance, plan.partitions)
    assert served(instance, plan.partitions, plan_capacities(instance, plan)) == expected
    tokens = plan.metrics["kv_tokens"]
    e = per_token_bytes(instance)
    assert tokens["tokens"] == plan.objective
    assert tokens["bytes_per_token"] == sum(e)
    rows = plan.metrics["partitions"]
    assert rows[tokens["binding_stage"]]["kv_tokens"] == plan.objective
    for row, part in zip(rows, plan.partitions):
        assert row["kv_tokens"] is None or row["kv_tokens"] >= plan.objective
        assert row["kv_cache_bytes"] == sum(e[i] for i in part) * plan.objective
    if plan.devices is not None:
        assert [row["device"] for row in rows] == plan.devices


# -- random instances ------------------------------------------------------------------


@st.composite
def kv_layers(draw, n: int, kv_tokens: int, heaviest: int = 30) -> list[Layer]:
    """n layers with weights, activations, buffers and a KV cache of e_i bytes a token (at least one e_i > 0)."""
    per_token = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    if not any(per_token):
        per_token[draw(st.integers(0, n - 1))] = draw(st.integers(1, 4))
    return [Layer(f"l{i}", weight_bytes=draw(st.integers(0, heaviest)), activation_bytes=draw(st.integers(0, 6)),
                  buffer_bytes=draw(st.integers(0, 6)), kv_cache_bytes=e * kv_tokens)
            for i, e in enumerate(per_token)]


@st.composite
def memory_options(draw) -> dict:
    return {"reserve": draw(st.integers(0, 5)), "gpu_memory_utilization": draw(st.sampled_from(UTILIZATIONS)),
            "buffer_reuse": draw(st.sampled_from([False, True]))}


@st.composite
def chains(draw, pins: bool = True) -> tuple[Instance, int]:
    """A chain and k, with (optionally) pins and layer counts; its capacity around what k stages
    need, so that most draws serve some tokens and some serve none."""
    k = draw(st.integers(1, 5))
    n = draw(st.integers(k, 7))
    kv_tokens = draw(st.sampled_from([1, 2, 3, 7]))
    layers = draw(kv_layers(n, kv_tokens))
    options = draw(memory_options())
    names = [layer.name for layer in layers]
    pinned: dict[str, int] = {}
    limits = (None, None)
    if pins:
        style = draw(st.sampled_from(["ends", "random", "none"]))
        if style == "ends":  # vLLM's rule: the embedding first, the norm and head last
            pinned = {names[0]: 0, names[-1]: -1}
        elif style == "random":
            pinned = draw(st.dictionaries(st.sampled_from(names), st.integers(-k, k - 1), max_size=2))
        limits = draw(st.sampled_from([(None, None), (3, None), (None, 2), (4, 2), (2, 1)]))
    constraints = Constraints(tuple(pinned.items()), limits[0], limits[1], reserve=options["reserve"],
                              gpu_memory_utilization=options["gpu_memory_utilization"])
    total = sum(layer.weight_bytes + layer.activation_bytes + layer.buffer_bytes + layer.kv_cache_bytes
                for layer in layers)
    usable = draw(st.integers(max(10, total // (2 * k)), total + 40)) + options["reserve"]
    u = options["gpu_memory_utilization"]
    capacity = usable if u is None else math.ceil(usable / u)
    instance = Instance(name="kv", capacity=capacity, layers=layers, kv_tokens=kv_tokens,
                        buffer_reuse=options["buffer_reuse"], constraints=constraints)
    return instance, k


@st.composite
def pools(draw, order: str, pins: bool = False) -> tuple[Instance, int]:
    """An ordered or free pool of devices of different capacities, and k ≤ the devices."""
    k = draw(st.integers(1, 4))
    n = draw(st.integers(k, 6))
    caps = draw(st.lists(st.sampled_from([20, 35, 50, 80, 120]), min_size=max(2, k), max_size=4))
    kv_tokens = draw(st.sampled_from([1, 2, 5]))
    layers = draw(kv_layers(n, kv_tokens, heaviest=20))
    options = draw(memory_options())
    pinned = {}
    if pins:
        names = [layer.name for layer in layers]
        pinned = draw(st.one_of(st.just({names[0]: 0, names[-1]: -1}),
                                st.dictionaries(st.sampled_from(names), st.integers(-k, k - 1), max_size=2)))
    capacity = draw(st.one_of(st.none(), st.integers(40, 150)))
    return Instance(name="pool", capacity=capacity, layers=layers, kv_tokens=kv_tokens, device_order=order,
                    devices=tuple(Device(f"d{i}", c) for i, c in enumerate(caps)),
                    buffer_reuse=options["buffer_reuse"],
                    constraints=Constraints(tuple(pinned.items()), reserve=options["reserve"],
                                            gpu_memory_utilization=options["gpu_memory_utilization"])), k


def solve_kv(instance: Instance, k: int, method: str = "dp", **options) -> Plan:
    return solve(instance, method, objective="max_kv_tokens", num_partitions=k, **options)


# -- 1. the optimum equals exhaustive search ------------------------------------------


@settings(max_examples=150)
@given(case=chains(pins=False))
def test_chain_matches_the_oracle(case):
    instance, k = case
    check_plan(instance, solve_kv(instance, k), k, oracle(instance, k))


@settings(max_examples=200)
@given(case=chains(pins=True))
def test_chain_with_pins_and_layer_counts_matches_the_oracle(case):
    instance, k = case
    check_plan(instance, solve_kv(instance, k), k, oracle(instance, k))


@settings(max_examples=100)
@given(case=pools("ordered"))
def test_ordered_pool_matches_the_oracle(case):
    instance, k = case
    check_plan(instance, solve_kv(instance, k), k, oracle(instance, k))


@settings(max_examples=80)
@given(case=pools("ordered", pins=True))
def test_ordered_pool_with_pins_matches_the_oracle(case):
    instance, k = case
    check_plan(instance, solve_kv(instance, k), k, oracle(instance, k))


@settings(max_examples=80)
@given(case=pools("free"))
def test_free_pool_dp_matches_the_oracle(case):
    instance, k = case
    check_plan(instance, solve_kv(instance, k), k, oracle(instance, k))


@settings(max_examples=40)
@given(case=pools("free"), warm=st.sampled_from([None, "none"]))
def test_free_pool_cpsat_matches_the_oracle(case, warm):
    """CP-SAT finds the optimum itself (warm_start "none") and from the DP's hint (the default),
    and neither answer is one the DP had to overrule."""
    instance, k = case
    plan = solve_kv(instance, k, "cpsat", warm_start=warm)
    assert plan.method == "cpsat"
    check_plan(instance, plan, k, oracle(instance, k))


def test_vllms_rule_pins_keep_the_embedding_first_and_the_head_last():
    """vLLM's 8×L4 lesson in small: the stage holding the head (a large vocabulary) gets fewer
    blocks than the even split, and serves more tokens; the pins keep the embedding on the first
    rank and the head on the last."""
    names = ["embed", *(f"block{i}" for i in range(8)), "head"]
    weights = {"embed": 10, "head": 40}
    layers = [Layer(name, weight_bytes=weights.get(name, 10), kv_cache_bytes=0 if name in weights else 3)
              for name in names]
    pinned = Constraints((("embed", 0), ("head", -1)))
    instance = Instance(name="serve", capacity=110, layers=layers, kv_tokens=3, constraints=pinned)
    plan = solve_kv(instance, 2)
    check_plan(instance, plan, 2, oracle(instance, 2))
    assert plan.partitions == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]] and plan.objective == 10
    even = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # vLLM's default: four blocks a rank
    assert served(instance, even, [110, 110]) == 7


# -- 2. refusals, word for word -------------------------------------------------------


def cached(**fields) -> Instance:
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=6) for i in range(4)]
    return Instance(name="kv", capacity=60, layers=layers, **{"kv_tokens": 3, **fields})


@pytest.mark.parametrize(
    "instance, method, message",
    [
        (cached(kv_tokens=None), "dp",
         r"^objective: 'max_kv_tokens' needs the instance's kv_tokens, the tokens its layers' kv_cache_bytes hold "
         r"\(from_hf_config sets it: batch × sequence\)$"),
        (Instance(name="kv", capacity=60, layers=[Layer(f"l{i}", weight_bytes=10) for i in range(4)], kv_tokens=3),
         "dp", r"^objective: 'max_kv_tokens' needs a KV cache: no layer has kv_cache_bytes$"),
        (cached(), "greedy", r"^method: 'greedy' \(the seed algorithm\) chooses its own count; use objective "
                             r"'min_partitions'$"),
        (cached(), "mip", r"^objective: 'max_kv_tokens' is planned by methods 'dp' and 'cpsat' \(exact\) in this "
                          r"version, not 'mip'$"),
        (cached(), "cpsat", r"^objective: 'max_kv_tokens' on a chain or an ordered pool is planned by method 'dp' "
                            r"\(exact\); 'cpsat' plans it on free device pools$"),
        (cached(devices=(Device("a", 60), Device("b", 60))), "cpsat",
         r"^objective: 'max_kv_tokens' on a chain or an ordered pool is planned by method 'dp' \(exact\); 'cpsat' "
         r"plans it on free device pools$"),
        *[(cached(edges=(("l0", "l1"), ("l1", "l2"), ("l2", "l3"))), method,
           r"^objective: 'max_kv_tokens' is not planned on a DAG instance in this version$")
          for method in ("auto", "dp", "cpsat")],
    ],
    ids=["no-kv-tokens", "no-kv-cache", "greedy", "mip", "cpsat-chain", "cpsat-ordered-pool", "dag", "dag-dp",
         "dag-cpsat"],
)
def test_refusals(instance, method, message):
    with pytest.raises(OptionError, match=message):
        solve_kv(instance, 2, method)


@pytest.mark.parametrize("value, shown", [(0, "0"), ("x", "'x'"), (-1, "-1"), (1.5, "1.5"), (True, "True")])
def test_kv_tokens_must_be_a_whole_number(value, shown):
    message = (r"^kv_tokens: must be a whole number ≥ 1 \(the tokens the layers' kv_cache_bytes hold\), got "
               + shown + "$")
    with pytest.raises(InstanceError, match=message):
        cached(kv_tokens=value)
    raw = cached().to_dict()
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict({**raw, "kv_tokens": value})


def test_kv_cache_bytes_must_be_a_multiple_of_kv_tokens():
    message = (r"^layers\[1\]\.kv_cache_bytes: 10 B is not a whole number of bytes a token for kv_tokens 3 "
               r"\(a KV cache holds whole bytes per token\)$")
    layers = [Layer("l0", weight_bytes=1, kv_cache_bytes=9), Layer("l1", weight_bytes=1, kv_cache_bytes=10)]
    with pytest.raises(InstanceError, match=message):
        Instance(name="kv", capacity=60, layers=layers, kv_tokens=3)


@pytest.mark.parametrize("value, shown", [(0, "0"), (1.5, "1.5"), ("x", "'x'"), (-0.5, "-0.5"), (True, "True")])
def test_gpu_memory_utilization_is_a_fraction(value, shown):
    message = r"^constraints\.gpu_memory_utilization: must be a fraction in \(0, 1\], got " + shown + "$"
    with pytest.raises(InstanceError, match=message):
        Constraints(gpu_memory_utilization=value)
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict({**cached().to_dict(), "constraints": {"gpu_memory_utilization": value}})


def test_gpu_memory_utilization_that_leaves_nothing_is_refused():
    with pytest.raises(InstanceError, match=r"^constraints\.gpu_memory_utilization: 0\.1 of the capacity \(60 B\) "
                                            r"leaves nothing beside the reserve \(6 B\)$"):
        cached(constraints=Constraints(reserve=6, gpu_memory_utilization=0.1))


# -- 3. infeasible: no room for the weights, or none for one token ---------------------


@pytest.mark.parametrize("free", [False, True])
def test_stages_that_cannot_hold_the_weights_are_infeasible(free):
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=2) for i in range(6)]
    pool = {"devices": (Device("a", 25), Device("b", 25), Device("c", 25)), "device_order": "free"} if free else {}
    instance = Instance(name="kv", capacity=25, layers=layers, kv_tokens=1, **pool)
    assert oracle(instance, 2) is None
    methods = [("dp", {}), ("cpsat", {}), ("cpsat", {"warm_start": "none"})] if free else [("dp", {})]
    for method, options in methods:
        plan = solve_kv(instance, 2, method, **options)
        check_plan(instance, plan, 2, None)
        first = plan.explanation.splitlines()[0]
        where = "of the pool's devices " if free else ""
        assert first == f"2 stages {where}cannot hold the model even without KV cache" + (" in any order" if free else "")


@pytest.mark.parametrize("free", [False, True])
def test_weights_that_fit_but_leave_no_token_are_infeasible(free):
    # Each stage's weights fill its device: 0 tokens of cache, which an engine refuses.
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=4) for i in range(4)]
    pool = {"devices": (Device("a", 20), Device("b", 20)), "device_order": "free"} if free else {}
    instance = Instance(name="kv", capacity=20, layers=layers, kv_tokens=2, **pool)
    assert oracle(instance, 2) is None
    # a stage of two layers takes 4 bytes a token: 3 bytes more on each device buy nothing, 4 buy a token
    tight = dataclasses.replace(instance, capacity=23, devices=(Device("a", 23), Device("b", 23)) if free else None)
    assert oracle(tight, 2) is None
    roomy = dataclasses.replace(instance, capacity=24, devices=(Device("a", 24), Device("b", 24)) if free else None)
    assert oracle(roomy, 2) == 1
    methods = [("dp", {}), ("cpsat", {}), ("cpsat", {"warm_start": "none"})] if free else [("dp", {})]
    for method, options in methods:
        for case in (instance, tight):
            plan = solve_kv(case, 2, method, **options)
            check_plan(case, plan, 2, None)
            assert plan.explanation.splitlines()[0] == ("2 stages hold the model but not one token of KV cache: the "
                                                        "tightest stage has no room left")
        check_plan(roomy, solve_kv(roomy, 2, method, **options), 2, 1)


def test_a_layer_over_the_capacity_even_without_cache_is_infeasible():
    layers = [Layer("big", weight_bytes=70, kv_cache_bytes=2), Layer("small", weight_bytes=5, kv_cache_bytes=2)]
    instance = Instance(name="kv", capacity=60, layers=layers, kv_tokens=1)
    plan = solve_kv(instance, 2)
    check_plan(instance, plan, 2, None)
    assert "big" in plan.explanation


# -- 4. the plan as JSON, its gap and its bound ---------------------------------------


@pytest.mark.parametrize("free", [False, True])
def test_plan_round_trips_through_json(free):
    layers = [Layer(f"l{i}", weight_bytes=10 + i, activation_bytes=1, kv_cache_bytes=3 * (i % 3)) for i in range(6)]
    pool = {"devices": (Device("a", 40), Device("b", 70), Device("c", 55)), "device_order": "free"} if free else {}
    instance = Instance(name="kv", capacity=70, layers=layers, kv_tokens=3, **pool,
                        constraints=Constraints(reserve=2, gpu_memory_utilization=0.9))
    plan = solve_kv(instance, 3)
    check_plan(instance, plan, 3, oracle(instance, 3))
    assert plan.gap == 0.0
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    validate_plan(instance, back)


def test_a_cpsat_plan_under_a_time_limit_keeps_an_upper_bound():
    """A pool of 16 kinds of devices (more mixes than the DP tracks): CP-SAT alone, under a tiny
    time limit. Whatever it returns, the bound is an upper bound on T and the status says so."""
    layers = [Layer(f"l{i}", weight_bytes=1000 + 37 * (i % 7), activation_bytes=11 * (i % 5),
                    kv_cache_bytes=4 * (1 + i % 3)) for i in range(48)]
    devices = tuple(Device(f"g{j}", 9000 + 613 * j) for j in range(16))
    instance = Instance(name="kv", layers=layers, kv_tokens=4, devices=devices, device_order="free")
    plan = solve_kv(instance, 8, "cpsat", time_limit=0.3, num_workers=2, warm_start="none")
    validate_plan(instance, plan)
    if plan.status.has_plan:
        assert plan.bound >= plan.objective >= 1
        assert (plan.status is Status.OPTIMAL) == (plan.bound == plan.objective)
        assert plan.gap == pytest.approx((plan.bound - plan.objective) / plan.objective)
        assert Plan.from_dict(plan.to_dict()) == plan
    else:
        assert plan.status is Status.UNKNOWN


# -- 5. the CLI -----------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("spelling", ["max_kv_tokens", "max-kv-tokens"])
def test_cli_solves_for_kv_tokens(capsys, tmp_path, spelling):
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=12) for i in range(4)]
    instance = Instance(name="kv", capacity=60, layers=layers, kv_tokens=3)
    path = tmp_path / "kv.json"
    path.write_text(json.dumps(instance.to_dict()))
    expected = oracle(instance, 2)
    assert expected == 5
    code, out, err = run(capsys, "solve", str(path), "--objective", spelling, "--num-partitions", "2")
    assert code == 0 and err == ""
    assert f"KV cache for {expected} tokens" in out
    header = next(line for line in out.splitlines() if line.startswith("#"))
    assert "KV tokens" in header and "KV cache" in header
    code, out, err = run(capsys, "solve", str(path), "--objective", spelling, "--num-partitions", "2", "--json")
    assert code == 0
    plan = Plan.from_dict(json.loads(out))
    validate_plan(instance, plan)
    assert plan.objective == expected and plan.objective_name == "max_kv_tokens"


def test_cli_as_a_module_prints_json(tmp_path):
    # layerfit has no __main__: the module is layerfit.cli (the console script is `layerfit`)
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=12) for i in range(4)]
    path = tmp_path / "kv.json"
    path.write_text(json.dumps(Instance(name="kv", capacity=60, layers=layers, kv_tokens=3).to_dict()))
    out = subprocess.run([sys.executable, "-m", "layerfit.cli", "solve", str(path), "--objective", "max-kv-tokens",
                          "--num-partitions", "2", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["objective"] == 5 and plan["metrics"]["kv_tokens"]["tokens"] == 5


def test_cli_infeasible_kv_tokens_exits_1(capsys, tmp_path):
    layers = [Layer(f"l{i}", weight_bytes=10, kv_cache_bytes=4) for i in range(4)]
    path = tmp_path / "kv.json"
    path.write_text(json.dumps(Instance(name="kv", capacity=20, layers=layers, kv_tokens=2).to_dict()))
    code, out, _ = run(capsys, "solve", str(path), "--objective", "max_kv_tokens", "--num-partitions", "2")
    assert code == 1 and "not one token of KV cache" in " ".join(out.split())


# -- 6. monotone: more memory never serves fewer tokens --------------------------------


def optimum(instance: Instance, k: int) -> int:
    plan = solve_kv(instance, k)
    validate_plan(instance, plan)
    return plan.objective if plan.status.has_plan else 0


@settings(max_examples=80)
@given(case=st.one_of(pools("ordered"), pools("free")), data=st.data())
def test_more_device_memory_never_lowers_the_optimum(case, data):
    instance, k = case
    j = data.draw(st.integers(0, len(instance.devices) - 1))
    devices = list(instance.devices)
    devices[j] = Device(devices[j].name, devices[j].capacity + data.draw(st.integers(1, 60)))
    bigger = dataclasses.replace(instance, devices=tuple(devices),
                                 capacity=None if instance.capacity_from_devices else instance.capacity)
    before, after = optimum(instance, k), optimum(bigger, k)
    assert after >= before
    assert before == (oracle(instance, k) or 0) and after == (oracle(bigger, k) or 0)


@settings(max_examples=80)
@given(case=st.one_of(chains(), pools("ordered"), pools("free")), data=st.data())
def test_more_gpu_memory_utilization_never_lowers_the_optimum(case, data):
    instance, k = case
    u = instance.constraints.gpu_memory_utilization
    higher = data.draw(st.sampled_from([v for v in UTILIZATIONS if v is None or u is None or v >= u]
                                       if u is not None else [None, 1.0]))
    raised = dataclasses.replace(instance, constraints=dataclasses.replace(instance.constraints,
                                                                           gpu_memory_utilization=higher))
    assert optimum(raised, k) >= optimum(instance, k)
