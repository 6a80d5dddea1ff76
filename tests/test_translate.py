"""Tests for lstm_mt.translate (the Translator API and `lstm-mt translate`) and lstm_mt.plotting,
with the tiny Multi30k checkpoint of conftest.py. The command runs in a subprocess, as users run it."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lstm_mt import plotting
from lstm_mt.checkpoint import load_checkpoint, save_checkpoint
from lstm_mt.config import DecodingGrid
from lstm_mt.data import load_split
from lstm_mt.errors import LstmMtError
from lstm_mt.search import SearchConfig
from lstm_mt.translate import Translator, main

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]

# Every kind of line a user's file may hold; the 2,000-token line is longer than max_input_tokens.
AWKWARD_LINES = [
    "Ein Mann fährt Fahrrad.",
    "",
    "   \t ",
    "Zwei Hunde spielen im Schnee.",
    " ".join(["Hund"] * 2000),
    "我们在公园里散步。",
    "رجل يركب دراجة في الشارع.",
    "Мужчина едет на велосипеде.",
    "Ein Hund 🐶 rennt 🏃‍♂️ über die Wiese 🌼.",
    "",
    "Eine Frau liest ein Buch.",
]


@pytest.fixture(scope="module")
def translator(tiny_checkpoint) -> Translator:
    return Translator.from_checkpoint(tiny_checkpoint.path)


@pytest.fixture(scope="module")
def val_sources(tiny_checkpoint) -> list[str]:
    return load_split(tiny_checkpoint.data, "val").src_lines[:12]


def run_cli(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`python -m lstm_mt <args>` in ``cwd``, single-threaded so the test stays quick on a busy machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "lstm_mt", *args], cwd=cwd, input=stdin, capture_output=True, env=env, timeout=120
    )


# --- the Python API ----------------------------------------------------------------------


def test_translator_rebuilds_the_saved_model(translator, tiny_checkpoint):
    saved = tiny_checkpoint.model.state_dict()
    for name, tensor in translator.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert not translator.model.training
    assert translator.tokenizer.to_bytes_dict() == tiny_checkpoint.tokenizer.to_bytes_dict()


def test_batched_translation_keeps_input_order_and_equals_one_at_a_time(translator, val_sources):
    sentences = val_sources + ["", "  "]
    together = translator.translate(sentences, beam_size=3, max_tokens=150)  # batches of 2-3
    assert len(together) == len(sentences)
    assert together[-2:] == ["", ""]
    alone = [translator.translate([sentence], beam_size=3)[0] for sentence in val_sources]
    assert together[:-2] == alone
    assert len(set(together[:-2])) > 3, "different inputs should not all get one output"


def test_beam_size_one_is_greedy_and_nbest_lists_are_ranked(translator, val_sources):
    greedy = translator.translate(val_sources, beam_size=1)
    nbest = translator.translate_nbest(val_sources, SearchConfig(beam_size=1, nbest=1))
    assert [n[0].text for n in nbest] == greedy
    assert nbest[0][0].attention is None, "attention is kept only when asked for"
    results = translator.translate_nbest(
        val_sources, SearchConfig(beam_size=4, alpha=0.6, nbest=3), keep_attention=True
    )
    best = translator.translate(val_sources, beam_size=4, alpha=0.6)
    for source, translations, text in zip(val_sources, results, best):
        assert len(translations) == 3 and translations[0].text == text
        scores = [t.score for t in translations]
        assert scores == sorted(scores, reverse=True)
        for t in translations:
            assert t.text == translator.tokenizer.decode_tgt(t.target_ids)
            assert t.source_ids == translator.tokenizer.encode_src([source])[0]
            rows, columns = t.attention.shape
            assert columns == len(t.source_ids) + 1  # and EOS
            assert rows in (len(t.target_ids) + 1, len(t.target_ids))  # EOS, or cut at the length cap


def test_over_long_input_is_truncated_with_a_warning_naming_the_line(tiny_checkpoint, caplog):
    short = Translator.from_checkpoint(tiny_checkpoint.path, max_input_tokens=5)
    sentences = ["Ein Hund.", "Ein Mann fährt mit seinem Fahrrad durch die Stadt."]
    lengths = [len(ids) for ids in short.tokenizer.encode_src(sentences)]
    assert lengths[0] <= 5 < lengths[1]
    with caplog.at_level(logging.WARNING, logger="lstm_mt"):
        out = short.translate(sentences, source="f.de")
    assert len(out) == 2 and all(out)
    assert [r.getMessage() for r in caplog.records] == [
        f"f.de:2: {lengths[1]} subword tokens, translating only the first 5 (max_input_tokens)"
    ]
    assert short.encode(sentences)[1] == short.tokenizer.encode_src(sentences)[1][:5]


def test_checkpoint_errors_are_one_line(tiny_checkpoint, tmp_path):
    payload = load_checkpoint(tiny_checkpoint.path)
    model_config = dict(payload["config"]["model"])
    payload["config"]["model"] = {**model_config, "hidden": 7}
    save_checkpoint(payload, tmp_path / "bad.pt")
    with pytest.raises(LstmMtError, match=r"bad.pt: config.model key hidden: Key 'hidden' not in 'ModelConfig'"):
        Translator.from_checkpoint(tmp_path / "bad.pt")
    payload["config"]["model"] = {**model_config, "emb_size": 16, "attentional_size": 16}
    save_checkpoint(payload, tmp_path / "bad.pt")
    with pytest.raises(LstmMtError, match=r"bad.pt: weights do not fit config.model"):
        Translator.from_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(LstmMtError, match="checkpoint not found"):
        Translator.from_checkpoint(tmp_path / "missing.pt")
    if not torch.cuda.is_available():
        with pytest.raises(LstmMtError, match="device=cuda: CUDA is not available"):
            Translator.from_checkpoint(tiny_checkpoint.path, device="cuda")


# --- the command -------------------------------------------------------------------------


def test_cli_translates_every_kind_of_line_one_output_line_each(tiny_checkpoint, tmp_path):
    source = tmp_path / "awkward.de"
    source.write_text("\n".join(AWKWARD_LINES) + "\n", encoding="utf-8")
    result = run_cli(
        "translate", f"checkpoint={tiny_checkpoint.path}", f"input={source}", "output=out/awkward.en", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"", "with output= stdout stays empty"
    lines = (tmp_path / "out" / "awkward.en").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == len(AWKWARD_LINES)
    for given, translated in zip(AWKWARD_LINES, lines):
        assert (translated == "") == (given.strip() == ""), (given, translated)
    stderr = result.stderr.decode()
    assert f"warning: {source}:5: " in stderr and "(max_input_tokens)" in stderr
    assert "sentences/s" in stderr and "translate:" in stderr  # speed and the tqdm bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["awkward.de", "out"], "Hydra must leave no folders"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["awkward.en"], "no temporary file left"


def test_cli_reads_stdin_and_writes_stdout(tiny_checkpoint, tmp_path):
    lines = ["Ein Hund rennt.", "", "Мужчина едет на велосипеде.", "Ein Mann fährt Fahrrad."]
    data = ("\n".join(lines) + "\n").encode()
    piped = run_cli(
        "translate", f"checkpoint={tiny_checkpoint.path}", "beam_size=2", "progress=false", cwd=tmp_path, stdin=data
    )
    assert piped.returncode == 0, piped.stderr.decode()
    output = piped.stdout.decode("utf-8").split("\n")
    assert len(output) == len(lines) + 1 and output[1] == "" and output[-1] == ""
    assert output[:-1] == Translator.from_checkpoint(tiny_checkpoint.path).translate(lines, beam_size=2)
    assert "translate:" not in piped.stderr.decode(), "progress=false hides the bar"
    assert list(tmp_path.iterdir()) == []


def read_line_within(stream, seconds: float) -> str:
    """The next line of a subprocess's unbuffered stdout, failing (not hanging) when none comes in time."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no answer within {seconds} s: the input was not answered line by line"
    return stream.readline().decode("utf-8")


def test_cli_answers_each_stdin_line_before_the_next_arrives(tiny_checkpoint, tmp_path):
    lines = ["Ein Hund rennt.", "", "Ein Mann fährt Fahrrad."]
    expected = Translator.from_checkpoint(tiny_checkpoint.path).translate_nbest(
        lines, SearchConfig(beam_size=2, nbest=2)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lstm_mt", "translate", f"checkpoint={tiny_checkpoint.path}", "beam_size=2"]
    process = subprocess.Popen(
        [*command, "nbest=2"], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )  # unbuffered: select() sees every line that has not been read yet
    try:
        for index, line in enumerate(lines):
            process.stdin.write(line.encode("utf-8") + b"\n")
            process.stdin.flush()  # and keep stdin open: the answer must come before more input or its end
            for translation in expected[index]:
                assert (
                    read_line_within(process.stdout, 120)
                    == f"{index} ||| {translation.text} ||| {translation.score:.4f}\n"
                )
        process.stdin.close()
        assert process.wait(timeout=120) == 0
        assert process.stdout.read() == b""
    finally:
        process.kill()
    whole = run_cli(*command[3:], "stream=false", cwd=tmp_path, stdin=("\n".join(lines) + "\n").encode())
    assert whole.stdout.decode().splitlines() == [nbest[0].text for nbest in expected]
    refused = run_cli(*command[3:], "stream=true", "output=x.en", cwd=tmp_path)
    assert refused.returncode == 2 and "stream=true answers stdin on stdout" in refused.stderr.decode()


def test_cli_rejects_invalid_utf8_naming_the_line(tiny_checkpoint, tmp_path):
    source = tmp_path / "broken.de"
    source.write_bytes(b"Ein Hund.\nZwei Katzen.\nEin \xff Mann.\n")
    result = run_cli(
        "translate", f"checkpoint={tiny_checkpoint.path}", f"input={source}", "output=out.en", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"error: {source}:3: invalid UTF-8 (byte 0xff at column 5)"
    assert not (tmp_path / "out.en").exists()


def test_nbest_output_and_config_errors(tiny_checkpoint, tmp_path, capsys):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund rennt.\n\nEin Mann fährt Fahrrad.\n", encoding="utf-8")
    main([f"checkpoint={tiny_checkpoint.path}", f"input={source}", "beam_size=3", "nbest=3", "progress=false"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ||| ")[0] for line in lines] == ["0", "0", "0", "1", "1", "1", "2", "2", "2"]
    scores = [float(line.split(" ||| ")[2]) for line in lines[6:]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(LstmMtError, match="nbest=4: must be between 1 and beam_size"):
        main([f"checkpoint={tiny_checkpoint.path}", f"input={source}", "beam_size=3", "nbest=4"])
    with pytest.raises(LstmMtError, match="checkpoint must be set"):
        main([f"input={source}"])


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_commands_search_with_search_configs_defaults(command):
    """The defaults live in `SearchConfig` alone: the commands' YAML and the recipe grid inherit them."""
    importlib.import_module(f"lstm_mt.{command}")  # registers the command's schema, whatever ran before
    with initialize_config_dir(config_dir=str(ROOT / "lstm_mt" / "configs"), version_base="1.3"):
        composed = compose(command)
    options = {field.name: composed[field.name] for field in dataclasses.fields(SearchConfig)}
    assert options == dataclasses.asdict(SearchConfig())
    grid = DecodingGrid()
    assert (grid.beam_size, grid.alpha) == (SearchConfig.beam_size, SearchConfig.alpha)
    assert (grid.beam_sizes, grid.alphas) == ([SearchConfig.beam_size], [SearchConfig.alpha])


# --- attention heatmaps ------------------------------------------------------------------


def test_attention_plots_label_the_model_pieces(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    drawn = []
    real = plotting.save_attention_heatmap

    def record(path, attention, src_labels, tgt_labels, title=""):
        drawn.append((path.name, tuple(attention.shape), src_labels, tgt_labels))
        return real(path, attention, src_labels, tgt_labels, title)

    monkeypatch.setattr(plotting, "save_attention_heatmap", record)
    source = tmp_path / "in.de"
    source.write_text("\n".join(["Ein Hund rennt.", "", "我们在公园里散步。", "Ein Mann."]) + "\n", encoding="utf-8")
    main(
        [
            f"checkpoint={tiny_checkpoint.path}",
            f"input={source}",
            f"attention_plots={tmp_path / 'plots'}",
            "attention_plots_max=3",
            "progress=false",
        ]
    )
    assert [name for name, *_ in drawn] == ["line-1.png", "line-3.png"]  # line 2 is empty, line 4 past the max
    for name, (rows, columns), src_labels, tgt_labels in drawn:
        assert (len(tgt_labels), len(src_labels)) == (rows, columns)
        assert src_labels[-1] == "</s>"
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn[0][2] == tiny_checkpoint.tokenizer.pieces_src("Ein Hund rennt.") + ["</s>"]


def test_attention_plots_without_matplotlib_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LstmMtError, match=r"attention_plots needs matplotlib.*pip install 'lstm-mt\[plot\]'"):
        plotting.save_attention_heatmap(Path("x.png"), torch.eye(2), ["a", "b"], ["c", "d"])
