#!/usr/bin/env bash
# The GPU check of issue 21, in one run of about 3-4 minutes (each step has its own timeout
# and the script goes on after a failure):
#   1. the machine: GPUs, python, torch, triton
#   2. correctness on CUDA: the Triton point-wise kernels and the LSTM through them against
#      lstm_step and torch.nn.LSTM (cuDNN), then the CPU cell tests (the dispatch still holds)
#   3. lstm-mt bench --device cuda: ours against cuDNN, fp32 and bf16, with and without Triton
#   4. scripts/bench_train.py --device cuda: end-to-end target tokens/s of the base model,
#      fp32 and bf16, with the Triton kernels and without them (LSTM_MT_TRITON=0)
#
#     bash scripts/gpu_check.sh            # from the repository root; tables also go to $OUT/ if set
#
# Needs torch with CUDA, triton, sentencepiece, sacrebleu, tqdm, pytest; hydra-core and omegaconf
# for step 4 (installed from ./.whl/*.whl into a temporary folder when missing and present there).
# Data: $LSTM_MT_DATA_MIRROR, else the first of .devdata, shared/data, ../shared/data holding Multi30k.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT:-}"
PY="${PYTHON:-python3}"
STATUS=()

section() { printf '\n==================== %s ====================\n' "$*"; }
# run NAME SECONDS COMMAND...: run with a timeout, copy its output to $OUT/NAME.txt, record the result
run() {
    local name=$1 seconds=$2 start=$SECONDS rc
    shift 2
    if [ -n "$OUT_DIR" ]; then
        timeout -k 5 "$seconds" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
        rc=${PIPESTATUS[0]}
    else
        timeout -k 5 "$seconds" "$@" 2>&1
        rc=$?
    fi
    STATUS+=("$name: exit $rc ($((SECONDS - start)) s)$([ "$rc" = 124 ] && echo ', timed out')")
}

[ -n "$OUT_DIR" ] && mkdir -p "$OUT_DIR"

section "1. machine"
run machine 60 bash -c "nvidia-smi -L; nproc; $PY -c 'import sys, torch; print(\"python\", sys.version.split()[0]); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name()); \
import triton; print(\"triton\", triton.__version__)'"

if ! $PY -c "import hydra, omegaconf" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/lstm_mt_site .whl/*.whl \
        && export PYTHONPATH="/tmp/lstm_mt_site:$PYTHONPATH"
fi
if [ -z "${LSTM_MT_DATA_MIRROR:-}" ]; then
    for mirror in .devdata shared/data ../shared/data; do
        if [ -d "$mirror/multi30k/raw" ]; then export LSTM_MT_DATA_MIRROR="$PWD/$mirror"; break; fi
    done
fi

section "2a. CUDA correctness: Triton kernels, LSTM and LSTMCell against lstm_step and cuDNN"
run tests_cuda 150 $PY -m pytest -q -rs -p no:cacheprovider tests/test_triton_step.py
section "2b. the cell tests (CPU: the dispatch to the C kernel and tensor operations still holds)"
run tests_cell 90 $PY -m pytest -q -p no:cacheprovider tests/test_cell.py tests/test_native.py

section "3. lstm-mt bench --device cuda (ours vs cuDNN; fp32 and bf16; 'no Triton' = tensor operations)"
run bench_cuda 180 $PY -m lstm_mt bench --device cuda --repeats 15

section "4. scripts/bench_train.py --device cuda: base model, end-to-end target tokens/s"
if [ -n "${LSTM_MT_DATA_MIRROR:-}" ]; then
    TRAIN_ARGS=(--device cuda --precision fp32,bf16 --threads 4 --warmup 3 --steps 20 data.cache_dir=/tmp/lstm_mt_data)
    run bench_train 150 $PY scripts/bench_train.py "${TRAIN_ARGS[@]}"
    section "4b. the same without the Triton kernels (LSTM_MT_TRITON=0)"
    run bench_train_no_triton 120 env LSTM_MT_TRITON=0 $PY scripts/bench_train.py "${TRAIN_ARGS[@]}"
else
    echo "no Multi30k mirror found (set LSTM_MT_DATA_MIRROR): skipped"
    STATUS+=("bench_train: skipped, no data")
fi

section "summary"
printf '%s\n' "${STATUS[@]}" | tee ${OUT_DIR:+"$OUT_DIR/summary.txt"}
