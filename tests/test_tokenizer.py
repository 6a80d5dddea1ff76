"""Tests for lstm_mt.tokenizer on real Multi30k text: round trips, fixed special ids,
serialization to bytes, and the training cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from lstm_mt import tokenizer as tokenizer_module
from lstm_mt.data import MIRROR_ENV, DataConfig, load_split
from lstm_mt.errors import LstmMtError
from lstm_mt.tokenizer import Sampling, SubwordConfig, Tokenizer, check_sampling, train_or_load_tokenizer

MIRROR = Path(os.environ.get(MIRROR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="module")
def corpus():
    """Multi30k de-en train (first 8000 pairs, to keep training fast) and full val."""
    if not (MIRROR / "multi30k" / "raw").is_dir():
        pytest.skip(f"no data mirror at {MIRROR}")
    cfg = DataConfig(src="de", tgt="en", mirror=str(MIRROR))
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    return train.src_lines[:8000], train.tgt_lines[:8000], val


@pytest.fixture(scope="module")
def joint(corpus, tmp_path_factory):
    src, tgt, _ = corpus
    cache = tmp_path_factory.mktemp("spm-cache")
    return train_or_load_tokenizer(SubwordConfig(vocab_size=2000), src, tgt, cache), cache


def test_special_ids_are_fixed(joint):
    tok = joint[0]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    sp = spm.SentencePieceProcessor(model_proto=tok.to_bytes_dict()["joint"])
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert sp.get_piece_size() == tok.src_vocab_size == tok.tgt_vocab_size == 2000


def test_round_trip_on_every_val_line(joint, corpus):
    tok, (_, _, val) = joint[0], corpus
    for line, ids in zip(val.src_lines, tok.encode_src(val.src_lines)):
        assert tok.decode_src(ids) == tok.normalize_src(line), line
    for line, ids in zip(val.tgt_lines, tok.encode_tgt(val.tgt_lines)):
        assert tok.decode_tgt(ids) == tok.normalize_tgt(line), line
    assert tok.normalize_src("Zwei  Männer\u00a0gehen ") == "Zwei Männer gehen"


@pytest.mark.parametrize("alpha, nbest", [(0.2, -1), (0.1, 64)])
def test_sampled_segmentation_changes_the_pieces_never_the_text(joint, corpus, alpha, nbest):
    tok, (_, _, val) = joint[0], corpus
    for lines, encode, decode, normalize in [
        (val.src_lines, tok.encode_src, tok.decode_src, tok.normalize_src),
        (val.tgt_lines, tok.encode_tgt, tok.decode_tgt, tok.normalize_tgt),
    ]:
        best = encode(lines)
        draws = [encode(lines, Sampling(alpha, nbest, seed)) for seed in (1, 2)]
        for sampled in draws:
            assert [decode(ids) for ids in sampled] == [normalize(line) for line in lines]
            assert sum(ids != b for ids, b in zip(sampled, best)) > len(lines) / 2
        assert sum(a != b for a, b in zip(*draws)) > len(lines) / 2, "other seeds, other segmentations"
        assert encode(lines, Sampling(alpha, nbest, 1)) == draws[0], "a seed gives its segmentations again"


def test_sampling_settings_that_cannot_sample_name_their_key():
    check_sampling(SubwordConfig(sample_alpha=0.0, sample_nbest=1))  # sampling off: nbest unused
    check_sampling(SubwordConfig(sample_alpha=0.1, sample_nbest=64))
    with pytest.raises(LstmMtError, match=r"^data\.spm\.sample_nbest=1: sampling needs"):
        check_sampling(SubwordConfig(sample_alpha=0.1, sample_nbest=1))
    with pytest.raises(LstmMtError, match=r"^data\.spm\.sample_alpha=1\.5"):
        check_sampling(SubwordConfig(sample_alpha=1.5))


def test_decode_stops_at_eos_and_ignores_pad_and_bos(joint):
    tok = joint[0]
    ids = tok.encode_tgt(["A dog runs through the grass."])[0]
    assert 1 not in ids, "no unknown pieces in a plain sentence"
    padded = [tok.bos_id, *ids, tok.eos_id, *ids, tok.pad_id, tok.pad_id]
    assert tok.decode_tgt(padded) == "A dog runs through the grass."
    assert tok.decode_tgt(torch.tensor(padded)) == "A dog runs through the grass."
    assert tok.decode_tgt([tok.eos_id, *ids]) == ""


def test_pieces_spell_the_sentence(joint):
    tok = joint[0]
    pieces = tok.pieces_src("Ein Mann fährt Fahrrad.")
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).replace("\u2581", " ").strip() == "Ein Mann fährt Fahrrad."


def test_bytes_round_trip_gives_the_same_tokenizer(joint, corpus):
    tok, val = joint[0], corpus[2]
    data = tok.to_bytes_dict()
    assert list(data) == ["joint"] and isinstance(data["joint"], bytes)
    rebuilt = Tokenizer.from_bytes_dict(data)
    assert rebuilt.joint and rebuilt.src_vocab_size == tok.src_vocab_size
    assert rebuilt.encode_src(val.src_lines) == tok.encode_src(val.src_lines)
    with pytest.raises(LstmMtError, match="expected 'joint' or 'src' and 'tgt'"):
        Tokenizer.from_bytes_dict({"model": data["joint"]})


def test_cache_reuses_models_and_retrains_on_change(joint, corpus, monkeypatch):
    tok, cache = joint
    src, tgt, _ = corpus

    def must_not_train(cfg, sentences):
        raise AssertionError("the cached model should have been reused")

    monkeypatch.setattr(tokenizer_module, "train_model", must_not_train)
    again = train_or_load_tokenizer(SubwordConfig(vocab_size=2000), src, tgt, cache)
    assert again.model_files == tok.model_files
    assert Path(tok.model_files[0]).parent.parent == cache / "spm"
    assert (Path(tok.model_files[0]).parent / "settings.json").is_file()
    changes = [(SubwordConfig(vocab_size=1999), src), (SubwordConfig(vocab_size=2000), src[:-1])]
    for changed_cfg, changed_src in changes:
        with pytest.raises(AssertionError, match="should have been reused"):
            train_or_load_tokenizer(changed_cfg, changed_src, tgt, cache)


def test_separate_bpe_vocabularies(corpus, tmp_path):
    src, tgt, val = corpus
    tok = train_or_load_tokenizer(
        SubwordConfig(model_type="bpe", vocab_size=600, joint=False), src[:3000], tgt[:3000], tmp_path
    )
    assert not tok.joint
    assert [Path(p).name for p in tok.model_files] == ["src.model", "tgt.model"]
    assert set(tok.to_bytes_dict()) == {"src", "tgt"}
    assert tok.src_vocab_size == tok.tgt_vocab_size == 600
    assert "▁Mann" in tok.pieces_src("Ein Mann") and "▁man" in tok.pieces_tgt("A man")
    line = val.src_lines[0]
    assert tok.decode_src(tok.encode_src([line])[0]) == tok.normalize_src(line)
    rebuilt = Tokenizer.from_bytes_dict(tok.to_bytes_dict())
    assert rebuilt.encode_tgt(val.tgt_lines[:50]) == tok.encode_tgt(val.tgt_lines[:50])


def test_bad_settings_are_reported(corpus, tmp_path):
    src, tgt, _ = corpus
    with pytest.raises(LstmMtError, match=r"^SentencePiece training failed .*Vocabulary size too high \(5000\)"):
        train_or_load_tokenizer(SubwordConfig(vocab_size=5000), src[:100], tgt[:100], tmp_path)
    with pytest.raises(LstmMtError, match="data.spm.model_type=word: choose one of unigram, bpe"):
        train_or_load_tokenizer(SubwordConfig(model_type="word"), src, tgt, tmp_path)


def test_models_with_other_special_ids_are_refused(corpus):
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[0][:500]), model_writer=writer, vocab_size=200, minloglevel=2
    )  # SentencePiece defaults: unk=0, bos=1, eos=2
    with pytest.raises(LstmMtError, match=r"special ids pad,unk,bos,eos=\(-1, 0, 1, 2\)"):
        Tokenizer(writer.getvalue())


def test_an_existing_model_is_used_as_given_joint_or_per_side(corpus, tmp_path):
    src, tgt, val = corpus
    trained = train_or_load_tokenizer(SubwordConfig(vocab_size=600), src[:2000], tgt[:2000], tmp_path / "trained")
    mine = tmp_path / "mine.model"
    mine.write_bytes(trained.to_bytes_dict()["joint"])
    cache = tmp_path / "cache"
    joint = train_or_load_tokenizer(SubwordConfig(model=str(mine), vocab_size=123), src[:9], tgt[:9], cache)
    assert joint.to_bytes_dict() == trained.to_bytes_dict() and joint.model_files == [str(mine)]
    per_side = train_or_load_tokenizer(SubwordConfig(src_model=str(mine), tgt_model=str(mine)), src, tgt, cache)
    assert not per_side.joint and per_side.encode_tgt(val.tgt_lines[:20]) == trained.encode_tgt(val.tgt_lines[:20])
    assert not cache.exists(), "nothing is trained or cached when the models are given"


def test_given_models_with_other_special_ids_or_half_a_pair_are_one_line_naming_the_key(corpus, tmp_path):
    other = tmp_path / "other.model"
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[0][:500]), model_writer=writer, vocab_size=200, minloglevel=2
    )  # SentencePiece defaults: unk=0, bos=1, eos=2
    other.write_bytes(writer.getvalue())
    cases = [
        (
            SubwordConfig(model=str(other)),
            rf"^data\.spm\.model={other}: SentencePiece model has special ids "
            r"pad,unk,bos,eos=\(-1, 0, 1, 2\); lstm-mt needs \(0, 1, 2, 3\) \(train it with --pad_id=0",
        ),
        (SubwordConfig(src_model=str(other)), r"^data\.spm\.tgt_model is not set"),
        (SubwordConfig(model=str(other), tgt_model=str(other)), r"^data\.spm\.model .* exclude each other"),
        (SubwordConfig(model=str(tmp_path / "none.model")), rf"^{tmp_path}/none\.model: cannot read"),
    ]
    for cfg, message in cases:
        with pytest.raises(LstmMtError, match=message):
            train_or_load_tokenizer(cfg, corpus[0][:9], corpus[1][:9], tmp_path / "cache")


def test_training_is_reproducible_across_processes(tmp_path):
    """Same data and settings give the same model in a fresh process (SentencePiece's own
    sentence sampling is not: lstm-mt samples with its own seed)."""
    import subprocess
    import sys

    program = (
        "import hashlib, sys\n"
        "from lstm_mt.tokenizer import SubwordConfig, train_or_load_tokenizer\n"
        "src = [f'ein Satz Nummer {i} mit Wort{i % 97} und Ding{i % 13}' for i in range(3000)]\n"
        "tgt = [f'a sentence number {i} with word{i % 89} and thing{i % 11}' for i in range(3000)]\n"
        "tok = train_or_load_tokenizer(SubwordConfig(vocab_size=200, max_sentences=500), src, tgt, sys.argv[1])\n"
        "print(hashlib.sha256(b''.join(tok.to_bytes_dict().values())).hexdigest())\n"
    )
    digests = [
        subprocess.run(
            [sys.executable, "-c", program, str(tmp_path / f"cache{k}")], capture_output=True, text=True, check=True
        ).stdout.strip()
        for k in range(2)
    ]
    assert digests[0] == digests[1] and len(digests[0]) == 64
