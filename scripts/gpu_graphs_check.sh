#!/usr/bin/env bash
# The GPU check of CUDA graphs over the layer recurrence (issue 21, lstm_mt/lstm/cuda_graphs.py) in
# at most $GPU_GRAPHS_BUDGET seconds (default 300): each step has its own timeout, cut to what is
# left of the budget, and the script goes on after a failure. Most important first:
#   1. the machine: GPUs, python, torch, triton
#   2. smoke: a 2-layer bidirectional LSTM, plain and with variant cells (layer norm; all variants at once),
#      padded batches sharing a bucket, training step with graphs on and off: the largest output/gradient
#      difference and the graphs captured (works without pytest)
#   3. pytest tests/test_graphed.py (the decoder's teacher forcing graphed against its eager loop), then
#      tests/test_cuda_graphs.py tests/test_triton_step.py (4 processes with pytest-xdist): graphed against
#      eager (outputs, every gradient, padding, bf16, inference, LRU, each variant), the kernels and the LSTM
#      against cuDNN
#   4. the bench's variants table alone (lstm_mt.bench.print_variants, H=512 T=30 B=64, 10 repeats):
#      each variant graphed and "variant, no graphs" (the eager loops) against the graphed plain cell
#   5. lstm-mt bench --device cuda --repeats 10: the full-sequence tables have "ours" (graphs on) and
#      "ours, no graphs" (the eager loops) in the same run; ratio is ours / cuDNN (the variants table again last)
#   6. scripts/profile_lstm.py: wall against GPU-busy time and GPU operations, with and without graphs
#
#     bash scripts/gpu_graphs_check.sh     # from anywhere; each step's output also goes to $OUT/<step>.txt
set -u
BUDGET="${GPU_GRAPHS_BUDGET:-300}"
source "$(dirname "$0")/gpu_common.sh"

section "1. machine"
machine 10

section "2. smoke: graphed vs eager training step (2-layer BiLSTM, H=64, padded batches in one bucket; variants)"
run smoke 60 $PY -c "
import contextlib, torch
from lstm_mt.lstm import LSTM, cuda_graphs
from lstm_mt.lstm.variants import CellVariant
torch.backends.cuda.matmul.allow_tf32 = False
every = CellVariant(True, 0.25, 0.0, 0.1, 0.1, True, True)
for name, variant in [('plain', None), ('layer_norm', CellVariant(layer_norm=True)), ('all variants', every)]:
    torch.manual_seed(0)
    lstm = LSTM(32, 64, 2, bidirectional=True, variant=variant).cuda()
    worst = 0.0
    for seed, (steps, batch) in enumerate([(30, 64), (29, 60), (31, 57), (30, 64)]):  # all in the bucket 32 x 64
        x = torch.randn(steps, batch, 32, device='cuda', requires_grad=True)
        lengths = torch.randint(1, steps + 1, (batch,))
        lengths[0] = steps
        runs = []
        for off in (False, True):
            torch.manual_seed(seed)  # the same dropout masks and zoneout in both runs
            with cuda_graphs.off() if off else contextlib.nullcontext():
                out, (h, c) = lstm(x, lengths)
                loss = (out * torch.linspace(-1, 1, out.shape[-1], device='cuda')).sum() + h.sum() + c.sum()
                runs.append([out, h, c, *torch.autograd.grad(loss, [x, *lstm.parameters()])])
        scale = max(1.0, max(t.abs().max().item() for t in runs[1]))
        worst = max(worst, max((a - b).abs().max().item() for a, b in zip(*runs)) / scale)
    kept = sorted(str(k[:4]) for k in cuda_graphs.graph_cache().graphs)
    cuda_graphs.graph_cache().graphs.clear()
    print(name, 'graphs kept:', kept)
    print(f'{name}: largest |graphed - eager| / max(1, |eager|) over outputs and gradients: {worst:.2e}',
          'OK' if worst < 1e-3 else 'TOO LARGE')
"

section "3. CUDA tests: graphs against the eager loops; Triton kernels and LSTM against cuDNN"
tests graphed_tests 60 -x tests/test_graphed.py
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 4")
tests tests 120 $XDIST tests/test_cuda_graphs.py tests/test_triton_step.py  # without pytest, step 2 is the check

section "4. variants table (H=512 T=30 B=64, 1 layer): graphed variants, and without graphs, against the plain cell"
run variants 20 $PY -c "
import torch
from lstm_mt import bench
torch.backends.cuda.matmul.allow_tf32 = False
bench.print_variants(bench.HEADLINE, torch.device('cuda'), 10)
"

section "5. lstm-mt bench --device cuda --repeats 10 ('ours' with graphs, 'ours, no graphs' the eager loops)"
run bench 35 $PY -m lstm_mt bench --device cuda --repeats 10

section "6. scripts/profile_lstm.py (H=512 T=30 B=64 fp32): wall vs GPU-busy time, with and without graphs"
run profile 15 $PY scripts/profile_lstm.py

summary
