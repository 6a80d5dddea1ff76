#!/usr/bin/env bash
# Create .venv (if missing) and install lstm-mt into it, editable, with the test, plot and serve extras.
# Idempotent: a second run only re-checks. Override the torch build with TORCH_SPEC, e.g.
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    # Installed first and pinned, so pip never swaps in a different (e.g. multi-GB CUDA) build.
    # shellcheck disable=SC2086
    "${PIP[@]}" install $TORCH_SPEC
fi
"${PIP[@]}" install -e ".[dev,plot,serve]"
