#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (for a machine such as the device tool's H200):
# the GPU tests, the runtime tests on a machine that has CUDA (Hugging Face models and checkpoints
# included), and benchmarks/bench_gpu.py.
#
#     bash scripts/gpu-check.sh            # logs and results into $OUT (default benchmarks/results)
#
# It uses the python that already holds a CUDA build of torch ($PYTHON, default python3), not
# .venv: requirements.txt pins the CPU wheel. The solver's optional back-ends (OR-Tools, PuLP)
# are not needed by these tests. The Hugging Face tests need transformers >= 5.24 (the runtime
# uses its loader); where the machine has an older one, install the pinned wheel first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_cuda.py tests/test_l2_cache.py tests/test_profile.py tests/test_runtime.py \
    tests/test_model_sources.py tests/test_hf_runtime.py tests/test_hf_stages.py 2>&1 | tee "$OUT/gpu-tests.log"
tests=${PIPESTATUS[0]}
"$PY" benchmarks/bench_gpu.py 2>&1 | tee "$OUT/gpu-bench.log"
bench=${PIPESTATUS[0]}
[ "$OUT" = benchmarks/results ] || cp benchmarks/results/gpu.md benchmarks/results/gpu.json "$OUT/" 2>/dev/null
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
