"""CP-SAT and MIP beyond the additive chain (GPipe/1F1B stages, ordered device pools, buffer
reuse, recomputation, tied weights, pins, layer counts, cut rules): against the exhaustive
oracle, every warm start."""

from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, Layer, Status, solve, validate_plan
from layerfit.model.instance import Constraints, TiedGroup

from helpers import MODEL_METHODS, stage_oracle


@st.composite
def staged(draw):
    n = draw(st.integers(1, 7))
    layers = [Layer(f"l{i}", params=draw(st.integers(1, 4)), activation_bytes=draw(st.integers(0, 6)),
                    buffer_bytes=draw(st.integers(0, 4)), output_bytes=draw(st.one_of(st.none(), st.integers(0, 5))))
              for i in range(n)]
    tied = ()
    if n >= 2 and draw(st.booleans()):
        mode = draw(st.sampled_from(["replicate", "together"]))
        last = n - 1 if mode == "replicate" else draw(st.integers(1, n - 1))
        tied = (TiedGroup(("l0", f"l{last}"), min(layers[0].params, layers[last].params), mode),)
    names = [layer.name for layer in layers]
    cuts = draw(st.lists(st.sampled_from(names[:-1]), max_size=2, unique=True)) if n > 1 else []
    split = draw(st.integers(0, len(cuts)))
    pins = draw(st.dictionaries(st.sampled_from(names), st.integers(-2, 2), max_size=2))
    limits = draw(st.sampled_from([(None, None), (3, None), (None, 2)]))
    if tied and tied[0].mode == "together":
        cuts = []  # a must-cut inside a group kept together is an input error
    schedule = draw(st.sampled_from([("none", 1), ("gpipe", 2), ("1f1b", 3), ("1f1b", 5)]))
    pool = draw(st.one_of(st.none(), st.lists(st.integers(15, 70), min_size=1, max_size=n)))
    reserve = draw(st.integers(0, 4))
    return Instance(name="s", capacity=draw(st.integers(20, 90)), layers=layers, dtype="fp32", schedule=schedule[0],
                    micro_batches=schedule[1], constraints=Constraints(
                        tuple(pins.items()), limits[0], limits[1], tuple(cuts[:split]), tuple(cuts[split:]), reserve, tied),
                    buffer_reuse=draw(st.booleans()), activation_recompute=draw(st.booleans()),
                    devices=None if pool is None else tuple(Device(f"d{i}", c) for i, c in enumerate(pool)))


@settings(max_examples=250, deadline=None)
@given(inst=staged(), which=st.sampled_from(MODEL_METHODS), warm=st.sampled_from(["dp", "greedy", "none"]))
def test_models_match_the_oracle(inst, which, warm):
    method, options = which
    plan = solve(inst, method, warm_start=warm, **options)
    validate_plan(inst, plan)
    expected = stage_oracle(inst)
    if expected["lexicographic"] is None:
        assert plan.status is Status.INFEASIBLE and plan.explanation
        return
    assert plan.status is Status.OPTIMAL
    assert (plan.objective, plan.secondary_objective) == expected["lexicographic"]
    k = max(expected["bottleneck"])
    bottleneck = solve(inst, method, objective="min_bottleneck", num_partitions=k, warm_start=warm, **options)
    validate_plan(inst, bottleneck)
    assert bottleneck.objective == expected["bottleneck"][k]
