#!/usr/bin/env bash
# The GPU check of issue 21 in one run of about 4 minutes, never more than $GPU_CHECK_BUDGET
# seconds (default 330): each step has its own timeout, cut to what is left of the budget, and
# the script goes on after a failure. Most important first:
#   1. the machine: GPUs, python, torch, triton
#   2. correctness on CUDA: the kernels' own check against float64 lstm_step (fp32, bf16, fp16),
#      then tests/test_triton_step.py (kernels, LSTM and LSTMCell against cuDNN) with pytest
#   3. lstm-mt bench --device cuda: ours against cuDNN, fp32 and bf16, with and without Triton
#   4. scripts/profile_lstm.py: wall time against GPU-busy time and GPU operations per step
#   5. scripts/bench_train.py --device cuda: end-to-end target tokens/s of the base model,
#      fp32 and bf16, with the Triton kernels and without them (LSTM_MT_TRITON=0)
#   6. the CPU cell tests (the dispatch to the C kernel and tensor operations still holds)
#
#     bash scripts/gpu_check.sh            # from anywhere; each step's output also goes to $OUT/<step>.txt
#
# Needs torch with CUDA, triton, sentencepiece, sacrebleu, tqdm; pytest for steps 2 and 6, hydra-core
# and omegaconf for step 5 (wheels in ./.whl/ are installed into a temporary folder when these are missing).
# Data: $LSTM_MT_DATA_MIRROR, else the first of .devdata, shared/data, ../shared/data holding Multi30k.
set -u
BUDGET="${GPU_CHECK_BUDGET:-330}"
source "$(dirname "$0")/gpu_common.sh"

section "1. machine"
machine 30

section "2a. the Triton kernels' own check on CUDA (against float64 lstm_step and its gradients)"
run kernel_check 90 $PY -c "import torch; from lstm_mt.lstm import triton_step; device = torch.device('cuda')
for dtype in triton_step.DTYPES:
    print(dtype, 'agrees' if triton_step.agrees_with_torch(device, dtype) else 'DISAGREES')
print('the LSTM takes the kernels on CUDA:', triton_step.usable(torch.zeros(2, 2, device=device)))"

section "2b. CUDA tests: kernels, LSTM and LSTMCell against lstm_step and cuDNN (padding, all gradients, bf16)"
tests tests_cuda 120 tests/test_triton_step.py

section "3. lstm-mt bench --device cuda (ours vs cuDNN; fp32 and bf16; 'no Triton' = tensor operations)"
run bench_cuda 150 $PY -m lstm_mt bench --device cuda --repeats 15

section "4. where the time goes: wall vs GPU-busy time of one step (scripts/profile_lstm.py)"
run profile 60 $PY scripts/profile_lstm.py

section "5. scripts/bench_train.py --device cuda: base model, end-to-end target tokens/s"
if [ -n "${LSTM_MT_DATA_MIRROR:-}" ]; then
    TRAIN_ARGS=(--device cuda --precision fp32,bf16 --threads 4 --warmup 3 --steps 20 data.cache_dir=/tmp/lstm_mt_data)
    run bench_train 120 $PY scripts/bench_train.py "${TRAIN_ARGS[@]}"
    section "5b. the same without the Triton kernels (LSTM_MT_TRITON=0)"
    run bench_train_no_triton 90 env LSTM_MT_TRITON=0 $PY scripts/bench_train.py "${TRAIN_ARGS[@]}"
else
    echo "no Multi30k mirror found (set LSTM_MT_DATA_MIRROR): skipped"
    STATUS+=("bench_train: skipped, no data")
fi

section "6. the cell tests on CPU (the dispatch to the C kernel and the tensor operations)"
tests tests_cell 60 tests/test_cell.py tests/test_native.py

summary
