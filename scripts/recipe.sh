#!/usr/bin/env bash
# One command per result: train a recipe of lstm_mt/configs/experiment/, average its last 5
# checkpoints, choose checkpoint (best.pt or the average) and decoding (beam size x length
# penalty) on the valid split only, then score the test splits (sacreBLEU with signatures,
# chrF, the Multi30k papers' lowercased tokenized BLEU) and write runs/RECIPE/results.json.
#
#   bash scripts/recipe.sh multi30k_en_de                # after scripts/setup.sh
#   bash scripts/recipe.sh multi30k_de_en device=cuda    # extra arguments go to `lstm-mt train`
#
# Resumable: run the same command again after a stop; training continues from the newest
# checkpoint of runs/RECIPE (RUN_DIR= chooses another folder) and the later steps are redone.
# The device for decoding is the device= argument (default auto: CUDA when available).
set -euo pipefail
usage="usage: bash scripts/recipe.sh RECIPE [train overrides...]   (RECIPE: a file of lstm_mt/configs/experiment/)"
recipe=${1:?$usage}
shift
cd "$(dirname "$0")/.."
if [ ! -f "lstm_mt/configs/experiment/$recipe.yaml" ]; then
    echo "error: lstm_mt/configs/experiment/$recipe.yaml not found; $usage" >&2
    exit 2
fi
if [ -z "${LSTM_MT_DATA_MIRROR:-}" ] && [ -d ../shared/data/multi30k ]; then
    export LSTM_MT_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
bin=$([ -x .venv/bin/lstm-mt ] && echo .venv/bin/ || true)   # the project's venv, else PATH
run=${RUN_DIR:-runs/$recipe}
device=auto
for arg in "$@"; do
    case $arg in device=*) device=${arg#device=} ;; esac
done

# 1. train (the wall-clock time of each invocation goes to train_times.jsonl, even when stopped)
mkdir -p "$run"
start=$SECONDS
status=0
"${bin}lstm-mt" train +experiment="$recipe" hydra.run.dir="$run" train.resume=auto "$@" || status=$?
echo "{\"seconds\": $((SECONDS - start)), \"status\": $status}" >> "$run/train_times.jsonl"
[ "$status" -eq 0 ] || exit "$status"

# 2. average the 5 newest step checkpoints (best.pt stays as it is)
"${bin}lstm-mt" average dir="$run/checkpoints" pattern='step_*.pt' last=5 output="$run/average.pt"

# 3. choose on val only, 4. score the test splits with that choice
"${bin}lstm-mt" recipe tune "$run" --device "$device"
"${bin}lstm-mt" recipe test "$run" --device "$device"
