#!/usr/bin/env bash
# lmms-eval 0.7.3 in its own venv (default .venv-lmms), for bench/lmms_eval_parity.py.
# Its own venv because it pins torch and transformers releases newer than vLLM 0.32's;
# it only talks HTTP to the server. With torch held at the CPU build on this machine's
# disk it is ~2.5 GB and ~2 min (without the constraint pip takes a 7 GB CUDA build).
# Usage: scripts/install_lmms_eval.sh [VENV_DIR]   (idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-lmms}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# filelock 4 dropped filelock._api, which lmms-eval 0.7.3 imports when it evaluates.
printf "torch==2.13.0\nfilelock<4\n" > "$constraints"
"$VENV/bin/pip" install -q -c "$constraints" "lmms-eval==0.7.3"
bash scripts/fix_torchvision_ops.sh "$VENV"
"$VENV/bin/python" -c "import lmms_eval.models.chat.openai; import importlib.metadata as m; print('lmms-eval', m.version('lmms-eval'))"
