#!/usr/bin/env bash
# The image's entrypoint: `sharp-serve` with the config named by $SHARP_SERVE_CONFIG, or
# by arguments (`docker run IMAGE --config /configs/mine.yaml`). Host and port come from
# $SHARP_SERVE_HOST / $SHARP_SERVE_PORT (the healthcheck probes that port), whatever the
# config says: inside a container the server must listen beyond loopback.
set -euo pipefail
listen=(--host "${SHARP_SERVE_HOST:-0.0.0.0}" --port "${SHARP_SERVE_PORT:-8000}")
if [[ $# -gt 0 ]]; then
    exec sharp-serve "${listen[@]}" "$@"
fi
exec sharp-serve "${listen[@]}" --config "${SHARP_SERVE_CONFIG}"
