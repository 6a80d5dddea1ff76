"""The target side: an attentional LSTM decoder with input feeding (Luong et al., 2015).

One step, for the previous target token ``y`` and the previous attentional vector ``h̃'``::

    x  = [embed(y); h̃']                  input feeding: the last step's attention informs this one
    h  = stacked LSTM cells(x, state)    dropout between layers
    c, a = attention(h_top, memory)      context and weights over the source, padding masked
    h̃  = dropout(tanh(W_c·[c; h_top]))   the attentional vector, fed to the generator and the next step

`Decoder.step` is that step, for incremental decoding (greedy, beam search);
`Decoder.forward` runs it over a whole target prefix for teacher forcing.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm_mt.attention import Attention
from lstm_mt.encoder import PER_SENTENCE, BatchRows, Bridge, EncoderOutput, TokenEmbedding
from lstm_mt.lstm import LSTMCell, cuda_graphs, graphed, masks
from lstm_mt.lstm.fastpath import StepWeights, autocast_dtype
from lstm_mt.lstm.variants import CellNoise, CellVariant

LayerNoise = list[CellNoise | None]  # per layer: one sequence's dropout masks (variant cells in training)
LayerWeights = list[StepWeights]  # per layer: the weights prepared once for all steps of a sequence


@dataclasses.dataclass
class DecoderState(BatchRows):
    """Everything a decoding step carries to the next one, all batch first.

    ``hidden``, ``cell`` ``[B, layers, H]``: the LSTM states.
    ``attentional`` ``[B, out_size]``: the last attentional vector h̃ (input feeding).
    ``keys`` ``[B, S, K]``: the attention's projection of the memory, computed once in
    `Decoder.init_state` and kept here so that it follows the state's rows when beam
    search expands or drops them (a per-sentence field: reordering beams leaves it).
    """

    hidden: Tensor
    cell: Tensor
    attentional: Tensor
    keys: Tensor = dataclasses.field(metadata={PER_SENTENCE: True})


class StackedLSTMCells(nn.Module):
    """One time step through a stack of `LSTMCell` layers, with dropout between layers."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float = 0.0,
        variant: CellVariant | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            LSTMCell(input_size if layer == 0 else hidden_size, hidden_size, variant=variant)
            for layer in range(num_layers)
        )
        self.dropout = masks.Dropout(dropout)

    def sequence_noise(self, like: Tensor) -> LayerNoise | None:
        """Each layer's dropout masks for the sequences of a batch (rows of ``like``); None when none are needed."""
        cells = [cast(LSTMCell, cell) for cell in self.layers]
        noise = [cell.sequence_noise(like.new_empty(like.shape[0], cell.input_size)) for cell in cells]
        return None if all(n is None for n in noise) else noise

    def step_weights(self, device_type: str) -> LayerWeights:
        """Each layer's weights prepared once for all steps of a sequence (`LSTMCell.step_weights`)."""
        return [cast(LSTMCell, cell).step_weights(device_type) for cell in self.layers]

    def forward(
        self,
        x: Tensor,
        state: tuple[Tensor, Tensor],
        noise: LayerNoise | None = None,
        weights: LayerWeights | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Step ``x`` ``[B, input]`` from ``state`` ``(h, c)``, each ``[B, layers, H]``.

        Returns the top layer's output ``[B, H]`` and the new ``(h, c)``. ``noise``: the
        sequences' masks from `sequence_noise`, the same at every step; ``weights``: from `step_weights`.
        """
        h_prev, c_prev = state
        hs, cs = [], []
        layer_input = x
        for index, cell in enumerate(self.layers):
            if index > 0:
                layer_input = self.dropout(layer_input)
            layer_state = (h_prev[:, index], c_prev[:, index])
            layer_noise = None if noise is None else noise[index]
            h, c = cell(layer_input, layer_state, layer_noise, None if weights is None else weights[index])
            hs.append(h)
            cs.append(c)
            layer_input = h
        return layer_input, (torch.stack(hs, dim=1), torch.stack(cs, dim=1))


class Decoder(nn.Module):
    """Attentional, input-feeding LSTM decoder; see the module docstring for the equations.

    ``embedding`` may be the encoder's (shared embeddings); ``attention`` takes the top
    hidden state as its query and the encoder memory as its memory; ``bridge`` gives the
    initial LSTM state. ``out_size`` is the size of the attentional vector h̃, which is what
    the generator reads (and must equal the embedding size to tie the two).
    """

    def __init__(
        self,
        embedding: TokenEmbedding,
        attention: Attention,
        bridge: Bridge,
        memory_size: int,
        hidden_size: int,
        num_layers: int,
        out_size: int,
        dropout: float = 0.0,
        variant: CellVariant | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.attention = attention
        self.bridge = bridge
        self.out_size = out_size
        self.cells = StackedLSTMCells(embedding.embedding_dim + out_size, hidden_size, num_layers, dropout, variant)
        self.combine = nn.Linear(memory_size + hidden_size, out_size, bias=False)
        self.dropout = masks.Dropout(dropout)

    def init_state(self, encoder_out: EncoderOutput) -> DecoderState:
        """The state before the first target token: bridged LSTM state, zero h̃, attention keys."""
        hidden, cell = self.bridge(encoder_out)
        memory = encoder_out.memory
        return DecoderState(
            hidden=hidden,
            cell=cell,
            attentional=memory.new_zeros(memory.shape[0], self.out_size),
            keys=self.attention.project_memory(memory),
        )

    def step(
        self, prev_tokens: Tensor, state: DecoderState, encoder_out: EncoderOutput, noise: LayerNoise | None = None
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step for ``prev_tokens`` ``[B]``.

        Returns the attentional vector h̃ ``[B, out_size]``, the new state and the
        attention weights ``[B, S]``. ``noise``: the sequences' dropout masks (variant cells
        in training; `StackedLSTMCells.sequence_noise`).
        """
        return self._step_embedded(self.embedding(prev_tokens), state, encoder_out, noise)

    def _step_embedded(
        self,
        embedded: Tensor,
        state: DecoderState,
        encoder_out: EncoderOutput,
        noise: LayerNoise | None = None,
        cell_weights: LayerWeights | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """`step` for the previous tokens' embeddings ``[B, emb]``, with the cells' prepared weights."""
        x = torch.cat([embedded, state.attentional], dim=1)
        top, (hidden, cell) = self.cells(x, (state.hidden, state.cell), noise, cell_weights)
        context, weights = self.attention(top, state.keys, encoder_out.memory, encoder_out.mask)
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, top], dim=1))))
        return attentional, DecoderState(hidden, cell, attentional, state.keys), weights

    def forward(self, tgt_in: Tensor, encoder_out: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Teacher forcing over ``tgt_in`` ``[B, T]`` (BOS-prefixed targets).

        Returns h̃ for every position ``[B, T, out_size]`` and the attention ``[B, T, S]``.
        What every step shares is made once for the whole sequence: the embeddings of all
        targets (and their dropout), the cells' dropout masks and their (cast) weights.
        In training on CUDA the loop after the embeddings is replayed from CUDA graphs (`_graphed`).
        """
        embedded = self.embedding(tgt_in)
        memory, mask = encoder_out.memory, encoder_out.mask
        graphed = self._graphed(embedded, memory, mask, encoder_out.final_hidden, encoder_out.final_cell)
        if graphed is not None:
            return graphed
        return self._teacher_forced(embedded, memory, mask, encoder_out.final_hidden, encoder_out.final_cell)

    def _teacher_forced(
        self, embedded: Tensor, memory: Tensor, mask: Tensor, final_hidden: Tensor, final_cell: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`forward` from the targets' embeddings ``[B, T, emb]`` and the encoder's output as tensors."""
        encoder_out = EncoderOutput(memory, mask, final_hidden, final_cell)
        state = self.init_state(encoder_out)
        noise = self.cells.sequence_noise(state.attentional)  # one mask per sequence, for every step
        cell_weights = self.cells.step_weights(embedded.device.type)
        outputs, attention = [], []
        for t in range(embedded.shape[1]):
            attentional, state, weights = self._step_embedded(embedded[:, t], state, encoder_out, noise, cell_weights)
            outputs.append(attentional)
            attention.append(weights)
        return torch.stack(outputs, dim=1), torch.stack(attention, dim=1)

    def _graphed(
        self, embedded: Tensor, memory: Tensor, mask: Tensor, final_hidden: Tensor, final_cell: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        """`_teacher_forced` replayed from CUDA graphs (`lstm_mt.lstm.graphed`), the batch, targets and source
        padded to buckets; None where graphs do not take it (and the caller runs the loop).

        Padding leaves the real rows as they are: rows never mix, padded source positions are masked out
        and padded target positions come after the real ones. A padded row attends to its first position
        (zero memory), so that its softmax has something to normalize.
        """
        batch, steps, _ = embedded.shape
        source = memory.shape[1]
        bucket = cuda_graphs.padded_shape(steps, batch)
        if not graphed.applies(embedded) or bucket is None or source > cuda_graphs.MAX_STEPS:
            return None
        padded_steps, padded_batch = bucket
        rows, positions = padded_batch - batch, cuda_graphs.bucket_size(source) - source
        padded_mask = F.pad(mask, (0, positions, 0, rows), value=False)
        padded_mask[batch:, 0] = True
        inputs = [
            F.pad(embedded, (0, 0, 0, padded_steps - steps, 0, rows)),
            F.pad(memory, (0, 0, 0, positions, 0, rows)),
            padded_mask,
            F.pad(final_hidden, (0, 0, 0, 0, 0, rows)),
            F.pad(final_cell, (0, 0, 0, 0, 0, rows)),
        ]
        key = ("teacher-forced decoder", self.training, autocast_dtype(embedded.device.type))
        outputs = graphed.run(key, self, Decoder._teacher_forced, inputs)
        if outputs is None:
            return None
        return outputs[0][:batch, :steps], outputs[1][:batch, :steps, :source]
