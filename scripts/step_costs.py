"""Host time per call of a decoder step on CUDA, and of its parts: where an eager step's time goes.

On a GPU a single LSTM step of a decoder is bound by the host: each kernel launch costs
microseconds of Python and driver time, more than the kernel runs. This times, per call and
without gradients, `torch.nn.LSTMCell`'s whole step, ours (weights prepared per step and once),
and the parts of ours: the two products, the Triton point-wise launch, the output buffers.
"host µs" is the time to issue 2,000 calls; "wall µs" includes waiting for the GPU at the end.

    python scripts/step_costs.py [--hidden 512 --input 256 --batch 64] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from lstm_mt.bench import sync
from lstm_mt.lstm import LSTMCell, pointwise, triton_step
from lstm_mt.lstm.autograd import CellStep


def per_call(fn: Callable[[], object], device: torch.device, calls: int) -> tuple[float, float]:
    """Microseconds per call to issue ``calls`` calls of ``fn``, and until the device has run them."""
    for _ in range(50):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    sync(device)
    return host, (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = torch.nn.LSTMCell(args.input, args.hidden).to(device)
    ours = LSTMCell.from_torch(ref)
    x = torch.randn(args.batch, args.input, device=device)
    h, c = (torch.randn(args.batch, args.hidden, device=device) for _ in range(2))
    with torch.no_grad():
        w = ours.step_weights()
        pre = torch.addmm(w.bias, x, w.weight_ih.t())
        c_out, h_out, tanh_c = (torch.empty_like(c) for _ in range(3))

        def products() -> None:
            torch.addmm(w.bias, x, w.weight_ih.t()).addmm_(h, w.weight_hh.t())

        calls: dict[str, Callable[[], object]] = {
            "nn.LSTMCell, whole step": lambda: ref(x, (h, c)),
            "ours, whole step, weights prepared per step": lambda: ours(x, (h, c)),
            "ours, whole step, weights prepared once": lambda: ours(x, (h, c), weights=w),
            "ours, CellStep.apply": lambda: CellStep.apply(x, h, c, w.weight_ih, w.weight_hh, w.bias, None, None),
            "ours, step_weights()": lambda: ours.step_weights(),
            "part: the two products (addmm, addmm_)": products,
            "part: point-wise step (pointwise.forward_step)": lambda: pointwise.forward_step(
                pre, c, pre, c_out, tanh_c, h_out
            ),
            "part: Triton launch with its checks": lambda: triton_step.forward(pre, c, c_out, h_out),
            "part: three output buffers (empty_like)": lambda: [torch.empty_like(c) for _ in range(3)],
        }
        print(f"H={args.hidden} input={args.input} B={args.batch} on {device}, no gradients, µs per call\n")
        print("| call | host µs | wall µs |\n|---|---:|---:|")
        for name, fn in calls.items():
            host, wall = per_call(fn, device, args.calls)
            print(f"| {name} | {host:.1f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
