"""`layerfit import --gpu/--gpus/--reserve` and `layerfit plan`: a config.json to a framework's
flags in one command, with GPUs by name and the reserve they hold back."""

import json

import pytest

from helpers import INSTANCES
from layerfit import Instance, Plan, Placement, from_hf_config, load_instance, solve, validate_plan
from layerfit.cli import main
from layerfit.interop.export import stage_layer_counts
from layerfit.model.memory import plan_loads

MiB, GiB = 2**20, 2**30
H100, H100_RESERVE = 81_559 * MiB, 5 * GiB
KNOWN = "H100-80GB, H200, A100-40GB, A100-80GB, L40S, L4, RTX4090, B200, MI300X"
CONFIGS = INSTANCES / "configs"
LLAMA_8B, LLAMA_70B, GPT2 = (str(CONFIGS / f"{n}.json") for n in ("llama-3-8b", "llama-3.1-70b", "gpt2"))
# Llama-3.1-405B's published config.json (meta-llama/Llama-3.1-405B), the fields the importer reads.
LLAMA_405B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 126,
              "hidden_size": 16384, "intermediate_size": 53248, "num_attention_heads": 128, "num_key_value_heads": 8,
              "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def llama_405b(tmp_path):
    folder = tmp_path / "llama-3.1-405b"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps(LLAMA_405B))
    return path


def _import(capsys, tmp_path, *options):
    out_file = tmp_path / "inst.json"
    code, _, err = run(capsys, "import", *options, "-o", out_file)
    assert code == 0, err
    return load_instance(out_file), json.loads(out_file.read_text()), err


# -- import --gpu / --gpus / --reserve ------------------------------------------------


def test_import_gpu_is_the_gpus_memory_with_its_default_reserve(capsys, tmp_path):
    inst, raw, err = _import(capsys, tmp_path, LLAMA_8B, "--batch-size", 1, "--seq-len", 512, "--gpu", "H100-80GB")
    assert raw["capacity"] == H100 and raw["constraints"]["reserve"] == H100_RESERVE
    assert inst.capacity == H100 and inst.constraints.reserve == H100_RESERVE
    assert "capacity 85.52 GB, reserve 5.369 GB" in err


@pytest.mark.parametrize("reserve, expected", [("0", 0), ("2GiB", 2 * GiB), ("1000000", 10**6)])
def test_import_reserve_overrides_the_default_zero_included(capsys, tmp_path, reserve, expected):
    inst, raw, _ = _import(capsys, tmp_path, LLAMA_8B, "--batch-size", 1, "--seq-len", 512,
                           "--gpu", "H100-80GB", "--reserve", reserve)
    assert inst.constraints.reserve == expected
    assert raw.get("constraints", {}).get("reserve", 0) == expected


def test_import_gpus_makes_an_ordered_pool_without_an_instance_capacity(capsys, tmp_path):
    inst, raw, err = _import(capsys, tmp_path, LLAMA_8B, "--batch-size", 1, "--seq-len", 512,
                             "--gpu", "RTX4090", "--gpus", 3)
    assert "capacity" not in raw
    assert raw["devices"] == [{"name": f"GPU{j}", "capacity": 24_564 * MiB} for j in range(3)]
    assert inst.capacity == 24_564 * MiB and inst.constraints.reserve == 3 * GiB
    assert "3 devices of capacity 25.76 GB, reserve 3.221 GB" in err
    plan = solve(inst)
    validate_plan(inst, plan)
    assert plan.num_partitions == 1 + (inst.total_bytes > 24_564 * MiB - 3 * GiB)


@pytest.mark.parametrize("argv, message", [
    (["--gpu", "H100-80GB", "--capacity", "80GB"],
     "layerfit: error: --gpu H100-80GB and --capacity 80GB: give one (--gpu is that GPU's memory)"),
    (["--gpu", "H100"], f"layerfit: error: --gpu: unknown GPU 'H100' (known: {KNOWN})"),
    (["--reserve", "1GB"], "layerfit: error: --reserve: needs --gpu (or --capacity), the memory it is held back from"),
    (["--gpus", "2"], "layerfit: error: --gpus: needs --gpu (or --capacity), the memory of each GPU"),
    (["--gpu", "L40S", "--gpus", "0"], "layerfit: error: --gpus: must be at least 1, got 0"),
    (["--gpu", "L40S", "--reserve=-1GB"], "layerfit: error: --reserve: must not be negative, got '-1GB'"),
    (["--gpu", "L40S", "--reserve", "50GB"],
     "layerfit: error: --reserve: 50 GB (50,000,000,000 B) leaves nothing of the capacity, 48.31 GB (48,305,799,168 B)"),
    (["--capacity", "H200x"], f"layerfit: error: capacity: unknown GPU 'H200x' (known: {KNOWN})"),
])
def test_import_gpu_options_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "import", LLAMA_8B, "--batch-size", 1, "--seq-len", 8, *argv)
    assert code == 2 and out == ""
    assert err.splitlines() == [message]


def test_import_accepts_hugging_face_dtype_spellings(capsys, tmp_path):
    inst, raw, _ = _import(capsys, tmp_path, LLAMA_8B, "--batch-size", 1, "--seq-len", 8, "--dtype", "float16")
    assert inst.dtype == raw["dtype"] == "fp16"


# -- the acceptance: Llama-3.1-405B on H100s ----------------------------------------------


def test_llama_405b_on_h100s_holds_the_default_reserve_back_on_every_gpu(capsys, tmp_path, llama_405b):
    common = [llama_405b, "--batch-size", 1, "--seq-len", 4096, "--kv-cache", "--gpu", "H100-80GB"]
    inst, _, _ = _import(capsys, tmp_path, *common)
    assert inst.total_params == 405_853_388_800 and inst.dtype == "bf16"
    plan = solve(inst)
    validate_plan(inst, plan)
    loads = plan_loads(inst, plan.partitions)
    assert max(loads) <= H100 - H100_RESERVE < max(loads) + 2 * GiB  # every GPU keeps its 5 GiB, the largest no more
    bare, _, _ = _import(capsys, tmp_path, *common, "--reserve", 0)
    bare_plan = solve(bare)
    # the numbers docs/cli.md gives: 11 H100s with the reserve, 10 with none (the largest then fills 99.2%)
    assert (plan.num_partitions, bare_plan.num_partitions) == (11, 10)
    assert max(plan_loads(bare, bare_plan.partitions)) > H100 - H100_RESERVE


def test_plan_405b_to_vllm_prints_the_line_to_paste(capsys, llama_405b):
    code, out, err = run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--kv-cache", "--to", "vllm")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert "sequence length 4096: the config's context (131,072), at most 4096 (--seq-len sets it)" in out
    flat = " ".join(out.split())
    assert ("GPU H100-80GB: 85.52 GB (85,520,809,984 B) as its driver reports it, less a reserve of 5.369 GB "
            "(5,368,709,120 B) held back on each (its default: CUDA context, NCCL, fragmentation; --reserve changes "
            "it): 80.15 GB (80,152,100,864 B) for the model on each") in flat
    assert "pinned: model.layers.0 to the first stage, model.layers.125 to the last stage" in flat
    assert "partitions: 11 (proven lower bound 11)" in out
    assert lines[-2] == "vllm: 11 stages; paste:"
    assert lines[-1] == 'VLLM_PP_LAYER_PARTITION="7,12,12,12,12,12,12,12,12,12,11" vllm serve MODEL --pipeline-parallel-size 11'


def test_plan_json_is_one_document_whose_export_reads_back(capsys, llama_405b):
    code, out, _ = run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--kv-cache", "--to", "vllm", "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"instance", "objective", "plan", "placement", "export", "paste"}
    summary = doc["instance"]
    assert summary["gpu"]["name"] == "H100-80GB" and summary["gpu"]["memory"] == H100
    assert (summary["capacity"], summary["reserve"], summary["usable"]) == (H100, H100_RESERVE, H100 - H100_RESERVE)
    assert summary["pinned"] == {"model.layers.0": 0, "model.layers.125": -1}
    plan = Plan.from_dict(doc["plan"])
    instance = from_hf_config(llama_405b, batch_size=1, seq_len=4096, kv_cache=True)
    counts = stage_layer_counts(instance, doc["export"])
    assert counts == [len(p) for p in plan.partitions] and sum(counts) == instance.num_layers
    assert doc["paste"].startswith(f'VLLM_PP_LAYER_PARTITION="{doc["export"]["value"]}" ')
    assert doc["placement"] is None and doc["objective"] == "min_partitions"


def test_plan_with_gpus_balances_exactly_that_many(capsys, llama_405b):
    code, out, _ = run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--kv-cache", "--gpus", 12,
                       "--to", "vllm", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["objective"] == "min_bottleneck"
    plan = Plan.from_dict(doc["plan"])
    assert plan.num_partitions == 12 and plan.status == "optimal"
    assert doc["instance"]["gpus"] == 12 and doc["export"]["num_stages"] == 12
    fewest = Plan.from_dict(json.loads(run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--kv-cache",
                                           "--to", "vllm", "--json")[1])["plan"])
    assert plan.metrics["max_bytes"] < fewest.metrics["max_bytes"]


def test_plan_too_few_gpus_is_infeasible_with_the_explanation(capsys, llama_405b):
    code, out, _ = run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--gpus", 5, "--to", "vllm")
    assert code == 1
    assert "objective min_bottleneck: infeasible" in out and "Remedy:" in out and "paste" not in out
    assert max(len(line) for line in out.splitlines()) <= 120
    code, out, _ = run(capsys, "plan", llama_405b, "--gpu", "H100-80GB", "--gpus", 5, "--to", "vllm", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["plan"]["status"] == "infeasible" and doc["export"] is None and doc["paste"] is None


@pytest.mark.parametrize("target", ["vllm", "megatron", "deepspeed", "pippy", "accelerate"])
def test_plan_exports_to_every_framework_within_120_columns(capsys, target):
    code, out, err = run(capsys, "plan", LLAMA_70B, "--gpu", "A100-80GB", "--to", target)
    assert code == 0 and err == ""
    assert max(len(line) for line in out.splitlines()) <= 120
    assert f"{target}: " in out and "paste:" in out
    code, doc_text, _ = run(capsys, "plan", LLAMA_70B, "--gpu", "A100-80GB", "--to", target, "--json")
    doc = json.loads(doc_text)
    instance = from_hf_config(LLAMA_70B, batch_size=1, seq_len=4096)
    plan = Plan.from_dict(doc["plan"])
    assert stage_layer_counts(instance, doc["export"]) == [len(p) for p in plan.partitions]
    # the pasted text, its shell continuations joined, is the export itself
    paste = out[out.index("paste:\n") + len("paste:\n"):].split("\nusage:")[0].split("\nnote:")[0].rstrip("\n")
    assert paste.replace("\\\n", "") == doc["paste"]


def test_plan_megatron_quotes_its_layout_for_the_shell(capsys):
    code, out, _ = run(capsys, "plan", LLAMA_70B, "--gpu", "A100-80GB", "--to", "megatron", "--json")
    doc = json.loads(out)
    layout = doc["export"]["value"]
    assert doc["paste"] == (f"pretrain_gpt.py --pipeline-model-parallel-size {doc['export']['num_stages']} "
                            f'--pipeline-model-parallel-layout "{layout}"')
    assert layout.endswith("L") and doc["instance"]["pinned"] == {"model.norm": -1}


def test_plan_places_the_stages_on_a_topology(capsys):
    code, out, _ = run(capsys, "plan", LLAMA_70B, "--gpu", "H100-80GB", "--topology", "dgx-h100", "--to", "accelerate")
    assert code == 0 and "placement of llama-3.1-70b on dgx-h100" in out
    assert max(len(line) for line in out.splitlines()) <= 120
    code, out, _ = run(capsys, "plan", LLAMA_70B, "--gpu", "H100-80GB", "--topology", "dgx-h100", "--to", "accelerate",
                       "--json")
    doc = json.loads(out)
    placement = Placement.from_dict(doc["placement"])
    gpus = sorted(set(doc["export"]["value"].values()))
    assert gpus == sorted(int(name.removeprefix("GPU")) for name in placement.devices)


def test_plan_defaults_the_sequence_to_the_configs_context_capped(capsys):
    code, out, _ = run(capsys, "plan", GPT2, "--gpu", "RTX4090", "--to", "pippy", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["instance"]["seq_len_default_from"] == 1024
    assert "batch 1, sequence 1024" in doc["instance"]["description"]
    code, out, _ = run(capsys, "plan", GPT2, "--gpu", "RTX4090", "--seq-len", 256, "--to", "pippy", "--json")
    doc = json.loads(out)
    assert doc["instance"]["seq_len_default_from"] is None and "sequence 256" in doc["instance"]["description"]


def test_plan_with_a_capacity_instead_of_a_gpu_holds_back_no_reserve_unless_asked(capsys):
    code, out, _ = run(capsys, "plan", LLAMA_8B, "--capacity", "20GB", "--to", "vllm", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["instance"]["gpu"] is None and doc["instance"]["reserve"] == 0
    code, out, _ = run(capsys, "plan", LLAMA_8B, "--capacity", "20GB", "--reserve", "2GB", "--to", "vllm", "--json")
    assert json.loads(out)["instance"]["usable"] == 18 * 10**9


@pytest.mark.parametrize("argv, message", [
    (["--to", "vllm"], f"layerfit: error: --gpu: required, the GPU to plan for ({KNOWN}), or --capacity"),
    (["--gpu", "H100-80GB", "--to", "tensorrt"],
     "layerfit: error: --to: unknown target 'tensorrt' (allowed: deepspeed, megatron, vllm, pippy, accelerate)"),
    (["--gpu", "H100", "--to", "vllm"], f"layerfit: error: --gpu: unknown GPU 'H100' (known: {KNOWN})"),
    (["--gpu", "H100-80GB", "--capacity", "80GB", "--to", "vllm"],
     "layerfit: error: --gpu H100-80GB and --capacity 80GB: give one (--gpu is that GPU's memory)"),
    (["--gpu", "H100-80GB", "--objective", "min_bottleneck", "--to", "vllm"],
     "layerfit: error: --objective min_bottleneck: needs --gpus N, the number of GPUs to balance over"),
    (["--gpu", "H100-80GB", "--objective", "min_stage_time", "--gpus", "2", "--to", "vllm"],
     "layerfit: error: --objective: 'min_stage_time' is not one plan solves (allowed: min_partitions, min_bottleneck, "
     "min_utilization, max_kv_tokens; - for _ is accepted)"),
    (["--gpu", "H100-80GB", "--split", "sublayer", "--to", "megatron"],
     "layerfit: error: --split sublayer: megatron places whole decoder layers; use --split block"),
    (["--gpu", "H100-80GB", "--batch-size", "0", "--to", "vllm"], None),
    (["--gpu", "H100-80GB", "--dtype", "float64", "--to", "vllm"],
     "layerfit: error: dtype: unknown dtype 'float64' (allowed: fp32, bf16, fp16, fp8, int8, int4)"),
])
def test_plan_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "plan", LLAMA_8B, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("layerfit: error: ")
    if message is not None:
        assert err.splitlines() == [message]


def test_plan_without_a_context_length_asks_for_seq_len(capsys, tmp_path):
    config = {k: v for k, v in LLAMA_405B.items() if k != "max_position_embeddings"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, out, err = run(capsys, "plan", path, "--gpu", "H200", "--to", "vllm")
    assert code == 2 and err.splitlines() == [
        f"layerfit: error: --seq-len: {path} gives no max_position_embeddings to default to; give --seq-len"]


def test_an_instance_json_with_gpu_names_solves_from_the_cli(capsys, tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"name": "pool", "dtype": "bfloat16",
                                "layers": [{"name": f"l{i}", "params": 6 * 10**9} for i in range(8)],
                                "devices": [{"name": f"GPU{j}", "capacity": "H200"} for j in range(4)]}))
    code, out, err = run(capsys, "solve", path)
    assert code == 0 and err == ""
    assert ("capacity 150.8 GB (150,754,820,096 B, the largest device's) less a reserve of 7.516 GB on each device"
            in " ".join(out.split()))
    assert Instance.from_dict(json.loads(path.read_text())).constraints.reserve == 7 * GiB
