#!/usr/bin/env bash
# The GPU figures of bench/README.md in one run on a lent device machine (15 minutes a session):
#     here:      bash bench/device_wheels.sh
#     device:    run  command="bash bench/device.sh"  carry=[".whl"]  timeout_s=540
# Arguments go to bench/generate_gpu.py (--tiny checks this script on a CPU). Prints the card,
# then bench/generate_gpu.py's table; copies of both land in $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-bench/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt"
timeout 480 python3 bench/generate_gpu.py "$@" 2>&1 | tee "$out/generate_gpu.txt"
