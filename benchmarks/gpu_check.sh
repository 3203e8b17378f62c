#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA device: the test suite on CUDA (without the slow
# tests) and the throughput benchmarks on CUDA, in under 10 minutes. Results go to $OUT
# (default benchmarks/results/gpu/). Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export FLUXLAB_ARCH=cuda
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
timeout 300 python -m pytest -q --arch cuda -m "not slow" -p no:cacheprovider > "$OUT/pytest_cuda.txt" 2>&1 || status=1
tail -5 "$OUT/pytest_cuda.txt"
timeout 120 python benchmarks/mpm_throughput.py --steps 5 --repeats 3 --out "$OUT/mpm_throughput_cuda.json" > /dev/null || status=1
if [ -f benchmarks/fem_throughput.py ]; then
    timeout 120 python benchmarks/fem_throughput.py --out "$OUT/fem_throughput_cuda.json" > /dev/null || status=1
fi
timeout 60 python benchmarks/tactile_image.py --device cuda --out "$OUT/tactile_image_cuda.json" > /dev/null || status=1
ls -l "$OUT"
exit $status
