"""Time lstm-mt's explicit LSTM against torch.nn.LSTM (same weights, same process).

Prints a table of median times and ratios (ours / torch) for full sequences
(forward+backward = "train", forward under no_grad = "infer") and for a decoder-style
loop of single steps against nn.LSTMCell, plus the peak memory of a training step: on
CUDA from the allocator, on CPU (Linux) as the peak resident memory the step adds, in a
fresh process whose allocator returns freed blocks to the system.

    lstm-mt bench                 # the standard shapes, CPU
    lstm-mt bench --quick         # the headline shape only (H=512, T=30, B=64)
    lstm-mt bench --device cuda   # on a GPU: against cuDNN, fp32 and bf16 autocast

A table times the base model's teacher-forced decoder (attention, input feeding) with our
cells against the same decoder with `torch.nn.LSTMCell` cells, training step and inference; on
CUDA the training step with and without CUDA graphs (`lstm_mt.lstm.graphed`) for both. A last
table times each cell variant (`lstm_mt.lstm.variants`) against the plain cell on the headline
shape, in the same run; layer norm also against the same equations written as a plain PyTorch
loop of `variant_step` under autograd.

On CUDA the tables also time our LSTM with its point-wise step in tensor operations
instead of the fused Triton kernel ("ours, no Triton"), in the same run, so the kernel's
own effect shows; the full-sequence tables likewise time it without CUDA graphs ("ours, no
graphs": the eager loops, `lstm_mt.lstm.cuda_graphs.off`), where graphs are on.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import yaml

from lstm_mt import memory
from lstm_mt.configuring import typed_config
from lstm_mt.decoder import Decoder
from lstm_mt.encoder import EncoderOutput
from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import LSTM, GateRecorder, LSTMCell, cuda_graphs, triton_step
from lstm_mt.lstm.variants import CellVariant, variant_step
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.runtime import check_device


@dataclass
class Shape:
    hidden: int
    layers: int
    bidirectional: bool
    length: int
    batch: int
    input: int = 256

    def label(self) -> str:
        kind = "bi" if self.bidirectional else "uni"
        return f"H={self.hidden} L={self.layers} {kind} T={self.length} B={self.batch}"


HEADLINE = Shape(hidden=512, layers=1, bidirectional=False, length=30, batch=64)
SHAPES = [
    HEADLINE,
    Shape(256, 1, False, 30, 64),
    Shape(1024, 1, False, 30, 64),
    Shape(512, 2, False, 30, 64),
    Shape(256, 2, True, 50, 32),
    Shape(512, 1, True, 10, 128),
]
BASE_MODEL = Path(__file__).resolve().parent / "configs" / "model" / "base.yaml"
CUDA_SHAPES = [HEADLINE, Shape(1024, 1, False, 50, 128)]
DECODER_SHAPES = [HEADLINE, Shape(512, 1, False, 30, 5), Shape(1024, 1, False, 30, 64)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median times of several functions, measured in alternation so drift hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def lstm_pair(shape: Shape, device: torch.device) -> tuple[torch.nn.LSTM, LSTM, torch.Tensor]:
    """A `torch.nn.LSTM` of ``shape``, our `LSTM` with a copy of its weights, and an input batch."""
    ref = torch.nn.LSTM(shape.input, shape.hidden, shape.layers, bidirectional=shape.bidirectional).to(device)
    return ref, LSTM.from_torch(ref), torch.randn(shape.length, shape.batch, shape.input, device=device)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast to ``precision`` ("bf16", "fp16") around forward passes; "fp32" leaves it off."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(device.type, dtype=dtypes.get(precision, torch.bfloat16), enabled=precision in dtypes)


def training_step(module: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> Callable[[], None]:
    """One forward and backward pass of ``module`` over ``x``, gradients cleared first."""

    def run() -> None:
        module.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            output, _ = module(x)
        output.float().sum().backward()

    return run


def fused_kernel_runs(device: torch.device) -> bool:
    """Whether our LSTM takes the Triton point-wise kernel on ``device`` (then also timed without it)."""
    return triton_step.usable(torch.empty(1, 1, device=device))


def without_fused_kernel(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with the point-wise step in tensor operations instead of the Triton kernel."""

    def run() -> None:
        with triton_step.only_on():
            fn()

    return run


def graphs_run(device: torch.device) -> bool:
    """Whether our LSTM layers run as CUDA graphs on ``device`` (then also timed without them)."""
    return device.type in cuda_graphs.DEVICE_TYPES and cuda_graphs.enabled()


def without_graphs(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with the layer recurrences in the eager loops instead of CUDA graphs."""

    def run() -> None:
        with cuda_graphs.off():
            fn()

    return run


def compared(
    make: Callable[[torch.nn.Module, bool], Callable[[], None]],
    ref: torch.nn.Module,
    ours: torch.nn.Module,
    device: torch.device,
    repeats: int,
    graphs: bool = False,
) -> dict[str, dict[str, float]]:
    """Train and inference times of ``make(module, train)`` for torch, ours and, where the Triton
    kernel runs, ours without it ("plain"), and with ``graphs`` where they run, ours without CUDA
    graphs ("eager"): ``{"train": {"torch": ms, "ours": ms, ...}, "infer": ...}``."""
    times = {}
    for kind, train in (("train", True), ("infer", False)):
        fns = {"torch": make(ref, train), "ours": make(ours, train)}
        if fused_kernel_runs(device):
            fns["plain"] = without_fused_kernel(make(ours, train))
        if graphs and graphs_run(device):
            fns["eager"] = without_graphs(make(ours, train))
        times[kind] = interleaved(fns, device, repeats)
    return times


def bench_sequence(shape: Shape, device: torch.device, repeats: int, precision: str = "fp32") -> dict[str, dict]:
    """Train (fwd+bwd) and inference (fwd) times for full sequences; see `compared`."""
    ref, ours, x = lstm_pair(shape, device)

    def make(module: torch.nn.Module, train: bool) -> Callable[[], None]:
        if train:
            return training_step(module, x, precision)

        def infer() -> None:
            with torch.no_grad(), autocast(device, precision):
                module(x)

        return infer

    return compared(make, ref, ours, device, repeats, graphs=True)


def bench_decoder_steps(shape: Shape, device: torch.device, repeats: int, precision: str = "fp32") -> dict[str, dict]:
    """A teacher-forced decoder loop of single steps, train (fwd+bwd) and inference; see `compared`."""
    ref = torch.nn.LSTMCell(shape.input, shape.hidden).to(device)
    ours = LSTMCell.from_torch(ref)
    xs = torch.randn(shape.length, shape.batch, shape.input, device=device)

    def make(cell: torch.nn.Module, backward: bool) -> Callable[[], None]:
        def run() -> None:
            cell.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(backward):
                with autocast(device, precision):
                    h = xs.new_zeros(shape.batch, shape.hidden)
                    c = torch.zeros_like(h)
                    total = xs.new_zeros((), dtype=torch.float32)
                    for x in xs:
                        h, c = cell(x, (h, c))
                        total = total + h.float().sum()
                if backward:
                    total.backward()

        return run

    return compared(make, ref, ours, device, repeats)


class TorchCell(torch.nn.LSTMCell):
    """`torch.nn.LSTMCell` where the decoder's `StackedLSTMCells` takes our `LSTMCell`: no masks, no prepared weights."""

    def forward(self, x, state=None, noise=None, weights=None):
        return super().forward(x, state)

    def step_weights(self, device_type: str) -> None:
        return None

    def sequence_noise(self, x: torch.Tensor) -> None:
        return None


def decoder_pair(batch: int, steps: int, device: torch.device) -> tuple[Decoder, Decoder, Callable[[], tuple]]:
    """The base model's decoder (configs/model/base.yaml, 8,000 target pieces) with our cells, a copy with
    `TorchCell` (cuDNN's point-wise kernel) in their place, and a maker of one batch's inputs (``steps``
    targets, as many source positions)."""
    torch.manual_seed(0)
    config = typed_config(ModelConfig, yaml.safe_load(BASE_MODEL.read_text()), str(BASE_MODEL))
    model = build_model(config, 8000, 8000)
    ours = cast(Decoder, model.decoder).to(device).train()
    ref = copy.deepcopy(ours)
    for index, layer in enumerate(ours.cells.layers):
        cell = cast(LSTMCell, layer)
        torch_cell = TorchCell(cell.input_size, cell.hidden_size).to(device)
        torch_cell.load_state_dict(cell.state_dict())
        ref.cells.layers[index] = torch_cell
    memory_size = model.encoder.output_size

    def batch_inputs() -> tuple:
        tgt_in = torch.randint(4, 8000, (batch, steps), device=device)
        memory = torch.randn(batch, steps, memory_size, device=device, requires_grad=True)
        final = [torch.randn(batch, config.encoder_layers, memory_size, device=device) for _ in range(2)]
        mask = torch.ones(batch, steps, dtype=torch.bool, device=device)
        return tgt_in, EncoderOutput(memory, mask, *final)

    return ref, ours, batch_inputs


def bench_decoder(batch: int, steps: int, device: torch.device, repeats: int, precision: str) -> dict[str, float]:
    """The base model's teacher-forced decoder, a training step (forward and backward) and inference, with
    `TorchCell` ("torch") and with ours; where CUDA graphs run, each training step also without them ("eager")."""
    ref, ours, batch_inputs = decoder_pair(batch, steps, device)
    tgt_in, encoder_out = batch_inputs()

    def train(decoder: Decoder) -> Callable[[], None]:
        def run() -> None:
            decoder.zero_grad(set_to_none=True)
            with autocast(device, precision):
                hidden, _ = decoder(tgt_in, encoder_out)
            hidden.float().sum().backward()

        return run

    def infer(decoder: Decoder) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast(device, precision):
                decoder.eval()(tgt_in, encoder_out)
            decoder.train()

        return run

    fns = {"train torch": train(ref), "train ours": train(ours)}
    if graphs_run(device):
        fns.update({"train torch eager": without_graphs(train(ref)), "train ours eager": without_graphs(train(ours))})
    times = interleaved(fns, device, repeats)
    times.update(interleaved({"infer torch": infer(ref), "infer ours": infer(ours)}, device, repeats))
    return times


def print_decoder(device: torch.device, repeats: int, precisions: list[str], batch: int = 64, steps: int = 30) -> None:
    """The teacher-forced decoder table: ours against the same decoder with `TorchCell`, graphed and eager."""
    graphs = graphs_run(device)
    print(f"\nTeacher-forced decoder (base model: 2 layers H=512, Bahdanau attention, input feeding), B={batch}")
    print(f"T={steps} S={steps}, ours against the same decoder with torch.nn.LSTMCell cells (ratio ours / torch):\n")
    eager = " | train torch, no graphs | train ours, no graphs | ratio" if graphs else ""
    print(f"| precision | train torch | train ours | ratio{eager} | infer torch | infer ours | ratio |")
    print("|---" * (7 + 3 * graphs) + "|")
    for precision in precisions:
        t = bench_decoder(batch, steps, device, repeats, precision)
        cells = [f"{t['train torch']:.2f}", f"{t['train ours']:.2f}", f"{t['train ours'] / t['train torch']:.2f}×"]
        if graphs:
            cells += [f"{t['train torch eager']:.2f}", f"{t['train ours eager']:.2f}"]
            cells.append(f"{t['train ours eager'] / t['train torch eager']:.2f}×")
        cells += [f"{t['infer torch']:.2f}", f"{t['infer ours']:.2f}", f"{t['infer ours'] / t['infer torch']:.2f}×"]
        print(f"| {precision} | {' | '.join(cells)} |", flush=True)


def bench_recording(shape: Shape, device: torch.device, repeats: int) -> dict[str, float]:
    """Forward (inference) time with gate recording off, as always, and on (`GateRecorder`)."""
    ours = LSTM(shape.input, shape.hidden, shape.layers, bidirectional=shape.bidirectional).to(device)
    x = torch.randn(shape.length, shape.batch, shape.input, device=device)

    def infer(record: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                if record:
                    with GateRecorder():
                        ours(x)
                else:
                    ours(x)

        return run

    return interleaved({"off": infer(False), "on": infer(True)}, device, repeats)


def peak_memory_mb(shape: Shape, device: torch.device, precision: str = "fp32") -> tuple[float, float]:
    """Peak CUDA memory (MB) of one training step, torch then ours."""
    ref, ours, x = lstm_pair(shape, device)
    peaks = []
    for module in (ref, ours):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        training_step(module, x, precision)()
        sync(device)
        peaks.append(torch.cuda.max_memory_allocated(device) / 2**20)
    return peaks[0], peaks[1]


# glibc: every block of 64 KiB or more gets its own mapping, returned to the system when freed,
# so the resident set follows the memory actually in use.
_MMAP_EVERY_BLOCK = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_cpu_memory_mb(shape: Shape) -> tuple[float, float] | None:
    """Peak resident memory (MB) one training step adds on CPU, torch then ours; None off Linux."""
    if not memory.peak_resettable():
        return None
    probe = [sys.executable, "-m", "lstm_mt.bench", "--memory-probe", json.dumps(dataclasses.asdict(shape))]
    env = {**os.environ, **_MMAP_EVERY_BLOCK, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return None
    torch_mb, ours_mb = json.loads(done.stdout.splitlines()[-1])
    return torch_mb, ours_mb


def _memory_probe(shape: Shape, repeats: int = 3) -> None:
    """In the probe process: print ``[torch MB, ours MB]``, each the median over a few training steps."""
    ref, ours, x = lstm_pair(shape, torch.device("cpu"))
    peaks = []
    for module in (ref, ours):
        step = training_step(module, x)
        step()  # warm-up: lazily built state (packed weights, the compiled kernel) is not the step's
        peaks.append(statistics.median(_added_peak_mb(step) for _ in range(repeats)))
    print(json.dumps(peaks))


def _added_peak_mb(fn: Callable[[], None]) -> float:
    """How far ``fn`` raises the resident set above where it started (MB)."""
    gc.collect()
    memory.reset_peak_resident()
    before = memory.resident_mib()
    fn()
    peak = memory.peak_resident_mib()
    if before is None or peak is None:
        raise RuntimeError("/proc/self/status has no VmRSS or VmHWM")
    return peak - before


def main(argv: list[str] | None = None) -> None:
    """`lstm-mt bench`: print the comparison tables."""
    parser = argparse.ArgumentParser(
        prog="lstm-mt bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="only the headline shape")
    parser.add_argument(
        "--precision", default=None, help="comma-separated fp32, bf16, fp16 (default: fp32 on CPU, fp32,bf16 on CUDA)"
    )
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: the CPU memory measurement
    args = parser.parse_args(argv)
    if args.memory_probe:
        _memory_probe(Shape(**json.loads(args.memory_probe)))
        return
    if args.repeats < 1:
        raise LstmMtError(f"--repeats={args.repeats}: must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise LstmMtError(f"--threads={args.threads}: must be at least 1")
    device = check_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    precisions = (args.precision or ("fp32,bf16" if cuda else "fp32")).split(",")
    where = torch.cuda.get_device_name(device) if cuda else f"threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, device {device} ({where}), median of {args.repeats}, times in ms")
    if cuda:
        fused = "Triton point-wise kernel" if fused_kernel_runs(device) else "no Triton: tensor operations"
        print(f"torch = torch.nn.LSTM / nn.LSTMCell (cuDNN); ours: {fused}; TF32 off")
        torch.backends.cuda.matmul.allow_tf32 = False  # both sides in true fp32
        torch.backends.cudnn.allow_tf32 = False

    shapes = [HEADLINE] if args.quick else (CUDA_SHAPES if cuda else SHAPES)
    for precision in precisions:
        print(f"\nFull sequences, {precision}:\n")
        print_header(device, "train peak MB torch | ours", graphs=True)
        for shape in shapes:
            t = bench_sequence(shape, device, args.repeats, precision)
            peaks = peak_memory_mb(shape, device, precision) if cuda else peak_cpu_memory_mb(shape)
            memory = "n/a | n/a" if peaks is None else "{:.0f} | {:.0f}".format(*peaks)
            print(f"| {shape.label()} | {timing_cells(t)} | {memory} |", flush=True)

    print("\nGate recording (lstm-mt inspect): forward time with recording off (the normal path) and on:\n")
    print("| shape | off | on | on / off |")
    print("|---|---|---|---|")
    t_rec = bench_recording(HEADLINE, device, args.repeats)
    print(f"| {HEADLINE.label()} | {t_rec['off']:.1f} | {t_rec['on']:.1f} | {t_rec['on'] / t_rec['off']:.2f}× |")

    for precision in precisions:
        print(f"\nDecoder-style loop of single steps (LSTMCell vs nn.LSTMCell), {precision}:\n")
        print_header(device)
        for shape in [HEADLINE] if args.quick else DECODER_SHAPES:
            t = bench_decoder_steps(shape, device, args.repeats, precision)
            print(f"| {shape.label()} | {timing_cells(t)} |", flush=True)

    print_decoder(device, args.repeats, precisions, **({"batch": 4, "steps": 5} if args.quick and not cuda else {}))
    print_variants(HEADLINE, device, args.repeats)


VARIANTS = {
    "recurrent_dropout=0.25": CellVariant(recurrent_dropout=0.25),
    "zoneout_c=zoneout_h=0.1": CellVariant(zoneout_c=0.1, zoneout_h=0.1),
    "peepholes": CellVariant(peepholes=True),
    "coupled_gates": CellVariant(coupled_gates=True),
    "layer_norm": CellVariant(layer_norm=True),
}


def bench_variants(shape: Shape, device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """Per variant: training step and inference (evaluation mode) of the plain LSTM and the variant's, interleaved.

    One layer, one direction (of ``shape``'s sizes). For layer norm also ``reference_train``: a
    training step of `variant_step` looped over the steps. Where CUDA graphs run, also the variant's
    without them (``variant_train_eager``, ``variant_infer_eager``).
    """
    shape = dataclasses.replace(shape, layers=1, bidirectional=False)
    x = torch.randn(shape.length, shape.batch, shape.input, device=device)

    def build(variant: CellVariant) -> LSTM:
        torch.manual_seed(0)
        return LSTM(shape.input, shape.hidden, shape.layers, bidirectional=shape.bidirectional, variant=variant).to(
            device
        )

    def infer(module: LSTM) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                module.eval()(x)

        return run

    plain = build(CellVariant())
    results = {}
    for name, variant in VARIANTS.items():
        ours = build(variant)
        train = {"plain_train": training_step(plain.train(), x), "variant_train": training_step(ours.train(), x)}
        inference = {"plain_infer": infer(plain), "variant_infer": infer(ours)}
        if variant.layer_norm:
            train["reference_train"] = _step_by_step_training(ours.cells()[0][0], x)
        if graphs_run(device):
            train["variant_train_eager"] = without_graphs(train["variant_train"])
            inference["variant_infer_eager"] = without_graphs(inference["variant_infer"])
        t = interleaved(train, device, repeats)
        t.update(interleaved(inference, device, repeats))
        plain.train(), ours.train()
        results[name] = t
    return results


def _step_by_step_training(cell: LSTMCell, x: torch.Tensor) -> Callable[[], None]:
    """A training step of ``cell``'s equations as plain PyTorch: `variant_step` per time step, autograd's backward."""

    def run() -> None:
        cell.zero_grad(set_to_none=True)
        h = c = x.new_zeros(x.shape[1], cell.hidden_size)
        outputs = []
        for x_t in x:
            h, c, _ = variant_step(cell, x_t, h, c)
            outputs.append(h)
        torch.stack(outputs).sum().backward()

    return run


def print_variants(shape: Shape, device: torch.device, repeats: int) -> None:
    """The variants table: ratios to the plain cell (and layer norm's to the step-by-step PyTorch loop)."""
    shape = dataclasses.replace(shape, layers=1, bidirectional=False)
    print(f"\nCell variants, {shape.label()}, against the plain cell in the same run (training in train mode,")
    print("inference in eval mode); layer norm also against its equations as a PyTorch loop (variant_step):\n")
    graphs = graphs_run(device)
    eager = " | variant, no graphs" if graphs else ""
    columns = f"train plain | train variant | ratio{eager} | infer plain | infer variant | ratio{eager}"
    print(f"| variant | {columns} | train PyTorch loop | ours / loop |")
    print("|---" * (9 + 2 * graphs) + "|")
    for name, t in bench_variants(shape, device, repeats).items():
        cells = []
        for kind in ("train", "infer"):
            cells += [f"{t[f'plain_{kind}']:.1f}", f"{t[f'variant_{kind}']:.1f}"]
            cells.append(f"{t[f'variant_{kind}'] / t[f'plain_{kind}']:.2f}×")
            cells += [f"{t[f'variant_{kind}_eager']:.1f}"] if graphs else []
        loop = t.get("reference_train")
        cells += ["-", "-"] if loop is None else [f"{loop:.1f}", f"{t['variant_train'] / loop:.2f}×"]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def print_header(device: torch.device, extra: str = "", graphs: bool = False) -> None:
    """The header of a timing table (with the no-Triton columns where the kernel runs, and with
    ``graphs`` the no-graphs columns where graphs run)."""
    kind = " | ours, no Triton" if fused_kernel_runs(device) else ""
    kind += " | ours, no graphs" if graphs and graphs_run(device) else ""
    columns = [f"train torch | train ours | ratio{kind}", f"infer torch | infer ours | ratio{kind}"]
    header = "| shape | " + " | ".join(columns) + (f" | {extra}" if extra else "") + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))


def timing_cells(t: dict[str, dict[str, float]]) -> str:
    """``torch | ours | ours/torch`` (and ``ours, no Triton``, ``ours, no graphs`` where timed) for train, then inference."""
    cells = []
    for kind in ("train", "infer"):
        times = t[kind]
        cells += [f"{times['torch']:.2f}", f"{times['ours']:.2f}", f"{times['ours'] / times['torch']:.2f}×"]
        cells += [f"{times[column]:.2f}" for column in ("plain", "eager") if column in times]
    return " | ".join(cells)


if __name__ == "__main__":
    main()
