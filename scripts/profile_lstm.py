"""Where a step of the LSTM spends its time on CUDA: wall time, GPU-busy time and GPU operations.

Profiles one training step (forward and backward) and one inference pass of
`torch.nn.LSTM` (cuDNN) and of ours, with the Triton point-wise kernel and without it, and
without CUDA graphs (the eager loops), at the bench's headline shape (H=512, T=30, B=64). When
the wall time is far above the GPU-busy time, the step is bound by launching kernels from
Python, which CUDA graphs remove; the top kernels by GPU time follow for ours.

    python scripts/profile_lstm.py [--hidden 512 --length 30 --batch 64] [--precision bf16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from lstm_mt.bench import Shape, autocast, graphs_run, lstm_pair, training_step, without_fused_kernel, without_graphs


def measure(fn: Callable[[], None], warmup: int = 3) -> tuple[float, float, int, torch.profiler.profile]:
    """Wall ms (synchronized), GPU-busy ms and GPU operations (kernels, copies, fills) of one call of ``fn``."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) * 1e3
    on_gpu = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.self_device_time_total for e in on_gpu) / 1e3
    return wall_ms, gpu_ms, sum(e.count for e in on_gpu), prof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16")
    args = parser.parse_args()
    device = torch.device("cuda")
    shape = Shape(args.hidden, 1, False, args.length, args.batch)
    ref, ours, x = lstm_pair(shape, device)

    def infer(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast(device, args.precision):
                module(x)

        return run

    print(f"{shape.label()} {args.precision} on {torch.cuda.get_device_name(device)}\n")
    print("| run | wall ms | GPU-busy ms | GPU operations |")
    print("|---|---|---|---|")
    top = None
    for kind, make in (("train", lambda m: training_step(m, x, args.precision)), ("infer", infer)):
        runs = [("cuDNN", make(ref)), ("ours", make(ours)), ("ours, no Triton", without_fused_kernel(make(ours)))]
        if graphs_run(device):
            runs.append(("ours, no graphs", without_graphs(make(ours))))
        for name, fn in runs:
            wall_ms, gpu_ms, launches, prof = measure(fn)
            print(f"| {kind} {name} | {wall_ms:.2f} | {gpu_ms:.2f} | {launches} |", flush=True)
            if (kind, name) == ("train", "ours"):
                top = prof
    if top is not None:
        print("\nours, training step, top kernels by GPU time:\n")
        print(top.key_averages().table(sort_by="self_device_time_total", row_limit=10))


if __name__ == "__main__":
    main()
