"""max_kv_tokens on the bundled serving instances, beside every other plan people run, and
through `layerfit plan --objective max-kv-tokens --to vllm` as vLLM reads its partition."""

import dataclasses
import json

import pytest

from layerfit import load_instance, solve
from layerfit.cli import main
from layerfit.interop.baselines import VLLM_RULES, vllm_partitions
from layerfit.interop.export import BLOCK_NAME, stage_layer_counts
from layerfit.model.instance import Constraints
from layerfit.model.memory import plan_kv_tokens
from layerfit.report.validation import validate_plan

from helpers import INSTANCES

SERVING = sorted(path for path in INSTANCES.glob("*.json") if "kv_tokens" in json.loads(path.read_text()))


def served(instance, partitions):
    """Tokens a plan serves; 0 when a stage does not even hold its weights."""
    tokens, _ = plan_kv_tokens(instance, partitions)
    return max(tokens, 0)


def test_the_serving_instances_are_bundled():
    assert [p.stem for p in SERVING] == ["llama-3-70b-fp8-serving-8xl4", "llama-3.1-405b-serving-16xh100",
                                         "llama-3.1-70b-serving-mixed-pool", "qwen2.5-72b-serving-4xh100"]


@pytest.mark.parametrize("path", SERVING, ids=lambda p: p.stem)
def test_max_kv_tokens_is_never_below_any_other_plan(path):
    inst = load_instance(path)
    k = len(inst.devices)
    best = solve(inst, objective="max_kv_tokens", num_partitions=k)
    assert best.status.value == "optimal"
    validate_plan(inst, best)
    names = [layer.name for layer in inst.layers]
    others = {f"vllm {rule}": vllm_partitions(names, rule, k) for rule in VLLM_RULES}
    balanced = solve(inst, objective="min_bottleneck", num_partitions=k)
    others["min_bottleneck"] = balanced.partitions
    unpinned = dataclasses.replace(inst, constraints=Constraints(
        reserve=inst.constraints.reserve, tied=inst.constraints.tied,
        gpu_memory_utilization=inst.constraints.gpu_memory_utilization))
    others["greedy"] = solve(unpinned, "greedy").partitions
    for name, parts in others.items():
        assert served(inst, parts) <= best.objective, name
    # vLLM's placement holds: the first block on rank 0, the last on the last rank.
    blocks = [i for i, n in enumerate(names) if BLOCK_NAME.match(n)]
    assert blocks[0] in best.partitions[0] and blocks[-1] in best.partitions[-1]


def test_the_mixed_pool_beats_every_vllm_rule_and_the_balanced_plan():
    inst = load_instance(INSTANCES / "llama-3.1-70b-serving-mixed-pool.json")
    names = [layer.name for layer in inst.layers]
    best = solve(inst, objective="max_kv_tokens", num_partitions=4)
    assert served(inst, vllm_partitions(names, "even", 4)) == 0  # the A100s cannot hold 20 blocks and the cache
    rivals = [served(inst, vllm_partitions(names, "fewer-first-last", 4)),
              served(inst, solve(inst, objective="min_bottleneck", num_partitions=4).partitions)]
    assert best.objective > 1.5 * max(rivals)


def test_plan_prints_a_vllm_partition_that_gives_the_plans_stages(capsys, tmp_path):
    config = INSTANCES / "configs" / "llama-3-70b.json"
    code = main(["plan", str(config), "--gpu", "L4", "--gpus", "8", "--dtype", "fp8", "--objective", "max-kv-tokens",
                 "--to", "vllm", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    plan = out["plan"]
    assert plan["objective_name"] == "max_kv_tokens" and plan["status"] == "optimal"
    partition = out["export"]["value"]
    assert out["paste"].startswith(f'VLLM_PP_LAYER_PARTITION="{partition}" vllm serve')
    # vLLM's rule: comma-separated decoder layers per rank; the embedding rides with rank 0, norm and head the last.
    blocks = [int(c) for c in partition.split(",")]
    assert len(blocks) == 8 and sum(blocks) == 80
    stages = [len(p) for p in plan["partitions"]]
    assert stages == [blocks[0] + 1, *blocks[1:-1], blocks[-1] + 2]
    instance_json = tmp_path / "inst.json"
    code = main(["import", str(config), "--batch-size", "1", "--seq-len", "4096", "--dtype", "fp8", "--serving",
                 "--gpu", "L4", "--gpus", "8", "-o", str(instance_json)])
    assert code == 0
    inst = load_instance(instance_json)
    assert stage_layer_counts(inst, out["export"]) == stages
    assert plan["metrics"]["kv_tokens"]["tokens"] == plan["objective"] > 0


def test_plan_text_names_the_tokens_and_blocks(capsys):
    config = INSTANCES / "configs" / "qwen2.5-72b.json"
    code = main(["plan", str(config), "--gpu", "H100-80GB", "--gpus", "4", "--objective", "max-kv-tokens",
                 "--to", "vllm"])
    out = capsys.readouterr().out
    assert code == 0
    assert "objective max_kv_tokens: optimal" in out and "KV tokens" in out
    line = next(line for line in out.splitlines() if line.startswith("serving: "))
    tokens = int(line.split()[1].replace(",", ""))
    assert f"{tokens // 16:,} blocks of 16 tokens" in out
    assert 'VLLM_PP_LAYER_PARTITION="' in out


def test_plan_refuses_max_kv_tokens_without_gpus(capsys):
    code = main(["plan", str(INSTANCES / "configs" / "llama-3-8b.json"), "--gpu", "L4", "--objective",
                 "max-kv-tokens", "--to", "vllm"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "layerfit: error: --objective max-kv-tokens: needs --gpus N, the number of GPUs to serve on"


def test_plan_places_a_max_kv_tokens_plan_on_a_topology(capsys):
    # The placement holds the plan's tokens of KV cache, as the plan's metrics do (it failed validation).
    code = main(["plan", str(INSTANCES / "configs" / "llama-3.1-70b.json"), "--gpu", "H100-80GB", "--gpus", "4",
                 "--objective", "max-kv-tokens", "--to", "vllm", "--topology", "dgx-h100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = out["plan"]["metrics"]["partitions"]
    assert out["placement"]["partition_bytes"] == [row["bytes"] for row in rows]
    assert out["paste"].startswith('VLLM_PP_LAYER_PARTITION="')
