#!/usr/bin/env bash
# The first GPU run (bench/gpu.py says what it measures): on one 80 GB GPU with no
# network, at most 8 minutes (--minutes), results in bench/results/gpu/<model>.json.
# Needs this repository and a Python with vLLM 0.32 and this project: the Docker
# image's (docker run --gpus all -v "$PWD":/repo -w /repo --entrypoint bash sharp-serve
# scripts/gpu_bench.sh) or the install script's (.venv). `--tiny` rehearses every step
# on the CPU with tiny shapes (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export VLLM_HOST_IP=${VLLM_HOST_IP:-127.0.0.1} VLLM_ALLOW_INSECURE_SERIALIZATION=1
export HF_HUB_OFFLINE=1  # nothing comes from a hub: the models are built here
if [[ " $* " == *" --tiny "* ]]; then
    export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
fi
exec "$PY" -m bench.gpu "$@"
