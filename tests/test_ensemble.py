"""Tests for lstm_mt.ensemble and checkpoint lists in Translator / `lstm-mt translate`, with the tiny
checkpoint of conftest.py and a second model of the same shape (other weights)."""

from __future__ import annotations

import copy

import pytest
import torch

from lstm_mt.checkpoint import load_checkpoint, save_checkpoint
from lstm_mt.data import collate_source, load_split
from lstm_mt.ensemble import Ensemble, log_mean_probabilities
from lstm_mt.errors import LstmMtError
from lstm_mt.search import SearchConfig
from lstm_mt.tokenizer import SubwordConfig, train_or_load_tokenizer
from lstm_mt.translate import Translator, main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def val_sources(tiny_checkpoint) -> list[str]:
    return load_split(tiny_checkpoint.data, "val").src_lines[:12]


@pytest.fixture(scope="module")
def other_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with every weight moved a little: another model of the same vocabulary."""
    payload = load_checkpoint(tiny_checkpoint.path)
    generator = torch.Generator().manual_seed(3)
    payload["model"] = {
        name: weights + 0.3 * torch.randn(weights.shape, generator=generator) * weights.std().nan_to_num(1.0)
        for name, weights in payload["model"].items()
    }
    return save_checkpoint(payload, tmp_path_factory.mktemp("other") / "other.pt")


@pytest.mark.parametrize("copies", [2, 3])
def test_copies_of_one_checkpoint_decode_as_that_checkpoint(tiny_checkpoint, val_sources, copies):
    """The same hypotheses and attention; scores to float32 rounding (the ensemble takes the log of
    a softmax where one model takes a log-softmax)."""
    alone = Translator.from_checkpoint(tiny_checkpoint.path)
    several = Translator.from_checkpoint([tiny_checkpoint.path] * copies)
    assert isinstance(several.model, Ensemble) and len(several.model.models) == copies
    for cfg in (SearchConfig(beam_size=1), SearchConfig(beam_size=4, alpha=0.6, nbest=3)):
        ours = several.translate_nbest(val_sources, cfg, keep_attention=True)
        reference = alone.translate_nbest(val_sources, cfg, keep_attention=True)
        for a, b in zip(ours, reference):
            assert [(t.text, t.target_ids) for t in a] == [(t.text, t.target_ids) for t in b]
            for x, y in zip(a, b):
                assert x.score == pytest.approx(y.score, rel=1e-5, abs=1e-5)
                torch.testing.assert_close(x.attention, y.attention, rtol=1e-6, atol=1e-7)


def test_a_two_model_step_is_the_log_of_the_mean_probability(tiny_checkpoint, other_checkpoint, val_sources):
    ensemble = Translator.from_checkpoint([tiny_checkpoint.path, other_checkpoint]).model
    models = [Translator.from_checkpoint(path).model for path in (tiny_checkpoint.path, other_checkpoint)]
    ids = Translator.from_checkpoint(tiny_checkpoint.path).tokenizer.encode_src(val_sources)
    batch = collate_source(ids, range(len(ids)))
    prev = torch.randint(4, 100, (len(ids),), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        encoded = ensemble.encode(batch.src, batch.src_lengths)
        log_probs, _, attention = ensemble.decode_step(prev, ensemble.init_decoder_state(encoded), encoded)
        steps = []
        for model in models:
            encoded_once = model.encode(batch.src, batch.src_lengths)
            steps.append(model.decode_step(prev, model.init_decoder_state(encoded_once), encoded_once))
    probabilities = (steps[0][0].double().exp() + steps[1][0].double().exp()) / 2
    assert (steps[0][0] - steps[1][0]).abs().max() > 0.1, "the two models should disagree"
    torch.testing.assert_close(log_probs.double(), probabilities.log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention, (steps[0][2] + steps[1][2]) / 2)
    outputs = Translator.from_checkpoint([tiny_checkpoint.path, other_checkpoint]).translate(val_sources)
    assert len(outputs) == len(val_sources) and all(outputs)


@pytest.mark.parametrize("models", [1, 2, 3])
def test_log_mean_probabilities_against_float64(models):
    """Against log(mean exp(log_softmax)) in float64, for logits as peaked as a trained model's and far
    more: equal to 1e-5 wherever the mean probability is within float32's range, and -inf only below it."""
    generator = torch.Generator().manual_seed(models)
    logits = [torch.randn(6, 500, generator=generator) * scale for scale in (3.0, 30.0, 60.0)[:models]]
    expected = torch.stack([torch.log_softmax(x.double(), dim=-1) for x in logits]).exp().mean(0).log()
    found = log_mean_probabilities([x.clone() for x in logits])
    representable = expected > -80
    torch.testing.assert_close(found[representable].double(), expected[representable], rtol=1e-5, atol=1e-5)
    assert torch.all(found[~representable] < -80) and torch.all(expected[found.isinf()] < -103)
    assert found.dtype == torch.float32


def test_checkpoints_of_other_directions_or_vocabularies_do_not_ensemble(tiny_checkpoint, tmp_path):
    payload = load_checkpoint(tiny_checkpoint.path)
    reversed_payload = copy.deepcopy(payload)
    reversed_payload["config"]["data"].update(src="en", tgt="de")
    en_de = save_checkpoint(reversed_payload, tmp_path / "en_de.pt")
    with pytest.raises(LstmMtError, match=r"en_de.pt translates en->de but .*tiny.pt translates de->en"):
        Translator.from_checkpoint([tiny_checkpoint.path, en_de])
    train = load_split(tiny_checkpoint.data, "train")  # the same size of vocabulary from other sentences
    tokenizer = train_or_load_tokenizer(
        SubwordConfig(vocab_size=500), train.src_lines[500:1000], train.tgt_lines[500:1000], tmp_path / "spm"
    )
    other_vocabulary = copy.deepcopy(payload)
    other_vocabulary["tokenizer"] = tokenizer.to_bytes_dict()
    vocabulary = save_checkpoint(other_vocabulary, tmp_path / "vocab.pt")
    with pytest.raises(LstmMtError, match=r"vocab.pt: its vocabulary differs from .*tiny.pt's"):
        Translator.from_checkpoint([tiny_checkpoint.path, vocabulary])


def test_translate_command_takes_a_list_of_checkpoints(tiny_checkpoint, other_checkpoint, tmp_path, capsys):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund rennt.\n\nEin Mann fährt Fahrrad.\n", encoding="utf-8")
    main([f"checkpoint=[{tiny_checkpoint.path},{other_checkpoint}]", f"input={source}", "progress=false"])
    lines = capsys.readouterr().out.splitlines()
    expected = Translator.from_checkpoint([tiny_checkpoint.path, other_checkpoint]).translate(
        source.read_text(encoding="utf-8").splitlines()
    )
    assert lines == expected
    with pytest.raises(LstmMtError, match=r"checkpoint=\[\]: give a checkpoint path or a list of them"):
        main(["checkpoint=[]", f"input={source}"])
