"""Translate one sentence greedily and keep everything the LSTMs computed on the way.

`trace_sentence` runs a `Translator` (greedy) under a `GateRecorder`; `trace_translation` records
the model reading a sentence and writing a given translation (e.g. beam search's best). Both sort the records into
one `LayerTrace` per LSTM layer and direction, with every gate, cell state and output
as a ``[T, H]`` numpy array in the sentence's own time order, plus the attention and the
subword labels of both time axes. `SentenceTrace.arrays` flattens it all for ``.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np
import torch

from lstm_mt.data import collate_source
from lstm_mt.lstm import GateRecord, GateRecorder, LSTMCell
from lstm_mt.lstm.variants import VariantWeights
from lstm_mt.model import Seq2Seq
from lstm_mt.search import SearchConfig, Translation
from lstm_mt.tokenizer import Tokenizer
from lstm_mt.translate import Translator
from lstm_mt.vocab import BOS_ID, EOS_ID

DIRECTIONS = ("forward", "backward")
STEP_ARRAYS = ("i", "f", "g", "o", "c", "h")  # per step; g is the candidate C̃
EOS_PIECE = "</s>"


class LayerId(NamedTuple):
    """Which LSTM layer: ``side`` encoder | decoder, ``layer`` from 0 at the bottom, ``direction``."""

    side: str
    layer: int
    direction: str = "forward"

    @property
    def name(self) -> str:
        """``encoder.layer0.forward``, ``encoder.layer0.backward``, ``decoder.layer0``, ..."""
        suffix = f".{self.direction}" if self.side == "encoder" else ""
        return f"{self.side}.layer{self.layer}{suffix}"


@dataclass
class LayerTrace:
    """What one layer direction computed for one sentence.

    ``arrays``: ``i``, ``f``, ``g`` (= C̃), ``o``, ``c``, ``h`` as ``[T, H]``, row t the
    time step t of the sentence (encoder: source position; decoder: output step), and
    ``c0``, ``h0`` ``[H]``, the state before the layer's first step. A backward layer
    runs from the last position to the first, so there ``c[t] = f[t]*c[t+1] + i[t]*g[t]``
    with ``c0`` after the end; everywhere else ``c[t] = f[t]*c[t-1] + i[t]*g[t]``.
    """

    id: LayerId
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        """The layer's name, e.g. ``encoder.layer0.backward`` (see `LayerId.name`)."""
        return self.id.name


@dataclass
class SentenceTrace:
    """One sentence, its greedy translation, the attention and every layer's `LayerTrace`.

    ``src_pieces`` labels the encoder steps (the source subwords, then ``</s>``);
    ``tgt_pieces`` labels the decoder steps by the subword each step produced (``</s>``
    last, unless the output hit the length cap). ``attention`` is ``[decoder steps,
    encoder steps]``. ``layers``: encoder layers (forward, then backward) bottom up, then
    decoder layers bottom up.
    """

    source: str
    translation: str
    src_ids: list[int]
    tgt_ids: list[int]
    src_pieces: list[str]
    tgt_pieces: list[str]
    attention: np.ndarray
    layers: list[LayerTrace]

    def pieces(self, layer: LayerTrace) -> list[str]:
        """The labels of ``layer``'s time steps: source pieces for the encoder, target ones for the decoder."""
        return self.src_pieces if layer.id.side == "encoder" else self.tgt_pieces

    def side(self, side: str) -> list[LayerTrace]:
        """The layers of the ``"encoder"`` or the ``"decoder"``."""
        return [layer for layer in self.layers if layer.id.side == side]

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays, e.g. ``attention``, ``src_pieces``, ``decoder.layer0.f``."""
        arrays = {
            "source": np.array(self.source),
            "translation": np.array(self.translation),
            "src_ids": np.array(self.src_ids, dtype=np.int64),
            "tgt_ids": np.array(self.tgt_ids, dtype=np.int64),
            "src_pieces": np.array(self.src_pieces, dtype=str),
            "tgt_pieces": np.array(self.tgt_pieces, dtype=str),
            "attention": self.attention,
        }
        for layer in self.layers:
            arrays.update({f"{layer.name}.{key}": value for key, value in layer.arrays.items()})
        return arrays


def lstm_layer_ids(model: Seq2Seq) -> dict[VariantWeights, LayerId]:
    """Which layer and direction each `LSTMCell` of ``model`` is (GateRecords name their cell)."""
    ids: dict[VariantWeights, LayerId] = {}
    for layer, cells in enumerate(model.encoder.rnn.cells()):
        for direction, cell in zip(DIRECTIONS, cells):
            ids[cell] = LayerId("encoder", layer, direction)
    for layer, module in enumerate(model.decoder.cells.layers):
        ids[cast(LSTMCell, module)] = LayerId("decoder", layer)
    return ids


def target_pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """The subword strings of target ``ids``, ``</s>`` for EOS.

    From the ids themselves: re-encoding the detokenized output could segment it otherwise.
    """
    return [EOS_PIECE if i == EOS_ID else piece for i, piece in zip(ids, tokenizer.tgt_id_pieces(ids))]


def source_pieces(tokenizer: Tokenizer, text: str, source_ids: list[int]) -> list[str]:
    """The labels of the encoder steps for ``text``: its subwords, cut like ``source_ids``, then ``</s>``."""
    return tokenizer.pieces_src(text)[: len(source_ids)] + [EOS_PIECE]


def decoded_ids(translation: Translation) -> list[int]:
    """The ids a decoder step produced, one per attention row: the output, then EOS unless the cap ended it."""
    steps = kept_attention(translation).shape[0]  # decoding steps, EOS included
    return translation.target_ids + [EOS_ID] * (steps - len(translation.target_ids))


def kept_attention(translation: Translation) -> torch.Tensor:
    """The attention of ``translation``; ValueError if it was translated without ``keep_attention``."""
    if translation.attention is None:
        raise ValueError("the translation has no attention: translate with keep_attention=True")
    return translation.attention


@torch.no_grad()
def trace_sentence(translator: Translator, text: str) -> SentenceTrace:
    """Translate ``text`` (not blank) greedily with ``translator`` and record every LSTM step."""
    with GateRecorder() as recorder:
        (translation,) = translator.translate_nbest([text], SearchConfig(beam_size=1), keep_attention=True)[0]
    return _sentence_trace(translator, text, translation, recorder.records)


@torch.no_grad()
def trace_translation(translator: Translator, text: str, translation: Translation) -> SentenceTrace:
    """Record every LSTM step of ``translator``'s model reading ``text`` and writing ``translation``.

    ``translation`` is any output for ``text`` (e.g. beam search's best, with its attention kept);
    the decoder is fed its tokens (teacher forcing), so the gates are those that produced it.
    """
    model = translator.single_model()
    batch = collate_source([translation.source_ids], [0]).to(translator.device)
    tgt_in = torch.tensor([[BOS_ID, *decoded_ids(translation)[:-1]]], device=translator.device)
    with GateRecorder() as recorder:
        model.decode(tgt_in, model.encode(batch.src, batch.src_lengths))
    return _sentence_trace(translator, text, translation, recorder.records)


def _sentence_trace(
    translator: Translator, text: str, translation: Translation, records: list[GateRecord]
) -> SentenceTrace:
    """The `SentenceTrace` of a batch of one, from its translation (attention kept) and its records."""
    model, tokenizer = translator.single_model(), translator.tokenizer
    # The decoder starts from the bridge's state, which no LSTM call records: recompute it.
    batch = collate_source([translation.source_ids], [0]).to(translator.device)
    start = model.init_decoder_state(model.encode(batch.src, batch.src_lengths))
    tgt_ids = decoded_ids(translation)
    return SentenceTrace(
        source=text,
        translation=translation.text,
        src_ids=batch.src[0].tolist(),
        tgt_ids=tgt_ids,
        src_pieces=source_pieces(tokenizer, text, translation.source_ids),
        tgt_pieces=target_pieces(tokenizer, tgt_ids),
        attention=kept_attention(translation).float().cpu().numpy(),
        layers=_layer_traces(model, records, start.hidden[0], start.cell[0]),
    )


def _layer_traces(
    model: Seq2Seq, records: list[GateRecord], decoder_h0: torch.Tensor, decoder_c0: torch.Tensor
) -> list[LayerTrace]:
    """Group the records of a batch of one by layer; ``decoder_h0/c0`` ``[layers, H]``."""
    layer_ids = lstm_layer_ids(model)
    by_layer: dict[LayerId, list[GateRecord]] = {}
    for record in records:
        by_layer.setdefault(layer_ids[record.cell], []).append(record)
    traces = []
    for layer_id, layer_records in by_layer.items():  # encoder first: records come in call order
        if layer_id.side == "encoder":  # one whole-sentence run [T, 1, H]; the encoder starts from zeros
            (run,) = layer_records
            arrays = {key: getattr(run, key)[:, 0] for key in STEP_ARRAYS}
            h0 = c0 = torch.zeros_like(run.h[0, 0])
        else:  # one record [1, H] per decoding step
            arrays = {key: torch.cat([getattr(step, key) for step in layer_records]) for key in STEP_ARRAYS}
            h0, c0 = decoder_h0[layer_id.layer], decoder_c0[layer_id.layer]
        arrays.update(h0=h0, c0=c0)
        traces.append(LayerTrace(layer_id, {key: value.float().cpu().numpy() for key, value in arrays.items()}))
    return traces
