"""Encoder, decoder and the whole Seq2Seq model on toy data, seeded."""

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_MODEL

from lstm_mt.decoder import StackedLSTMCells
from lstm_mt.model import ModelConfig, ModelConfigError, build_model, log_probabilities, probabilities
from lstm_mt.vocab import BOS_ID, EOS_ID, PAD_ID

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parent.parent / "lstm_mt" / "configs" / "model"
VOCAB = 23


def tiny_config(**overrides) -> ModelConfig:
    """Two layers on each side (so stacking and dropout placement are exercised), no dropout."""
    sizes = dict(
        emb_size=8,
        encoder_hidden=6,
        encoder_layers=2,
        decoder_hidden=12,
        decoder_layers=2,
        attentional_size=8,
        attention_hidden=7,
        dropout=0.0,
        embedding_dropout=0.0,
    )
    return ModelConfig(**{**sizes, **overrides})


def tiny_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(tiny_config(**overrides), VOCAB, VOCAB).double()


def padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-special ids ``[B, max(lengths)]``, PAD after each length."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, VOCAB, (len(lengths), max(lengths)), generator=generator)
    lengths_tensor = torch.tensor(lengths)
    padding = torch.arange(max(lengths)).unsqueeze(0) >= lengths_tensor.unsqueeze(1)
    return tokens.masked_fill(padding, PAD_ID), lengths_tensor


# --- encoder -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_a_sentence_encodes_the_same_alone_and_inside_a_padded_batch(dtype, tolerance):
    model = tiny_model().to(dtype)
    model.train()  # dropout is 0: train mode must not change anything either
    src, lengths = padded_batch([4, 7, 2, 5])
    batch = model.encode(src, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone = model.encode(src[row : row + 1, :length], lengths[row : row + 1])
        close = dict(rtol=0, atol=tolerance)
        torch.testing.assert_close(batch.memory[row, :length], alone.memory[0], **close)
        torch.testing.assert_close(batch.final_hidden[row], alone.final_hidden[0], **close)
        torch.testing.assert_close(batch.final_cell[row], alone.final_cell[0], **close)
        assert torch.all(batch.memory[row, length:] == 0)
    assert batch.mask.tolist() == [[t < n for t in range(7)] for n in lengths.tolist()]
    assert batch.lengths.tolist() == lengths.tolist()


def test_encoder_output_shapes_are_batch_first():
    model = tiny_model()
    src, lengths = padded_batch([3, 5])
    out = model.encode(src, lengths)
    assert out.memory.shape == (2, 5, 2 * 6)
    assert out.final_hidden.shape == out.final_cell.shape == (2, 2, 2 * 6)


def test_final_states_are_the_last_forward_and_first_backward_outputs():
    model = tiny_model(encoder_layers=1)
    src, lengths = padded_batch([3, 5])
    out = model.encode(src, lengths)
    hidden = 6
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(out.final_hidden[row, 0, :hidden], out.memory[row, length - 1, :hidden])
        torch.testing.assert_close(out.final_hidden[row, 0, hidden:], out.memory[row, 0, hidden:])


def test_bridges():
    src, lengths = padded_batch([3, 5])
    zeros = tiny_model(bridge="zeros")
    state = zeros.init_decoder_state(zeros.encode(src, lengths))
    assert torch.all(state.hidden == 0) and torch.all(state.cell == 0)
    assert not any("bridge" in name for name, _ in zeros.named_parameters())

    linear = tiny_model(bridge="linear")
    state = linear.init_decoder_state(linear.encode(src, lengths))
    assert state.hidden.shape == state.cell.shape == (2, 2, 12)
    assert torch.all(state.hidden.abs() > 0) and torch.all(state.hidden.abs() < 1)
    assert torch.all(state.attentional == 0)


# --- decoder -------------------------------------------------------------------------


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("normalize", "reference"), [(log_probabilities, F.log_softmax), (probabilities, F.softmax)])
def test_normalized_logits_overwrite_the_logits_only_without_autograd(grad, normalize, reference):
    """Bit for bit log_softmax / softmax (float32 even for bf16 logits); the logits' own buffer is reused
    only when nothing can need them for a gradient."""
    logits = torch.randn(7, 300, generator=torch.Generator().manual_seed(0)) * 4
    expected = reference(logits, dim=-1)
    given = logits.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        found = normalize(given)
    assert torch.equal(found, expected)
    assert (found.data_ptr() == given.data_ptr()) is not grad
    with torch.no_grad():
        from_bf16 = normalize(logits.bfloat16())
    assert from_bf16.dtype == torch.float32
    assert torch.equal(from_bf16, reference(logits.bfloat16(), dim=-1, dtype=torch.float32))


@pytest.mark.parametrize("attention", ["bahdanau", "dot", "general"])
def test_teacher_forcing_equals_stepping_token_by_token(attention):
    model = tiny_model(attention=attention, encoder_hidden=6, decoder_hidden=12)
    model.eval()
    src, src_lengths = padded_batch([4, 6, 2])
    tgt_in, _ = padded_batch([5, 5, 5], seed=2)
    tgt_in[:, 0] = BOS_ID

    logits, attention_weights = model(src, src_lengths, tgt_in, return_attention=True)
    assert logits.shape == (3, 5, VOCAB) and attention_weights.shape == (3, 5, 6)

    encoder_out = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoder_out)
    for t in range(tgt_in.shape[1]):
        log_probs, state, weights = model.decode_step(tgt_in[:, t], state, encoder_out)
        torch.testing.assert_close(log_probs, F.log_softmax(logits[:, t], dim=-1), rtol=0, atol=1e-12)
        torch.testing.assert_close(weights, attention_weights[:, t], rtol=0, atol=1e-12)


def test_teacher_forcing_gradients_equal_stepping_token_by_token():
    """Teacher forcing embeds all targets and prepares the cells' weights once; every gradient is as if stepped."""
    model = tiny_model()
    model.eval()
    src, src_lengths = padded_batch([4, 6, 2])
    tgt_in, _ = padded_batch([5, 5, 5], seed=2)
    reduction = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def gradients(hidden: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad((hidden * reduction).sum(), list(model.parameters()), allow_unused=True))

    forced = gradients(model.decoder(tgt_in, model.encode(src, src_lengths))[0])
    encoder_out = model.encode(src, src_lengths)
    state, outputs = model.init_decoder_state(encoder_out), []
    for t in range(tgt_in.shape[1]):
        hidden, state, _ = model.decoder.step(tgt_in[:, t], state, encoder_out)
        outputs.append(hidden)
    stepped = gradients(torch.stack(outputs, dim=1))
    for (name, _), a, b in zip(model.named_parameters(), forced, stepped):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_bf16_teacher_forcing_casts_each_decoder_weight_once_per_batch():
    """Under bf16 autocast the decoder's LSTM weights are cast once for all steps, not once per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = tiny_model().float()
    cells = model.decoder.cells.layers
    weight_shapes = {tuple(w.shape) for cell in cells for w in (cell.weight_ih, cell.weight_hh)}

    class CountWeightCasts(TorchDispatchMode):
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and tuple(args[0].shape) in weight_shapes:
                CountWeightCasts.casts += 1
            return func(*args, **(kwargs or {}))

    src, src_lengths = padded_batch([4, 6, 2])
    tgt_in, _ = padded_batch([9, 9, 9], seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16), CountWeightCasts():
        model.decoder(tgt_in, model.encode(src, src_lengths))
    assert CountWeightCasts.casts == 2 * len(cells)  # W_ih and W_hh of each layer, whatever the 9 steps


def test_the_decoder_takes_each_weight_gradient_in_one_product_per_batch():
    """dW_ih and dW_hh of each decoder layer: one product over all steps, not one per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = tiny_model()
    cells = model.decoder.cells.layers
    weight_shapes = {tuple(w.shape) for cell in cells for w in (cell.weight_ih, cell.weight_hh)}

    class CountWeightProducts(TorchDispatchMode):
        products = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.mm.default and tuple(out.shape) in weight_shapes:
                CountWeightProducts.products += 1
            return out

    src, src_lengths = padded_batch([4, 6, 2])
    tgt_in, _ = padded_batch([9, 9, 9], seed=2)
    hidden, _ = model.decoder(tgt_in, model.encode(src, src_lengths))
    with CountWeightProducts():
        hidden.sum().backward()
    assert CountWeightProducts.products == 2 * len(cells)


def test_attention_never_looks_at_source_padding():
    model = tiny_model()
    src, src_lengths = padded_batch([4, 6, 2])
    tgt_in, _ = padded_batch([5, 5, 5], seed=2)
    logits, attention = model(src, src_lengths, tgt_in, return_attention=True)

    padding = src == PAD_ID
    assert torch.all(attention.masked_select(padding.unsqueeze(1)) == 0)
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(3, 5, dtype=torch.float64))

    other_padding = src.masked_fill(padding, 7)  # real-looking ids where the padding was
    assert torch.equal(model(other_padding, src_lengths, tgt_in), logits)


def test_index_select_reorders_and_expands_states_consistently():
    model = tiny_model()
    model.eval()
    src, src_lengths = padded_batch([4, 6, 2])
    encoder_out = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoder_out)
    first = torch.tensor([BOS_ID] * 3)
    log_probs, state, _ = model.decode_step(first, state, encoder_out)
    tokens = torch.tensor([5, 9, 11])
    expected, expected_state, expected_weights = model.decode_step(tokens, state, encoder_out)

    order = torch.tensor([2, 0, 1])
    reordered = model.decode_step(tokens[order], state.index_select(order), encoder_out.index_select(order))
    # Matrix products may round a row differently at another batch position: float64 noise only.
    torch.testing.assert_close(reordered[0], expected[order], rtol=0, atol=1e-12)
    torch.testing.assert_close(reordered[1].hidden, expected_state.hidden[order], rtol=0, atol=1e-12)
    torch.testing.assert_close(reordered[2], expected_weights[order], rtol=0, atol=1e-12)

    beams = torch.arange(3).repeat_interleave(4)  # each sentence repeated for 4 beams
    expanded = model.decode_step(tokens[beams], state.index_select(beams), encoder_out.index_select(beams))
    torch.testing.assert_close(expanded[0], expected[beams], rtol=0, atol=1e-12)
    torch.testing.assert_close(expanded[1].cell, expected_state.cell[beams], rtol=0, atol=1e-12)
    assert encoder_out.index_select(beams).mask.shape == (12, 6)


def test_stacked_cells_apply_dropout_only_between_layers():
    torch.manual_seed(0)
    cells = StackedLSTMCells(input_size=3, hidden_size=4, num_layers=2, dropout=0.5).train()
    x = torch.randn(5, 3)
    zeros = torch.zeros(5, 2, 4)
    top, (h, c) = cells(x, (zeros, zeros))
    assert torch.equal(top, h[:, -1])
    first_h, _ = cells.layers[0](x, (zeros[:, 0], zeros[:, 0]))
    assert torch.equal(h[:, 0], first_h)  # no dropout on the input or the first layer's state
    cells.eval()
    top_eval, _ = cells(x, (zeros, zeros))
    assert not torch.equal(top, top_eval)  # dropout did act between the layers in training


def test_dropout_acts_in_training_only():
    model = tiny_model(dropout=0.3, embedding_dropout=0.2)
    src, src_lengths = padded_batch([4, 6])
    tgt_in, _ = padded_batch([5, 5], seed=2)
    model.eval()
    assert torch.equal(model(src, src_lengths, tgt_in), model(src, src_lengths, tgt_in))
    model.train()
    assert not torch.equal(model(src, src_lengths, tgt_in), model(src, src_lengths, tgt_in))


# --- the whole model ---------------------------------------------------------------------

FIRST_WORD, NUM_WORDS = 4, 30


def toy_corpus(num_pairs: int = 20) -> list[tuple[list[int], list[int]]]:
    """Random source sentences; the target is the source reversed, each word shifted by 11."""
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(num_pairs):
        length = int(torch.randint(3, 8, (1,), generator=generator))
        source = (FIRST_WORD + torch.randint(0, NUM_WORDS, (length,), generator=generator)).tolist()
        target = [FIRST_WORD + (w - FIRST_WORD + 11) % NUM_WORDS for w in reversed(source)]
        pairs.append((source, target))
    return pairs


def pad(sequences: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(sequences), max(map(len, sequences))), PAD_ID)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.tensor(sequence)
    return out


def greedy(model, src: torch.Tensor, src_lengths: torch.Tensor, max_length: int) -> list[list[int]]:
    """Greedy decoding through the incremental API; each output stops before its EOS."""
    encoder_out = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoder_out)
    prev = torch.full((src.shape[0],), BOS_ID)
    steps = []
    for _ in range(max_length):
        log_probs, state, _ = model.decode_step(prev, state, encoder_out)
        prev = log_probs.argmax(dim=-1)
        steps.append(prev)
    outputs = torch.stack(steps, dim=1).tolist()
    return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in outputs]


@pytest.mark.slow
def test_overfits_a_toy_corpus_and_greedy_decoding_reproduces_it():
    pairs = toy_corpus()
    src = pad([s for s, _ in pairs])
    src_lengths = torch.tensor([len(s) for s, _ in pairs])
    tgt_in = pad([[BOS_ID] + t for _, t in pairs])
    tgt_out = pad([t + [EOS_ID] for _, t in pairs])
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, FIRST_WORD + NUM_WORDS, FIRST_WORD + NUM_WORDS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        logits = model(src, src_lengths, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05

    model.eval()
    with torch.no_grad():
        decoded = greedy(model, src, src_lengths, max_length=tgt_out.shape[1] + 3)
    assert decoded == [t for _, t in pairs]


def test_tied_and_shared_embeddings_are_one_tensor():
    model = tiny_model(tie_decoder_embeddings=True, share_embeddings=True)
    generator, src_embedding, tgt_embedding = (
        model.generator.weight,
        model.encoder.embedding.weight,
        model.decoder.embedding.weight,
    )
    assert generator is tgt_embedding is src_embedding
    assert generator.data_ptr() == src_embedding.data_ptr()

    untied = tiny_model(tie_decoder_embeddings=False, share_embeddings=False)
    assert untied.generator.weight.data_ptr() != untied.decoder.embedding.weight.data_ptr()
    assert untied.encoder.embedding.weight.data_ptr() != untied.decoder.embedding.weight.data_ptr()
    assert untied.num_parameters() - model.num_parameters() == 2 * VOCAB * 8  # each shared matrix counts once


def test_tied_embeddings_get_gradient_from_both_uses():
    model = tiny_model(tie_decoder_embeddings=True)
    src, src_lengths = padded_batch([3, 4])
    tgt_in, _ = padded_batch([3, 3], seed=2)
    model(src, src_lengths, tgt_in).sum().backward()
    assert model.generator.weight.grad is model.decoder.embedding.weight.grad
    assert torch.all(model.decoder.embedding.weight.grad[PAD_ID] != 0)  # from the generator only


def test_inconsistent_configs_raise_errors_that_name_the_keys():
    with pytest.raises(ValueError, match=r"model\.emb_size \(8\).*model\.attentional_size \(10\)"):
        build_model(tiny_config(tie_decoder_embeddings=True, attentional_size=10), VOCAB, VOCAB)
    with pytest.raises(ModelConfigError, match=r"model\.decoder_hidden \(12\)"):
        build_model(tiny_config(tie_decoder_embeddings=True, attentional_size=None), VOCAB, VOCAB)
    with pytest.raises(ValueError, match=r"model\.share_embeddings.*23.*30"):
        build_model(tiny_config(share_embeddings=True), VOCAB, 30)
    with pytest.raises(ValueError, match=r"model\.attention=dot.*model\.decoder_hidden"):
        build_model(tiny_config(attention="dot", decoder_hidden=10), VOCAB, VOCAB)
    with pytest.raises(ValueError, match=r"model\.bridge='last'"):
        build_model(tiny_config(bridge="last"), VOCAB, VOCAB)
    untied_other_sizes = build_model(tiny_config(tie_decoder_embeddings=False, attentional_size=10), VOCAB, 30)
    assert untied_other_sizes.generator.out_features == 30


@pytest.mark.parametrize("name, low, high", [("small", 2e6, 4e6), ("base", 10e6, 15e6), ("big", 40e6, 45e6)])
def test_shipped_configs_build_with_the_expected_size(name, low, high):
    values = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(values) == {field.name for field in fields(ModelConfig)}
    model = build_model(ModelConfig(**values), 8000, 8000)
    assert low < model.num_parameters() < high
    if name == "small":
        assert values == asdict(ModelConfig())  # the dataclass defaults are the default model
