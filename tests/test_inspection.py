"""Tests for lstm_mt.inspection: the statistics on hand-made gates with known answers, the
saved arrays against the LSTM equations for real tiny models (conftest's trained checkpoint
and an untrained one with two layers per side), and `lstm-mt inspect` end to end on a
sentence with unknown, non-Latin characters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lstm_mt.cli import SUBCOMMANDS
from lstm_mt.errors import LstmMtError
from lstm_mt.inspection import (
    GateStats,
    MemorySpan,
    cell_state_norm,
    gate_stats,
    long_memory_units,
    longest_runs_above,
    main,
    summarize_layer,
    top_variance_units,
    trace_sentence,
    trace_translation,
)
from lstm_mt.inspection.command import quote_free_text, register_configs
from lstm_mt.inspection.figures import require_matplotlib
from lstm_mt.inspection.report import write_arrays
from lstm_mt.inspection.tracing import decoded_ids
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.search import SearchConfig, greedy_search
from lstm_mt.translate import Translator
from lstm_mt.vocab import EOS_ID, UNK_ID

torch.set_num_threads(1)

NON_LATIN = "Ein Mann fährt Fahrrad 🚲 в Москве 北京"
TINY = ModelConfig(  # two layers on each side, so layer inputs and directions are exercised
    emb_size=16,
    encoder_hidden=12,
    encoder_layers=2,
    decoder_hidden=20,
    decoder_layers=2,
    attentional_size=16,
    attention_hidden=10,
    dropout=0.0,
    embedding_dropout=0.0,
)


# --- statistics on hand-made gates ---------------------------------------------------


def test_longest_run_above_threshold_per_unit():
    forget = np.array(
        [
            [0.95] * 7 + [0.2] * 3,  # 7 steps from 0
            [0.2, 0.95, 0.95, 0.95, 0.2, 0.95, 0.95, 0.95, 0.95, 0.95],  # runs of 3 and 5: 5 from 5
            [0.5] * 10,  # never
            [0.9] * 10,  # the threshold itself is not above it
            [0.2, 0.99] + [0.2] * 8,  # one step
        ]
    ).T
    lengths, starts = longest_runs_above(forget, 0.9)
    assert lengths.tolist() == [7, 5, 0, 0, 1]
    assert starts.tolist() == [0, 5, 0, 0, 1]

    spans = long_memory_units(forget, threshold=0.9, count=5)
    assert spans == [MemorySpan(unit=0, start=0, length=7), MemorySpan(unit=1, start=5, length=5)]
    assert [span.end for span in spans] == [6, 9]
    assert long_memory_units(forget, count=1) == spans[:1]
    assert long_memory_units(forget, min_length=1)[-1] == MemorySpan(unit=4, start=1, length=1)


def test_equally_long_memory_spans_rank_by_unit():
    forget = np.full((6, 3), 0.1)
    forget[1:4, 2] = 0.97
    forget[2:5, 0] = 0.97
    assert long_memory_units(forget) == [MemorySpan(0, 2, 3), MemorySpan(2, 1, 3)]


def test_gate_stats_mean_and_saturation_rates():
    values = np.array([[0.05, 0.1, 0.5, 0.9], [0.95, 0.99, 0.0, 1.0]])
    stats = gate_stats(values)
    assert stats.mean == pytest.approx(values.mean())
    assert stats.closed == pytest.approx(2 / 8)  # 0.05 and 0.0; 0.1 itself is not below 0.1
    assert stats.open == pytest.approx(3 / 8)  # 0.95, 0.99, 1.0; 0.9 itself is not above 0.9
    assert stats.saturated == pytest.approx(5 / 8)


def test_top_variance_units_and_cell_state_norm():
    steps = np.linspace(0, 1, 5)[:, None]
    values = np.hstack([0.5 + 0 * steps, 0.1 * steps, 0.5 + 0.4 * steps, 0.3 * steps])  # variances 0 < 1 < 4 > 3
    assert top_variance_units(values, 2).tolist() == [2, 3]
    assert top_variance_units(values, 10).tolist() == [2, 3, 1, 0]
    assert top_variance_units(np.full((4, 3), 0.5), 2).tolist() == [0, 1]
    assert cell_state_norm(np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])).tolist() == [5.0, 0.0, 1.0]


def test_summarize_layer():
    arrays = {"i": np.full((8, 2), 0.05), "f": np.full((8, 2), 0.95), "o": np.full((8, 2), 0.5)}
    arrays["f"][4, 1] = 0.3
    summary = summarize_layer("decoder.layer0", arrays)
    assert (summary.steps, summary.units) == (8, 2)
    assert summary.gates == {
        "input": GateStats(mean=pytest.approx(0.05), closed=1.0, open=0.0),
        "forget": GateStats(mean=pytest.approx((15 * 0.95 + 0.3) / 16), closed=0.0, open=15 / 16),
        "output": GateStats(mean=pytest.approx(0.5), closed=0.0, open=0.0),
    }
    assert summary.memory_units == [MemorySpan(0, 0, 8), MemorySpan(1, 0, 4)]


# --- a real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_layer_model(tiny_checkpoint):
    """An untrained model with two layers on each side, for the tokenizer of conftest's checkpoint."""
    tokenizer = tiny_checkpoint.tokenizer
    torch.manual_seed(0)
    return build_model(TINY, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size).eval()


@pytest.fixture(scope="module", params=["two layers, untrained", "one layer, trained"])
def traced(request, two_layer_model, tiny_checkpoint, tmp_path_factory):
    """A model, and the arrays its trace of the non-Latin sentence saved to .npz, read back as a dict."""
    model = two_layer_model if request.param.startswith("two") else tiny_checkpoint.model
    trace = trace_sentence(Translator(model, tiny_checkpoint.tokenizer), NON_LATIN)
    path = write_arrays(trace, tmp_path_factory.mktemp("arrays") / "arrays.npz")
    with np.load(path) as arrays:  # no allow_pickle: strings are stored as unicode arrays
        return model, {key: arrays[key] for key in arrays.files}


def previous(states: np.ndarray, initial: np.ndarray, backward: bool) -> np.ndarray:
    """Each step's preceding state in the layer's running order (a backward layer runs from the end)."""
    if backward:
        return np.vstack([states[1:], initial[None]])
    return np.vstack([initial[None], states[:-1]])


def recomputed_gates(cell, x: np.ndarray, h_prev: np.ndarray) -> dict[str, np.ndarray]:
    """i, f, g, o from the cell's weights, the layer input x_t and h_{t-1}: the equations, once more."""
    gates = {}
    for letter, (name, weights) in zip("ifgo", cell.gate_parameters().items()):
        pre = x @ weights["W_x"].detach().numpy().T + h_prev @ weights["W_h"].detach().numpy().T
        pre = pre + weights["b"].detach().numpy()
        gates[letter] = np.tanh(pre) if name == "candidate" else 1 / (1 + np.exp(-pre))
    return gates


def layer_names(model) -> list[str]:
    encoder = [f"encoder.layer{k}.{d}" for k in range(model.encoder.rnn.num_layers) for d in ("forward", "backward")]
    return encoder + [f"decoder.layer{k}" for k in range(len(model.decoder.cells.layers))]


def test_saved_cell_states_and_outputs_follow_the_equations(traced):
    """c_t = f*c_{t-1} + i*C̃ and h_t = o*tanh(c_t), on every encoder and decoder layer in the .npz."""
    model, saved = traced
    names = layer_names(model)
    assert {key.rsplit(".", 1)[0] for key in saved if key.startswith(("encoder", "decoder"))} == set(names)
    for name in names:
        i, f, g, o, c, h, c0 = (saved[f"{name}.{key}"] for key in ("i", "f", "g", "o", "c", "h", "c0"))
        c_prev = previous(c, c0, backward=name.endswith("backward"))
        np.testing.assert_allclose(c, f * c_prev + i * g, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(h, o * np.tanh(c), atol=1e-5, err_msg=name)
    assert not np.allclose(saved["decoder.layer0.c0"], 0), "the decoder starts from the bridge, not from zeros"


def test_saved_gates_follow_from_the_layer_inputs_and_weights(traced):
    """Gates are σ/tanh of W·[h_{t-1}, x_t] + b, x_t the embedding or the layer below (decoder: above layer 0)."""
    model, saved = traced
    layer_input = model.encoder.embedding(torch.tensor(saved["src_ids"])).detach().numpy()
    for layer, cells in enumerate(model.encoder.rnn.layers):
        for direction, cell in zip(("forward", "backward"), cells):
            name = f"encoder.layer{layer}.{direction}"
            h_prev = previous(saved[f"{name}.h"], saved[f"{name}.h0"], backward=direction == "backward")
            for letter, value in recomputed_gates(cell, layer_input, h_prev).items():
                np.testing.assert_allclose(saved[f"{name}.{letter}"], value, atol=1e-5, err_msg=f"{name}.{letter}")
        layer_input = np.hstack([saved[f"encoder.layer{layer}.forward.h"], saved[f"encoder.layer{layer}.backward.h"]])
    for layer, cell in enumerate(model.decoder.cells.layers[1:], start=1):
        name = f"decoder.layer{layer}"
        h_prev = previous(saved[f"{name}.h"], saved[f"{name}.h0"], backward=False)
        for letter, value in recomputed_gates(cell, saved[f"decoder.layer{layer - 1}.h"], h_prev).items():
            np.testing.assert_allclose(saved[f"{name}.{letter}"], value, atol=1e-5, err_msg=f"{name}.{letter}")


def test_saved_arrays_are_the_models_outputs(traced, tiny_checkpoint):
    """The top encoder layer's h is the memory the decoder attends over; the attention is greedy search's."""
    model, saved = traced
    src = torch.tensor(saved["src_ids"])[None]
    lengths = torch.tensor([src.shape[1]])
    top = model.encoder.rnn.num_layers - 1
    memory = (
        model.encode(src, lengths).memory[0].detach().numpy()
    )  # with gradients: the training path, float32 rounding apart
    np.testing.assert_allclose(
        np.hstack([saved[f"encoder.layer{top}.forward.h"], saved[f"encoder.layer{top}.backward.h"]]), memory, atol=1e-5
    )
    hypothesis = greedy_search(model, src, lengths)[0]
    np.testing.assert_allclose(saved["attention"], hypothesis.attention.numpy(), atol=1e-6)
    steps, src_steps = saved["attention"].shape
    assert saved["decoder.layer0.f"].shape == (steps, model.decoder.cells.hidden_size)
    assert saved["encoder.layer0.backward.i"].shape == (src_steps, model.encoder.rnn.hidden_size)
    assert len(saved["tgt_pieces"]) == len(saved["tgt_ids"]) == steps
    assert len(saved["src_pieces"]) == len(saved["src_ids"]) == src_steps
    assert str(saved["source"]) == NON_LATIN
    assert str(saved["translation"]) == tiny_checkpoint.tokenizer.decode_tgt(hypothesis.tokens)
    if len(hypothesis.tokens) < steps:  # ended with EOS: the last step is labelled so
        assert saved["tgt_pieces"][-1] == "</s>" and saved["tgt_ids"][-1] == EOS_ID


def test_unknown_characters_keep_their_own_labels(traced):
    """Characters the tokenizer has never seen are <unk> ids but keep their text as labels."""
    _, saved = traced
    unknown = [piece for piece, i in zip(saved["src_pieces"].tolist(), saved["src_ids"].tolist()) if i == UNK_ID]
    assert {"🚲", "北京"} <= set(unknown)
    assert saved["src_pieces"][-1] == "</s>"


def test_tracing_along_the_greedy_translation_equals_tracing_the_search(two_layer_model, tiny_checkpoint):
    """Teacher forcing the greedy output records what greedy search itself computed."""
    translator = Translator(two_layer_model, tiny_checkpoint.tokenizer)
    searched = trace_sentence(translator, NON_LATIN)
    (greedy,) = translator.translate_nbest([NON_LATIN], SearchConfig(beam_size=1), keep_attention=True)[0]
    forced = trace_translation(translator, NON_LATIN, greedy)
    assert (forced.tgt_pieces, forced.src_pieces) == (searched.tgt_pieces, searched.src_pieces)
    assert [layer.name for layer in forced.layers] == [layer.name for layer in searched.layers]
    for ours, theirs in zip(forced.layers, searched.layers):
        for key, value in theirs.arrays.items():
            np.testing.assert_allclose(ours.arrays[key], value, atol=1e-5, err_msg=f"{ours.name}.{key}")


def first_difference(a: list[int], b: list[int]) -> int:
    """The first position where ``a`` and ``b`` differ (the shorter length if one is a prefix of the other)."""
    return next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_tracing_a_beam_translation_follows_its_tokens(tiny_checkpoint):
    """Along a beam output that differs from greedy's, the decoder agrees with greedy search's up to
    the step that reads the first differing token, and differs from there on."""
    translator = Translator(tiny_checkpoint.model, tiny_checkpoint.tokenizer)
    for sentence in tiny_checkpoint.training_sources:
        (beam,) = translator.translate_nbest([sentence], SearchConfig(beam_size=5), keep_attention=True)[0]
        greedy = trace_sentence(translator, sentence)
        beam_ids = decoded_ids(beam)
        split = first_difference(beam_ids, greedy.tgt_ids)
        if split + 1 < min(len(beam_ids), len(greedy.tgt_ids)):  # both go on after the difference
            break
    else:
        pytest.skip("no training sentence where beam and greedy search part before their last step")
    forced = trace_translation(translator, sentence, beam)
    assert forced.translation == beam.text and forced.tgt_ids == beam_ids
    (decoder,), (greedy_decoder,) = forced.side("decoder"), greedy.side("decoder")
    assert len(decoder.arrays["h"]) == len(beam_ids)
    # step t reads the token written at step t-1, so the first split + 1 steps read the same tokens
    np.testing.assert_allclose(decoder.arrays["h"][: split + 1], greedy_decoder.arrays["h"][: split + 1], atol=1e-5)
    assert not np.allclose(decoder.arrays["h"][split + 1], greedy_decoder.arrays["h"][split + 1], atol=1e-5)


# --- the command -----------------------------------------------------------------------


def inspect_command() -> list[str]:
    """`python -m lstm_mt inspect` once the subcommand is registered; `inspection.main` until then."""
    if "inspect" in SUBCOMMANDS:
        return [sys.executable, "-m", "lstm_mt", "inspect"]
    return [sys.executable, "-c", "import sys; from lstm_mt.inspection import main; sys.exit(main())"]


@pytest.mark.slow
def test_command_writes_figures_page_and_arrays_for_a_non_latin_sentence(tiny_checkpoint, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [*inspect_command(), f"checkpoint={tiny_checkpoint.path}", f"text={NON_LATIN}", f"output_dir={out}", "top_k=5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, "glyphs no font has are drawn as boxes, silently"
    folder = out / "sentence_001"
    assert sorted(path.name for path in folder.iterdir()) == [
        "arrays.npz",
        "attention.png",
        "cell_state_norm.png",
        "gates_decoder_layer0.png",
        "gates_encoder_layer0_backward.png",
        "gates_encoder_layer0_forward.png",
        "report.html",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"], "no Hydra outputs beside the report"
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.name
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert NON_LATIN in page and "<code>北京</code>" in page and "Long-term memory units" in page
    for image in ("attention.png", "gates_decoder_layer0.png", "cell_state_norm.png"):
        assert f'src="{image}"' in page
    with np.load(folder / "arrays.npz") as arrays:
        assert str(arrays["source"]) == NON_LATIN
        assert UNK_ID in arrays["src_ids"].tolist()
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="sentence_001/report.html"' in index and NON_LATIN in index
    assert result.stdout.strip().splitlines()[-1] == str(out / "index.html")


@pytest.mark.slow
def test_input_file_blank_lines_and_max_sentences(tiny_checkpoint, tmp_path):
    sentences = tmp_path / "sentences.de"
    sentences.write_text("Zwei Hunde spielen.\n\n   \nEine Frau liest.\nNicht mehr.\n", encoding="utf-8")
    out = tmp_path / "out"
    main(
        [
            f"checkpoint={tiny_checkpoint.path}",
            f"input={sentences}",
            f"output_dir={out}",
            "max_sentences=2",
            "top_k=100",
            "device=cpu",
        ]
    )
    assert sorted(path.name for path in out.iterdir()) == ["index.html", "sentence_001", "sentence_002"]
    with np.load(out / "sentence_002" / "arrays.npz") as arrays:
        assert str(arrays["source"]) == "Eine Frau liest."
    assert "Zwei Hunde spielen." in (out / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["text=Hallo"], "checkpoint=PATH is required"),
        (["checkpoint=CKPT"], "give either text"),
        (["checkpoint=CKPT", "text=Hallo", "input=x.txt"], "give either text"),
        (["checkpoint=CKPT", "text=   "], "no sentence to inspect"),
        (["checkpoint=CKPT", "input=NONE"], "no such file"),
        (["checkpoint=CKPT", "text=Hallo", "top_k=0"], "top_k=0: must be an integer >= 1"),
        (["checkpoint=CKPT", "text=Hallo", "max_sentences=0"], "max_sentences=0: must be an integer >= 1"),
        (["checkpoint=NONE", "text=Hallo"], "checkpoint not found"),
    ],
)
def test_mistakes_are_one_line_errors(arguments, message, tiny_checkpoint, tmp_path):
    paths = {"CKPT": str(tiny_checkpoint.path), "NONE": str(tmp_path / "none")}
    arguments = [a.replace("CKPT", paths["CKPT"]).replace("NONE", paths["NONE"]) for a in arguments]
    with pytest.raises(LstmMtError, match=message):
        main([*arguments, f"output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_any_sentence_reaches_the_config_unchanged():
    """Commas, quotes, backslashes, ${...} and non-ASCII letters are text, not Hydra syntax."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lstm_mt.hydra_app import CONFIG_DIR

    register_configs()
    sentences = [
        NON_LATIN,
        'Er sagt: "Ja, ich komm\' gleich" [sofort] {x: 1}',
        "a\\b\\",
        "${oc.env:HOME} kostet $5",
        "  null  ",
        "1.5",
        "x=y",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for sentence in sentences:
            cfg = compose("inspect", overrides=quote_free_text([f"text={sentence}", "top_k=3"]))
            assert OmegaConf.to_object(cfg).text == sentence
        assert OmegaConf.to_object(compose("inspect", overrides=quote_free_text(["text='a, b'"]))).text == "a, b"


def test_missing_matplotlib_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(LstmMtError, match=r"^lstm-mt inspect draws its figures with matplotlib: pip install"):
        require_matplotlib()
