#!/usr/bin/env bash
# The GPU checks owed by tracker issue 5, prepared as ONE call on a lent GPU machine:
#
#   bash benchmarks/gpu_check.sh OUT_DIR [more benchmarks.throughput options]
#
# Runs from the repository root on the machine's own PyTorch, without installing anything
# (PYTHONPATH=src:.): first the CUDA tests and the inductor compile test, then the throughput
# ladder with the goal batch sizes first (4, 256, then 32, 128). The benchmark rewrites its
# results after every measured row, so a run stopped by the time limit keeps what it measured
# (marked "PARTIAL"). The whole script ends within MMFUSION_TOTAL_S seconds (default 570, for a
# 10-minute call): each of the two test commands gets at most MMFUSION_TESTS_S (default 120), the
# benchmark whatever is left. PYTHON picks the interpreter (default python3); MMFUSION_DEVICE=cpu
# rehearses the script on a machine without a GPU.
set -uo pipefail

out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [benchmarks.throughput options]}
shift
python=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
mkdir -p "$out"

"$python" -c 'import torch, timm
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, timm {timm.__version__}, {gpu}")'

tests_s=${MMFUSION_TESTS_S:-120}
{
    timeout "$tests_s" "$python" -m pytest -q -p no:cacheprovider -m cuda tests
    echo "cuda tests: exit $?"
    timeout "$tests_s" "$python" -m pytest -q -p no:cacheprovider tests/test_compile.py -k inductor
    echo "inductor test: exit $?"
} >"$out/gpu_tests.log" 2>&1
grep -E "exit|passed|failed|error" "$out/gpu_tests.log"

bench_s=$(( ${MMFUSION_TOTAL_S:-570} - SECONDS ))
if (( bench_s < 60 )); then bench_s=60; fi
echo "benchmark: at most ${bench_s} s"
timeout "$bench_s" "$python" -m benchmarks.throughput \
    --device "${MMFUSION_DEVICE:-cuda}" --batch-sizes 4,256,32,128 --out "$out" --overwrite "$@" \
    2>"$out/benchmark.log"
echo "benchmark: exit $? (124: stopped by the time limit; the results files hold what it measured)"
tail -n 40 "$out/benchmark.log"
