#!/usr/bin/env bash
# The math setting's GPU check, on the device machine (after `make gpu-wheels` here):
#   run(command="bash bench/gpu_math_check.sh", carry=[".gpu"], timeout_s=420)
# Installs the carried wheels, makes `dibs` importable from this checkout, then bench/gpu_math_check.py:
# `dibs eval --engine hf --suite math5 --limit 50 --k 4` on CUDA and a few training steps of
# experiments/math-smoke.yaml, printing throughput (tokens/s) and peak CUDA memory. Extra arguments go to it.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .gpu/whl/*.whl || exit 1
# The repository root is the `dibs` package (pyproject package-dir): a link named dibs puts it on the path.
mkdir -p /tmp/dibspath && ln -sfn "$PWD" /tmp/dibspath/dibs
export PYTHONPATH=/tmp/site:/tmp/dibspath PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 bench/gpu_math_check.py --out "${OUT:-/tmp/gpu-math-check}" "$@"
