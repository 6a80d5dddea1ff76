"""The whole translation model: `Seq2Seq` wires encoder, decoder and generator; `build_model`
makes one from a `ModelConfig`.

`ModelConfig` is plain typed data, so it can be registered in Hydra's ConfigStore and
dumped as YAML next to every checkpoint; `build_model` accepts it or anything with the
same attributes (an OmegaConf node).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from lstm_mt.attention import ATTENTION_KINDS, build_attention
from lstm_mt.decoder import Decoder, DecoderState
from lstm_mt.encoder import BRIDGE_KINDS, Bridge, Encoder, EncoderOutput, TokenEmbedding
from lstm_mt.errors import LstmMtError
from lstm_mt.lstm.variants import CellVariant
from lstm_mt.ranges import bounded, check_ranges
from lstm_mt.vocab import PAD_ID

__all__ = [
    "ModelConfig",
    "ModelConfigError",
    "Seq2Seq",
    "build_model",
    "check_config",
]


class ModelConfigError(LstmMtError, ValueError):
    """A model configuration that cannot be built; the message names the config keys at fault."""


@dataclass
class ModelConfig:
    """Sizes and options of a `Seq2Seq` model (the ``model`` config group).

    ``attentional_size`` is the size of the attentional vector h̃ that the generator reads
    and the decoder feeds back; None means ``decoder_hidden``. ``dropout`` applies between
    LSTM layers and to h̃; ``embedding_dropout`` to the embeddings. ``bridge`` is one of
    ``"linear"`` or ``"zeros"``. ``tie_decoder_embeddings`` uses the target embedding
    matrix as the generator weight (needs ``emb_size == attentional_size``);
    ``share_embeddings`` uses one embedding for source and target (needs a joint vocabulary).
    ``cell`` switches on variants of the LSTM equations in encoder and decoder
    (`lstm_mt.lstm.variants`: ``model.cell.layer_norm=true``, ``model.cell.zoneout_c=0.1``, ...).
    The defaults are ``configs/model/small.yaml``.
    """

    emb_size: int = bounded(128, ge=1)
    encoder_hidden: int = bounded(128, ge=1)
    encoder_layers: int = bounded(1, ge=1)
    bidirectional: bool = True
    decoder_hidden: int = bounded(256, ge=1)
    decoder_layers: int = bounded(1, ge=1)
    attentional_size: int | None = bounded(128, ge=1)
    attention: str = "bahdanau"
    attention_hidden: int = bounded(128, ge=1)
    dropout: float = bounded(0.2, ge=0, lt=1)
    embedding_dropout: float = bounded(0.1, ge=0, lt=1)
    bridge: str = "linear"
    tie_decoder_embeddings: bool = True
    share_embeddings: bool = False
    cell: CellVariant = field(default_factory=CellVariant)


class Seq2Seq(nn.Module):
    """Encoder, attentional decoder and generator (a linear map from h̃ to vocabulary logits)."""

    def __init__(self, encoder: Encoder, decoder: Decoder, generator: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.generator = generator

    @overload
    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, return_attention: Literal[False] = False
    ) -> Tensor: ...

    @overload
    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, return_attention: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits ``[B, T, V]`` for ``src`` ``[B, S]`` and ``tgt_in`` ``[B, T]``.

        ``tgt_in`` starts with BOS (the targets shifted right). With ``return_attention``,
        also returns the attention weights ``[B, T, S]``.
        """
        logits, attention = self.decode(tgt_in, self.encode(src, src_lengths))
        return (logits, attention) if return_attention else logits

    def decode(self, tgt_in: Tensor, encoder_out: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits ``[B, T, V]`` and attention ``[B, T, S]`` for an encoded source."""
        hidden, attention = self.decoder(tgt_in, encoder_out)
        return self.generator(hidden), attention

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode a padded source batch ``[B, S]`` with lengths ``[B]``."""
        return self.encoder(src, src_lengths)

    def init_decoder_state(self, encoder_out: EncoderOutput) -> DecoderState:
        """The decoder state before the first (BOS) step."""
        return self.decoder.init_state(encoder_out)

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState, encoder_out: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One incremental step: ``(log_probs [B, V], new_state, attention [B, S])``."""
        logits, state, attention = self.step_logits(prev_tokens, state, encoder_out)
        return log_probabilities(logits), state, attention

    def step_logits(
        self, prev_tokens: Tensor, state: DecoderState, encoder_out: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """`decode_step` before its log-softmax: ``(logits [B, V], new_state, attention [B, S])``,
        what an ensemble averages its models' probabilities from."""
        hidden, state, attention = self.decoder.step(prev_tokens, state, encoder_out)
        return self.generator(hidden), state, attention

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of distinct parameter values (shared or tied tensors count once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def log_probabilities(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last dimension in at least float32, so that search ranks bf16 autocast
    outputs by full-precision log-probabilities.

    Without autograd, float32 logits on CPU are overwritten: a second ``[B, V]`` buffer every
    decoding step costs about as much as the generator's product (fresh pages from the allocator).
    """
    return _normalized(logits, torch.log_softmax)


def probabilities(logits: Tensor) -> Tensor:
    """``softmax`` over the last dimension in at least float32, in the logits' memory like
    `log_probabilities`."""
    return _normalized(logits, torch.softmax)


def _normalized(logits: Tensor, normalize: Callable[..., Tensor]) -> Tensor:
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if dtype == logits.dtype and logits.device.type == "cpu" and not torch.is_grad_enabled():
        return normalize(logits, dim=-1, out=logits)
    return normalize(logits, dim=-1, dtype=dtype)


def build_model(cfg: ModelConfig | Any, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = PAD_ID) -> Seq2Seq:
    """A freshly initialized `Seq2Seq` for the given config and vocabulary sizes.

    Raises `ModelConfigError` (a ValueError) naming the keys when the config is inconsistent.
    """
    check_config(cfg, src_vocab_size, tgt_vocab_size)
    attentional_size = _attentional_size(cfg)

    src_embedding = TokenEmbedding(src_vocab_size, cfg.emb_size, pad_id, cfg.embedding_dropout)
    tgt_embedding = (
        src_embedding
        if cfg.share_embeddings
        else TokenEmbedding(tgt_vocab_size, cfg.emb_size, pad_id, cfg.embedding_dropout)
    )
    variant = cell_variant(cfg)
    encoder = Encoder(src_embedding, cfg.encoder_hidden, cfg.encoder_layers, cfg.bidirectional, cfg.dropout, variant)
    memory_size = encoder.output_size
    decoder = Decoder(
        embedding=tgt_embedding,
        attention=build_attention(cfg.attention, cfg.decoder_hidden, memory_size, cfg.attention_hidden),
        bridge=Bridge(cfg.bridge, memory_size, cfg.decoder_hidden, cfg.decoder_layers),
        memory_size=memory_size,
        hidden_size=cfg.decoder_hidden,
        num_layers=cfg.decoder_layers,
        out_size=attentional_size,
        dropout=cfg.dropout,
        variant=variant,
    )
    generator = nn.Linear(attentional_size, tgt_vocab_size)
    if cfg.tie_decoder_embeddings:
        generator.weight = tgt_embedding.weight
    return Seq2Seq(encoder, decoder, generator)


def check_config(cfg: ModelConfig | Any, src_vocab_size: int, tgt_vocab_size: int) -> None:
    """Raise `ModelConfigError` if ``cfg`` cannot be built for these vocabulary sizes."""
    if cfg.attention not in ATTENTION_KINDS:
        raise ModelConfigError(f"model.attention={cfg.attention!r} is not one of {', '.join(ATTENTION_KINDS)}")
    if cfg.bridge not in BRIDGE_KINDS:
        raise ModelConfigError(f"model.bridge={cfg.bridge!r} is not one of {', '.join(BRIDGE_KINDS)}")
    if dataclasses.is_dataclass(cfg):
        try:
            check_ranges(cfg, "model.")
        except LstmMtError as error:
            raise ModelConfigError(str(error)) from None
    memory_size = cfg.encoder_hidden * (2 if cfg.bidirectional else 1)
    if cfg.attention == "dot" and cfg.decoder_hidden != memory_size:
        raise ModelConfigError(
            f"model.attention=dot needs model.decoder_hidden ({cfg.decoder_hidden}) to equal the encoder "
            f"output size, model.encoder_hidden x directions ({memory_size}); use 'general' or change the sizes"
        )
    if cfg.tie_decoder_embeddings and cfg.emb_size != _attentional_size(cfg):
        size_key = "model.attentional_size" if cfg.attentional_size is not None else "model.decoder_hidden"
        raise ModelConfigError(
            f"model.tie_decoder_embeddings=true needs model.emb_size ({cfg.emb_size}) to equal the attentional "
            f"vector size, {size_key} ({_attentional_size(cfg)}); set model.attentional_size={cfg.emb_size} "
            f"or model.tie_decoder_embeddings=false"
        )
    if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
        raise ModelConfigError(
            f"model.share_embeddings=true needs a joint vocabulary, but the source has {src_vocab_size} "
            f"entries and the target {tgt_vocab_size}"
        )


def cell_variant(cfg: ModelConfig | Any) -> CellVariant:
    """``cfg.cell`` as a `CellVariant` (it may be an OmegaConf node or missing, as in old checkpoints)."""
    cell = getattr(cfg, "cell", None)
    if cell is None or isinstance(cell, CellVariant):
        return cell or CellVariant()
    return CellVariant(**dict(cell))


def _attentional_size(cfg: ModelConfig | Any) -> int:
    return cfg.decoder_hidden if cfg.attentional_size is None else cfg.attentional_size
