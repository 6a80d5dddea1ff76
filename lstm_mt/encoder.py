"""The source side: token embeddings, the bidirectional LSTM encoder, and the bridge.

`Encoder` reads a padded batch of source ids with their lengths and returns an
`EncoderOutput`: the memory the decoder attends over, a mask of the real tokens, and
the final states. `Bridge` turns those final states into the decoder's initial state.
`TokenEmbedding` (embedding + dropout) is shared with the decoder, which can also share
the very same instance (``share_embeddings``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lstm_mt.lstm import LSTM, masks
from lstm_mt.lstm.variants import CellVariant

BRIDGE_KINDS = ("linear", "zeros")

_Rows = TypeVar("_Rows", bound="BatchRows")

PER_SENTENCE = "per_sentence"  # field metadata key: the field is the same for every beam of a sentence


class BatchRows:
    """Mixin for dataclasses whose fields are batch-first tensors (row i = sentence i), other
    `BatchRows`, or tuples of either (an ensemble's states).

    A field created with ``metadata={PER_SENTENCE: True}`` depends on the source sentence
    only, so beam search's reordering of a sentence's beams (`reorder_beams`) leaves it as it is.
    """

    def index_select(self: _Rows, indices: Tensor) -> _Rows:
        """The same structure with batch rows ``indices`` (to reorder, drop or repeat for beams)."""
        return _map_rows(self, lambda rows: rows.index_select(0, indices), keep_per_sentence=False)

    def reorder_beams(self: _Rows, indices: Tensor) -> _Rows:
        """`index_select` for ``indices`` that send every row to a row of the same sentence.

        Per-sentence fields are the same in all of a sentence's rows, so they are not copied.
        """
        return _map_rows(self, lambda rows: rows.index_select(0, indices), keep_per_sentence=True)

    @classmethod
    def cat(cls: type[_Rows], parts: Sequence[_Rows]) -> _Rows:
        """The rows of ``parts`` one after another, in one structure of the same kind."""
        return _cat_rows(list(parts))


def _map_rows(value: Any, select: Callable[[Tensor], Tensor], keep_per_sentence: bool) -> Any:
    if isinstance(value, Tensor):
        return select(value)
    if isinstance(value, tuple):
        return tuple(_map_rows(item, select, keep_per_sentence) for item in value)
    changed = {
        field.name: _map_rows(getattr(value, field.name), select, keep_per_sentence)
        for field in dataclasses.fields(value)
        if not (keep_per_sentence and field.metadata.get(PER_SENTENCE))
    }
    return dataclasses.replace(value, **changed)


def _cat_rows(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, tuple):
        return tuple(_cat_rows(list(items)) for items in zip(*parts))
    fields = dataclasses.fields(first)
    return dataclasses.replace(first, **{f.name: _cat_rows([getattr(p, f.name) for p in parts]) for f in fields})


@dataclasses.dataclass
class EncoderOutput(BatchRows):
    """What the encoder hands to the decoder, all batch first.

    ``memory`` ``[B, S, D*H]``: top-layer outputs, directions concatenated, zero on padding.
    ``mask`` ``[B, S]`` bool: True at real tokens.
    ``final_hidden``, ``final_cell`` ``[B, layers, D*H]``: each layer's last state, the
    forward direction's after the last real token and the backward one's after the first.
    """

    memory: Tensor
    mask: Tensor
    final_hidden: Tensor
    final_cell: Tensor

    @property
    def lengths(self) -> Tensor:
        """Source lengths ``[B]``."""
        return self.mask.sum(dim=1)


class TokenEmbedding(nn.Embedding):
    """Token embedding followed by dropout; the padding row is zero and gets no gradient.

    Weights start at N(0, 1/emb_size) rather than N(0, 1) so that, when tied to the
    generator, the first logits are of order one.
    """

    def __init__(self, vocab_size: int, emb_size: int, padding_idx: int, dropout: float) -> None:
        super().__init__(vocab_size, emb_size, padding_idx=padding_idx)
        self.dropout = masks.Dropout(dropout)

    def reset_parameters(self) -> None:
        """N(0, 1/emb_size), padding row zero."""
        nn.init.normal_(self.weight, mean=0.0, std=self.embedding_dim**-0.5)
        self._fill_padding_idx_with_zero()

    def forward(self, tokens: Tensor) -> Tensor:
        """Embeddings ``[..., emb_size]`` of ``tokens`` ``[...]``, with dropout."""
        return self.dropout(super().forward(tokens))


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``[B, max_length]`` bool, True at positions below each length."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class Encoder(nn.Module):
    """Embeds a padded source batch and runs a stacked (bi)directional `LSTM` over it.

    Padding never changes a real position's result: the `LSTM` skips it given the lengths.
    """

    def __init__(
        self,
        embedding: TokenEmbedding,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool = True,
        dropout: float = 0.0,
        variant: CellVariant | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.rnn = LSTM(
            embedding.embedding_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
            variant=variant,
        )

    @property
    def output_size(self) -> int:
        """Size of one memory vector (and of one layer's final state): directions × hidden."""
        return self.rnn.num_directions * self.rnn.hidden_size

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode ``src`` ``[B, S]`` (ids, padded) with ``src_lengths`` ``[B]`` (each >= 1)."""
        src_lengths = src_lengths.to(src.device)
        memory, (h_n, c_n) = self.rnn(self.embedding(src), src_lengths)
        return EncoderOutput(
            memory=memory,
            mask=lengths_to_mask(src_lengths, src.shape[1]),
            final_hidden=self._batch_first_states(h_n),
            final_cell=self._batch_first_states(c_n),
        )

    def _batch_first_states(self, states: Tensor) -> Tensor:
        """``[layers*D, B, H]`` (the `LSTM` layout) to ``[B, layers, D*H]``."""
        layers, directions = self.rnn.num_layers, self.rnn.num_directions
        _, batch, hidden = states.shape
        per_layer = states.view(layers, directions, batch, hidden).permute(2, 0, 1, 3)
        return per_layer.reshape(batch, layers, directions * hidden)


class Bridge(nn.Module):
    """The decoder's initial ``(h, c)`` for every decoder layer, from the encoder's final states.

    ``"linear"``: ``tanh(W·s + b)`` of the top encoder layer's final state ``s`` (forward
    and backward concatenated), one map for ``h`` and one for ``c``, each producing all
    decoder layers at once. ``"zeros"``: start from zeros (no parameters).
    """

    def __init__(self, kind: str, encoder_state_size: int, decoder_hidden: int, decoder_layers: int) -> None:
        super().__init__()
        if kind not in BRIDGE_KINDS:
            raise ValueError(f"unknown bridge {kind!r}; expected one of {', '.join(BRIDGE_KINDS)}")
        self.kind = kind
        self.decoder_hidden = decoder_hidden
        self.decoder_layers = decoder_layers
        if kind == "linear":
            self.to_hidden = nn.Linear(encoder_state_size, decoder_layers * decoder_hidden)
            self.to_cell = nn.Linear(encoder_state_size, decoder_layers * decoder_hidden)

    def forward(self, encoder_out: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Initial ``(h, c)``, each ``[B, decoder_layers, decoder_hidden]``."""
        batch = encoder_out.memory.shape[0]
        shape = (batch, self.decoder_layers, self.decoder_hidden)
        if self.kind == "zeros":
            zeros = encoder_out.memory.new_zeros(shape)
            return zeros, zeros
        h = torch.tanh(self.to_hidden(encoder_out.final_hidden[:, -1]))
        c = torch.tanh(self.to_cell(encoder_out.final_cell[:, -1]))
        return h.view(shape), c.view(shape)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
