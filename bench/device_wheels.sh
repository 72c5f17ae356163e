#!/usr/bin/env bash
# What the lent GPU machine lacks (it reaches no registry), in .whl/ (git-ignored), for
# bench/device.sh. Run here, once, before the device run:
#     bash bench/device_wheels.sh
# The machine's image has Python 3.12, PyTorch, transformers, huggingface_hub and safetensors;
# generate's GPU benchmark needs diffusers besides, and open_clip_torch for CLIP's vocabulary
# file (read, not imported). Versions as in the project's own environment. The device run sends
# only the repository (and the carried .whl/), so the shared diagnostic script
# ../shared/tools/gpu_gap.py (not part of the project) travels as .whl/gpu_gap.py.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 importlib_metadata==10.2.0 zipp==4.1.2
if [[ -f ../shared/tools/gpu_gap.py ]]; then
    cp ../shared/tools/gpu_gap.py .whl/gpu_gap.py
else
    echo "no ../shared/tools/gpu_gap.py: bench/device.sh will skip the diagnostics" >&2
fi
ls -l .whl
