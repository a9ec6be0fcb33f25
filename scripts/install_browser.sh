#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the /inspect page's browser test
# (tests/server/test_inspect_page.py). Idempotent; needs root or sudo when they are missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver \
    || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; }
/usr/bin/chromium --version
