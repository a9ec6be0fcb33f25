#!/usr/bin/env bash
# GPU smoke test, for the first GPU host a release meets (none is lent to CI). From a
# checkout: `bash scripts/gpu_smoke.sh`. Installs sharp-serve[gpu,test] into .venv-gpu
# (vLLM 0.32 from the package index, CUDA build), then runs the engine tests that hold
# on any accelerator, on whatever this host has:
#   - the tiny Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision builds and the proxy model:
#     identity with stock, exact counts, outside-reference agreement, a server round
#     trip with the openai client;
#   - once per model runner (V1, which the image pins, and V2, which vLLM 0.32 picks on
#     a GPU by default: docs/patches.md, entry 14);
#   - again with tensor parallelism 2 when two GPUs are visible.
# Exit status: 0 when every pass is green. Send the summary lines with the report.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -e '.[gpu,test]'
fi
"$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'"
TESTS=(
    tests/plugin/test_engine_identity.py
    tests/plugin/test_engine_pruning.py
    tests/plugin/test_engine_reference.py
    tests/plugin/test_qwen3_vl.py
    tests/plugin/test_llava_onevision.py
    tests/plugin/test_register.py
    tests/server/test_families.py
    tests/server/test_server_e2e.py
)
status=0
run() {
    echo "== $*"
    env "$@" "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || status=1
}
run VLLM_USE_V2_MODEL_RUNNER=0
run VLLM_USE_V2_MODEL_RUNNER=1
gpus=$("$VENV/bin/python" -c "import torch; print(torch.cuda.device_count())")
if (( gpus >= 2 )); then
    run VLLM_USE_V2_MODEL_RUNNER=0 SHARP_TEST_TENSOR_PARALLEL=2
else
    echo "== tensor parallel 2: skipped, $gpus GPU visible"
fi
exit $status
