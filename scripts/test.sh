#!/usr/bin/env bash
# Set up .venv, run ruff (lint, format) and mypy, then the whole test suite (real corpora from ../shared/data unless
# LSTM_MT_DATA_MIRROR points elsewhere). Extra arguments go to pytest. Chromium (apt) is
# installed for the browser test of `lstm-mt serve` where it is missing and apt-get works.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_chromium.sh
.venv/bin/ruff check .            # lint (config in pyproject.toml)
.venv/bin/ruff format --check .   # formatting
.venv/bin/mypy                    # types of the whole package
exec .venv/bin/python -m pytest "$@"
