#!/usr/bin/env bash
# Set up .venv and run the main job: the explicit LSTM against torch.nn.LSTM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lstm-mt --help
exec .venv/bin/lstm-mt bench --quick
