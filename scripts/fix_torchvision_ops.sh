#!/usr/bin/env bash
# PyPI torchvision 0.28.0 is a +cu130 build whose _C.so cannot load beside the CPU torch,
# so its unguarded register_fake decorators raise "operator torchvision::nms does not
# exist" on import. Guard them; the pure-Python transforms keep working.
# Usage: scripts/fix_torchvision_ops.sh VENV_DIR   (idempotent)
set -euo pipefail
SP=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
sed -i 's/^@torch.library.register_fake(\(.*\))$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
    "$SP/torchvision/_meta_registrations.py"
