#!/usr/bin/env bash
# Install Debian's Chromium for the browser test of `lstm-mt serve` (tests/test_serve_page.py),
# only where it is missing and apt-get can be used (root, or sudo without a password).
# Idempotent; never fails the caller: without a browser that one test is skipped, saying why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here; the browser test will be skipped (install Chromium to run it)" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "note: apt-get needs root here; the browser test will be skipped (install chromium to run it)" >&2
    exit 0
fi
echo "installing chromium (apt-get) for the browser test..." >&2
if ! { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium; } >/dev/null; then
    echo "warning: apt-get could not install chromium; the browser test will be skipped" >&2
fi
exit 0
