#!/usr/bin/env bash
# The GPU figures of bench/README.md in one run on a lent device machine (15 minutes a session):
#     here:      bash bench/device_wheels.sh
#     device:    run  command="bash bench/device.sh"  carry=[".whl"]  timeout_s=540
# Prints the card, then where one pipeline call spends its time (bench/gpu_probe.py --only
# stages, about 1.5 minutes), then bench/generate_gpu.py's table; copies of each land in $OUT.
# --tiny (passed to both scripts) checks this one on a CPU.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-bench/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt" || true
timeout 150 python3 bench/gpu_probe.py --only stages "$@" 2>&1 | tee "$out/gpu_probe.txt" ||
    echo "(bench/gpu_probe.py stopped early)"
timeout 330 python3 bench/generate_gpu.py "$@" 2>&1 | tee "$out/generate_gpu.txt"
