"""The LSTM, written gate by gate: `LSTMCell` for one step and `LSTM` for whole sequences.

Modules, in the order a reader meets them:

    equations.py   the equations (first screen), `lstm_step`, GATE_NAMES, the weight layout
    modules.py     LSTMCell and LSTM: layers, directions, padding, from_torch/to_torch
    recording.py   GateRecorder / GateRecord: every gate of every call, for `lstm-mt inspect`
    padding.py     lengths, reversal within lengths, PackedSequence round trips
    fastpath.py    the fast path's two entry points: cell_step and run_layer
    inference.py   no-grad CPU float32 route: a layer in one C call on MKL's products, else W·[h, x] on oneDNN per step
    int8.py        that product with int8 weights, for precision=int8 decoding
    autograd.py    training route: autograd Functions with hand-written backward passes
    cuda_graphs.py the layer recurrence on CUDA replayed from CUDA graphs, padded to buckets
    graphed.py     any differentiable call (the decoder's teacher forcing) replayed from CUDA graphs, both passes
    pointwise.py   gates, C and h from the pre-activations (and back), kernel choice
    onednn.py      oneDNN products and packed weights (PyTorch private ops)
    mkl.py         MKL's packed products (the BLAS in PyTorch's x86 wheels), for the inference layer
    weight_cache.py weights packed for a kernel library, kept until they change
    native.py      the point-wise steps compiled from C (csrc/lstm_cell.c, csrc/lstm_variants.c), CPU float32
    widening.py    the float32 C step for CPU bf16/fp16 tensors: widened in, rounded back out
    masks.py       random 0/1 masks for dropout and zoneout, fast on CPU (compiled hash, else 16-bit lanes)
    variants.py    cell variants (layer norm, dropout, zoneout, peepholes, CIFG): equations, variant_step
    variant_autograd.py   their layer recurrence with hand-written backward; the input's block layer norm
    variant_pointwise.py  their point-wise step: the C kernel, else tensor operations (the reference)
    triton_step.py the point-wise step on CUDA: launches the Triton kernels of triton_kernels.py
"""

from lstm_mt.lstm.equations import GATE_NAMES, GateActivations, lstm_step
from lstm_mt.lstm.modules import LSTM, LSTMCell
from lstm_mt.lstm.recording import GateRecord, GateRecorder

__all__ = ["GATE_NAMES", "LSTM", "GateActivations", "GateRecord", "GateRecorder", "LSTMCell", "lstm_step"]
