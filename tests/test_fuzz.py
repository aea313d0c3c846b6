"""The differential fuzz (issue #15): random small instances across every option, solved by
every method that accepts them, each plan validated and held against an exhaustive oracle
written independently of the solver's memory code (tests/fuzz_cases.py). A few hundred
examples here; benchmarks/fuzz.py runs thousands (docs/results.md has the count)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_cases import check, describe, instances, problems
from layerfit.cli import main


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_every_method_agrees_with_the_oracle(problem):
    outcome = check(*problem)
    assert not outcome.failures, f"{outcome.failures}\n{describe(*problem)}"


@st.composite
def buffer_reuse_chains(draw):  # type: ignore[no-untyped-def]
    inst = draw(instances().filter(lambda i: i.edges is None and i.devices is None))
    return dataclasses.replace(inst, buffer_reuse=True, model=None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inst=buffer_reuse_chains(), warm_start=st.sampled_from(["dp", "greedy", "none"]),
       backend=st.sampled_from(["cbc", "highs"]))
def test_layerfit_solve_mip_agrees_with_dp_on_buffer_reuse(inst, warm_start, backend, tmp_path_factory):
    path = tmp_path_factory.mktemp("reuse") / "instance.json"
    path.write_text(json.dumps(inst.to_dict()), encoding="utf-8")
    answers = []
    for argv in (["--method", "dp"], ["--method", "mip", "--backend", backend, "--warm-start", warm_start]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["solve", str(path), "--json", *argv])
        plan = json.loads(out.getvalue())
        assert "contradicted" not in (plan.get("backend_status") or ""), plan["backend_status"]  # the backend's own
        answers.append((code, plan["status"], plan["objective"], plan["secondary_objective"]))
    assert answers[0] == answers[1], describe(inst, "min_partitions", None, warm_start)
