"""Tests for lstm_mt.precision: bf16 autocast and int8 dynamic quantization for decoding, on the
tiny checkpoint of conftest.py."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

from lstm_mt.data import collate_source, load_split
from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import LSTMCell
from lstm_mt.precision import inference_autocast
from lstm_mt.translate import Translator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def val_sources(tiny_checkpoint) -> list[str]:
    return load_split(tiny_checkpoint.data, "val").src_lines[:12]


def first_step(translator: Translator, sentences: list[str]) -> torch.Tensor:
    """The log-probabilities of the first target token, in the translator's precision."""
    ids = translator.tokenizer.encode_src(sentences)
    batch = collate_source(ids, range(len(ids)))
    model = translator.model
    with torch.no_grad(), inference_autocast(translator.precision, translator.device):
        encoded = model.encode(batch.src, batch.src_lengths)
        bos = torch.full((len(ids),), 2)
        return model.decode_step(bos, model.init_decoder_state(encoded), encoded)[0]


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.03), ("int8", 0.03)])
def test_lower_precision_decodes_close_to_fp32(tiny_checkpoint, val_sources, precision, tolerance):
    fp32 = Translator.from_checkpoint(tiny_checkpoint.path)
    lower = Translator.from_checkpoint(tiny_checkpoint.path, precision=precision)
    reference, ours = first_step(fp32, val_sources), first_step(lower, val_sources)
    assert ours.dtype == torch.float32, "search ranks float32 log-probabilities"
    assert 0 < (ours.exp() - reference.exp()).abs().max() < tolerance  # probabilities rounded, not another model
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.75
    translations = lower.translate(val_sources)
    assert len(translations) == len(val_sources) and all(translations)


def test_int8_quantizes_the_linear_layers_and_lstm_products_of_a_copy(tiny_checkpoint):
    fp32 = Translator.from_checkpoint(tiny_checkpoint.path)
    int8 = Translator(fp32.model, fp32.tokenizer, precision="int8")
    assert isinstance(int8.model.generator, QuantizedLinear)
    cells = [m for m in int8.model.modules() if isinstance(m, LSTMCell)]
    assert cells and all(cell.int8_product is not None for cell in cells), "the LSTM products are int8 too"
    assert not any(getattr(m, "int8_product", None) for m in fp32.model.modules())
    assert isinstance(fp32.model.generator, torch.nn.Linear), "the caller's model is left as it was"


def test_precision_errors_name_the_option(tiny_checkpoint):
    with pytest.raises(LstmMtError, match="precision='fp8' is not one of fp32, bf16, int8"):
        Translator.from_checkpoint(tiny_checkpoint.path, precision="fp8")
    if torch.cuda.is_available():
        with pytest.raises(LstmMtError, match="precision=int8 runs on CPU only"):
            Translator.from_checkpoint(tiny_checkpoint.path, device="cuda", precision="int8")
