#!/usr/bin/env bash
# Set up .venv and run the main job: train a small de->en model on Multi30k for a few
# minutes (train=quick), then translate with it and score it on the test sets (BLEU, chrF).
# Corpora come from $LSTM_MT_DATA_MIRROR, else ../shared/data if present, else are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${LSTM_MT_DATA_MIRROR:-}" ] && [ -d ../shared/data/multi30k ]; then
    export LSTM_MT_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
RUN=${RUN:-runs/quickstart}
.venv/bin/lstm-mt train train=quick hydra.run.dir="$RUN" train.resume=auto
echo "Ein Mann fährt mit dem Fahrrad durch die Stadt." | .venv/bin/lstm-mt translate checkpoint="$RUN/checkpoints/best.pt"
exec .venv/bin/lstm-mt evaluate checkpoint="$RUN/checkpoints/best.pt"
