#!/usr/bin/env bash
# Set up .venv and run the whole test suite (real corpora from ../shared/data unless
# LSTM_MT_DATA_MIRROR points elsewhere). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
