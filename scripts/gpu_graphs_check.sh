#!/usr/bin/env bash
# The GPU check of CUDA graphs over the layer recurrence (issue 21, lstm_mt/lstm/cuda_graphs.py) in
# at most $GPU_GRAPHS_BUDGET seconds (default 150): each step has its own timeout, cut to what is
# left of the budget, and the script goes on after a failure. Most important first:
#   1. the machine: GPUs, python, torch, triton
#   2. smoke: a 2-layer bidirectional LSTM, padded batches sharing a bucket, training step with graphs
#      on and off: the largest output/gradient difference and the graphs captured (works without pytest)
#   3. pytest tests/test_cuda_graphs.py tests/test_triton_step.py: graphed against eager (outputs, every
#      gradient, padding, bf16, inference, LRU), the kernels and the LSTM against cuDNN
#   4. lstm-mt bench --device cuda --repeats 10: the full-sequence tables have "ours" (graphs on) and
#      "ours, no graphs" (the eager loops) in the same run; ratio is ours / cuDNN
#   5. scripts/profile_lstm.py: wall against GPU-busy time and GPU operations, with and without graphs
#
#     bash scripts/gpu_graphs_check.sh     # from anywhere; each step's output also goes to $OUT/<step>.txt
set -u
BUDGET="${GPU_GRAPHS_BUDGET:-150}"
source "$(dirname "$0")/gpu_common.sh"

section "1. machine"
machine 10

section "2. smoke: graphed vs eager training step (2-layer BiLSTM, H=64, padded batches in one bucket)"
run smoke 20 $PY -c "
import contextlib, torch
from lstm_mt.lstm import LSTM, cuda_graphs
torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(0)
lstm = LSTM(32, 64, 2, bidirectional=True).cuda()
worst = 0.0
for steps, batch in [(30, 64), (29, 60), (31, 57), (30, 64)]:  # all in the bucket 32 x 64
    x = torch.randn(steps, batch, 32, device='cuda', requires_grad=True)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps
    runs = []
    for off in (False, True):
        with cuda_graphs.off() if off else contextlib.nullcontext():
            out, (h, c) = lstm(x, lengths)
            loss = (out * torch.linspace(-1, 1, out.shape[-1], device='cuda')).sum() + h.sum() + c.sum()
            runs.append([out, h, c, *torch.autograd.grad(loss, [x, *lstm.parameters()])])
    worst = max(worst, max((a - b).abs().max().item() for a, b in zip(*runs)))
print('graphs kept:', sorted(k[:4] for k in cuda_graphs.graph_cache().graphs))
print(f'largest |graphed - eager| over outputs and gradients: {worst:.2e}', 'OK' if worst < 1e-4 else 'TOO LARGE')
"

section "3. CUDA tests: graphs against the eager loops; Triton kernels and LSTM against cuDNN"
tests tests 50 -x tests/test_cuda_graphs.py tests/test_triton_step.py  # without pytest, step 2 is the check

section "4. lstm-mt bench --device cuda --repeats 10 ('ours' with graphs, 'ours, no graphs' the eager loops)"
run bench 50 $PY -m lstm_mt bench --device cuda --repeats 10

section "5. scripts/profile_lstm.py (H=512 T=30 B=64 fp32): wall vs GPU-busy time, with and without graphs"
run profile 20 $PY scripts/profile_lstm.py

summary
