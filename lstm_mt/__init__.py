"""lstm-mt: neural machine translation with an explicit, gate-by-gate LSTM.

Where things live (one module per concern, in the order a sentence travels):

    lstm/           LSTMCell and LSTM: the gate equations, their fast path, GateRecorder
    attention.py    Bahdanau and Luong (dot, general) attention
    encoder.py      embeddings, bidirectional LSTM encoder, bridge to the decoder
    decoder.py      attentional, input-feeding decoder with step() for search
    model.py        Seq2Seq and ModelConfig, built from config
    tokenizer.py    SentencePiece training, caching, encoding, decoding (SubwordConfig)
    data/           corpora (Multi30k, Tatoeba, custom), mirrors/downloads, batching
    config.py       the typed config of `lstm-mt train`
    train.py        the training loop (optim.py, loss.py, runtime.py beside it)
    checkpoint.py   atomic save, safe load, a run's step files, last/best links, resume lookup
    runlog.py       a run's metrics.jsonl (writer and reader), TensorBoard
    search.py       greedy and beam search (Hypothesis, Translation)
    topk.py         exact top-k and argmax over the vocabulary by blocks, for search
    ensemble.py     several checkpoints decoding as one; precision.py: fp32, bf16, int8 decoding
    translate.py    Translator and `lstm-mt translate`
    evaluate.py     `lstm-mt evaluate` (metrics.py: sacreBLEU, paper BLEU)
    recipe.py       result recipes: decoding tuned on val, test once
    average.py      checkpoint averaging; plotting.py: attention heatmaps
    inspection/     `lstm-mt inspect`: gates and attention, sentence by sentence
    serve/          `lstm-mt serve`: HTTP API, dynamic batching, the live page
    bench.py        `lstm-mt bench`; profiling.py: a training update's profile by category
    cli.py          the `lstm-mt` command (hydra_app.py runs each subcommand)

and underneath them all:

    errors.py       LstmMtError, the one-line error users see
    vocab.py        the special ids: pad=0, unk=1, bos=2, eos=3
    files.py        atomic_write, the one atomic file writer (a plain open()'s file mode)
    configuring.py  typed_config: config values checked against a dataclass schema
    ranges.py       the value ranges declared on schema fields, checked by typed_config
    cell.py         old import path: re-exports lstm/'s LSTMCell, LSTM, GateRecorder

The main classes are importable from the package itself (``from lstm_mt import LSTM``);
they are loaded on first use so that ``lstm-mt --help`` does not wait for PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LSTMCell": "lstm_mt.lstm",
    "LSTM": "lstm_mt.lstm",
    "Seq2Seq": "lstm_mt.model",
    "ModelConfig": "lstm_mt.model",
    "build_model": "lstm_mt.model",
    "LstmMtError": "lstm_mt.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lstm_mt' has no attribute {name!r}")
