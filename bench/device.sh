#!/usr/bin/env bash
# generate's GPU figures in one run on a lent device machine (15 minutes a session, start included):
#     here:      bash bench/device_wheels.sh     (the wheels and ../shared/tools/gpu_gap.py → .whl/)
#     device:    run  command="bash bench/device.sh"  carry=[".whl"]  timeout_s=590
#     bash bench/device.sh [all|diagnose|table] [--tiny]
# all (the default): the card, then the diagnostics (.whl/gpu_gap.py: where the ~4.5 s per image
# beyond the UNet and VAE go, about 3 minutes), then bench/generate_gpu.py's table (about 5).
# diagnose: the card, gpu_gap.py, then bench/gpu_probe.py --only stages; table: the table alone,
# for a second run after a fix. Copies of each output land in $OUT. --tiny checks it on a CPU.
set -euo pipefail
phase=all
case "${1:-}" in all | diagnose | table) phase=$1 && shift ;; esac
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-bench/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv | tee "$out/card.txt" || true
if [[ $phase != table ]]; then
    if [[ -f .whl/gpu_gap.py ]]; then
        timeout 220 python3 .whl/gpu_gap.py "$@" 2>&1 | tee "$out/gpu_gap.txt" ||
            echo "(gpu_gap.py stopped early)"
    else
        echo "no .whl/gpu_gap.py: run bash bench/device_wheels.sh first (it copies the script)"
    fi
fi
if [[ $phase == diagnose ]]; then
    timeout 150 python3 bench/gpu_probe.py --only stages "$@" 2>&1 | tee "$out/gpu_probe.txt" ||
        echo "(bench/gpu_probe.py stopped early)"
fi
if [[ $phase != diagnose ]]; then
    timeout 330 python3 bench/generate_gpu.py "$@" 2>&1 | tee "$out/generate_gpu.txt"
fi
