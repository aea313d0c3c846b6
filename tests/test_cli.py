"""The layerfit CLI: tables, --json purity, exit codes 0 / 1 / 2, one-line errors."""

import json
import shutil
import subprocess
import sys

import pytest

from layerfit import Plan, load_instance, validate_plan
from layerfit.cli import main

from helpers import INSTANCES, ROOT

SEED_HBM = str(INSTANCES / "seed-30b-h100-hbm.json")
SEED_L2 = str(INSTANCES / "seed-30b-h100-l2.json")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_prints_a_readable_table(capsys):
    code, out, err = run(capsys, "solve", SEED_HBM)
    assert code == 0 and err == ""
    assert "instance seed-30b-h100-hbm: 16 layers, capacity 80 GB (80,000,000,000 B)" in out
    assert "objective min_partitions: optimal" in out
    assert "partitions: 4 (proven lower bound 4); largest partition 56.94 GB" in out
    assert "layer0 … layer3" in out and "71.2%" in out
    assert "balance: max/mean 1.000" in out
    assert "traffic: 3 transfers per batch, 31.46 GB in all" in out


@pytest.mark.parametrize("method", ["greedy", "dp", "cpsat", "mip"])
def test_solve_json_prints_the_plan_alone(capsys, method):
    code, out, err = run(capsys, "solve", SEED_HBM, "--method", method, "--json")
    assert code == 0
    plan = Plan.from_dict(json.loads(out))
    validate_plan(load_instance(SEED_HBM), plan)
    assert plan.method == method


def test_solve_json_with_highs_has_no_banner_on_stdout():
    # HiGHS prints a banner from native code on its first use; stdout must stay one JSON document.
    exe = [sys.executable, "-m", "layerfit.cli"]
    out = subprocess.run([*exe, "solve", SEED_HBM, "--method", "mip", "--backend", "highs", "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["backend"] == "highs"


def test_min_bottleneck_from_the_cli(capsys):
    code, out, _ = run(capsys, "solve", SEED_HBM, "--objective", "min_bottleneck", "--num-partitions", "8", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["num_partitions"] == 8 and plan["objective"] == 2 * 14_235_760_000


def test_infeasible_exits_1_with_the_explanation(capsys):
    code, out, _ = run(capsys, "solve", SEED_L2)
    assert code == 1
    flat = " ".join(out.split())  # prose wraps at 120 columns
    assert "infeasible" in out and "the seed's \"5.24GB\" counts these elements" in flat
    assert max(len(line) for line in out.splitlines()) <= 120
    code, out, _ = run(capsys, "solve", SEED_L2, "--json")
    assert code == 1 and json.loads(out)["status"] == "infeasible"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", "nope.json"], r"layerfit: error: nope.json: no such file\n"),
        (["solve", SEED_HBM, "--method", "magic"], r"layerfit: error: method: unknown method 'magic'"),
        (["solve", SEED_HBM, "--backend", "highs"], r"layerfit: error: backend: an option of method 'mip', not of method 'auto'\n"),
        (["solve", SEED_HBM, "--time-limit", "0", "--method", "cpsat"], r"layerfit: error: time_limit: must be a positive number of seconds, got 0.0\n"),
        (["compare", "nowhere"], r"layerfit: error: nowhere: no such file or folder\n"),
        (["compare", SEED_HBM, "--methods", "dp,magic"], r"layerfit: error: --methods: unknown method 'magic'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert __import__("re").match(message, err)


def test_malformed_json_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = run(capsys, "solve", str(bad))
    assert code == 2 and "not valid JSON" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["solve"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["solve", SEED_HBM, "--time-limit", "soon"])
    assert info.value.code == 2


def test_compare_table_and_json(capsys, tmp_path):
    for name in ("seed-30b-h100-hbm", "seed-30b-h100-l2", "llama-2-7b-h100-hbm"):
        shutil.copy(INSTANCES / f"{name}.json", tmp_path)
    code, out, _ = run(capsys, "compare", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["instance", "layers", "capacity", "greedy", "k"]
    row = next(line for line in lines if line.startswith("seed-30b-h100-hbm"))
    assert "optimal (4/4 proved)" in row and "71.18 GB" in row and "56.94 GB" in row
    assert "infeasible" in next(line for line in lines if line.startswith("seed-30b-h100-l2"))
    assert "3 instances, 2 solved by greedy and an exact method. Greedy's count equals the optimum on 2 of them" in out
    code, out, _ = run(capsys, "compare", str(tmp_path), "--json", "--methods", "greedy,dp,mip:highs")
    doc = json.loads(out)
    assert doc["methods"] == ["greedy", "dp", "mip:highs"]
    by_name = {row["instance"]: row for row in doc["instances"]}
    seed = by_name["seed-30b-h100-hbm"]
    assert (seed["greedy_partitions"], seed["optimal_partitions"]) == (4, 4)
    assert seed["greedy_max_over_mean"] == 1.25 and seed["optimal_max_over_mean"] == 1.0
    assert seed["methods"]["mip:highs"]["status"] == "optimal"
    assert by_name["seed-30b-h100-l2"]["proof"] == "infeasible"


@pytest.mark.skipif(shutil.which("layerfit") is None, reason="console script not installed")
def test_console_script_exit_codes():
    assert subprocess.run(["layerfit", "solve", SEED_HBM], capture_output=True).returncode == 0
    assert subprocess.run(["layerfit", "solve", SEED_L2], capture_output=True).returncode == 1
    bad = subprocess.run(["layerfit", "solve", SEED_HBM, "--objective", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_map_prints_the_placement_and_plots_it(capsys, tmp_path):
    png = tmp_path / "placement.png"
    code, out, _ = run(capsys, "map", SEED_HBM, "--topology", "dgx1-v100", "--num-partitions", "8", "--plot", str(png))
    assert code == 0
    assert "placement of seed-30b-h100-hbm on dgx1-v100: 8 partitions, objective min_bottleneck, method subset-dp: optimal" in out
    assert "1.00× the chosen" not in out and "NV2" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_map_of_a_plan_json_needs_its_instance(capsys, tmp_path):
    code, out, _ = run(capsys, "solve", SEED_HBM, "--json")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(out)
    code, out, err = run(capsys, "map", str(plan_file), "--topology", "dgx-h100")
    assert code == 2 and "is a plan: give the instance it was made for with --instance" in err
    code, out, _ = run(capsys, "map", str(plan_file), "--instance", SEED_HBM, "--topology", "dgx-h100", "--json")
    placement = json.loads(out)
    assert code == 0 and placement["devices"] == ["GPU0", "GPU1", "GPU2", "GPU3"]


def test_map_bad_topology_exits_2(capsys):
    code, out, err = run(capsys, "map", SEED_HBM, "--topology", "no-such-box")
    assert code == 2 and err.startswith("layerfit: error: unknown topology preset 'no-such-box'")


def test_compare_fits_120_columns_and_wide_adds_the_rest(capsys):
    code, out, _ = run(capsys, "compare", str(INSTANCES), "--methods", "greedy,dp")
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 120
    assert lines[0].split() == ["instance", "layers", "capacity", "greedy", "k", "optimal", "k", "greedy", "max",
                                "optimal", "max", "proof"]
    assert "llama-2-7b-1f1b-r…e-train-h100-hbm  " in out  # the one name too long gives up its middle
    code, wide, _ = run(capsys, "compare", str(INSTANCES), "--methods", "greedy,dp", "--wide")
    header = wide.splitlines()[0]
    assert code == 0 and "greedy max/mean" in header and header.rstrip().endswith("dp time")
    assert "llama-2-7b-1f1b-recompute-train-h100-hbm" in wide
    flat = lambda text: " ".join(text.split())  # noqa: E731 — the legend wraps
    assert "max: the largest partition's bytes" in flat(out)
    assert "largest: the largest partition's bytes; max/mean: the largest over the mean partition" in flat(wide)


def test_compare_marks_methods_that_do_not_apply(capsys):
    path = str(INSTANCES / "unet-skips-rtx4090-hbm.json")
    code, out, _ = run(capsys, "compare", path, "--json")
    row = json.loads(out)["instances"][0]
    assert code == 0 and row["methods"]["dp"]["status"] == "n/a"
    assert row["methods"]["dp"]["reason"].startswith("edges: ")
    code, out, _ = run(capsys, "compare", str(INSTANCES / "seed-30b-1f1b-b200-hbm.json"), "--json")
    row = json.loads(out)["instances"][0]
    assert row["methods"]["cpsat"]["status"] == "optimal" and row["proof"] == "optimal (4/4 proved)"
    assert (row["greedy_partitions"], row["optimal_partitions"]) == (2, 1)
    code, out, _ = run(capsys, "compare", path)
    assert "n/a" in out


def test_import_then_solve_then_export(capsys, tmp_path):
    out_file = tmp_path / "llama.json"
    code, out, err = run(capsys, "import", str(ROOT / "instances" / "configs" / "llama-3-8b.json"), "--batch-size", "1",
                         "--seq-len", "4096", "--capacity", "5GB", "-o", str(out_file))
    assert code == 0 and out == ""
    assert f"{out_file}: 35 layers, 8,030,261,248 parameters, capacity 5 GB" in err
    inst = load_instance(out_file)
    code, out, err = run(capsys, "export", str(out_file), "--to", "vllm")
    assert code == 0 and out == "7,10,10,5\n"  # decoder layers per rank of the optimal 4-stage plan
    assert "VLLM_PP_LAYER_PARTITION=7,10,10,5" in err
    code, out, _ = run(capsys, "solve", str(out_file), "--json")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(out)
    code, out, _ = run(capsys, "export", str(plan_file), "--instance", str(out_file), "--to", "megatron", "--json")
    exported = json.loads(out)
    assert code == 0 and exported["value"] == "E" + "t" * 7 + "|" + "t" * 10 + "|" + "t" * 10 + "|" + "t" * 5 + "L"
    assert inst.num_layers == 35


@pytest.mark.parametrize(
    "argv, message",
    [
        (["import", "instances/configs/gpt2.json", "--batch-size", "0", "--seq-len", "8"],
         "layerfit: error: batch_size: must be a positive integer, got 0"),
        (["import", "instances/configs/gpt2.json", "--batch-size", "1", "--seq-len", "8", "--dtype", "fp64"],
         "layerfit: error: dtype: unknown dtype 'fp64'"),
        (["export", SEED_HBM, "--to", "onnx"], "layerfit: error: target: unknown export target 'onnx'"),
        (["export", SEED_HBM, "--to", "vllm"], "layerfit: error: vllm: no decoder blocks among the layers"),
    ],
)
def test_import_and_export_bad_input_exit_2(capsys, argv, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.startswith(message)
