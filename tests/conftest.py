"""Shared fixtures: a toy corpus made up here, and a small but real checkpoint to decode with.

`toy_pairs` are 300 sentence pairs over a dozen words (the target is the source reversed),
enough for a 30-piece SentencePiece model (`toy_tokenizer`) and for unit tests that need no
real corpus.

For `tiny_checkpoint` (to search, translate and evaluate with), a SentencePiece model is trained on 500 Multi30k de-en training pairs, and a tiny
`Seq2Seq` is overfit for a few seconds on the 48 shortest of them, so that it ends its
outputs with EOS at different lengths and beam search disagrees with greedy search.
The checkpoint has the documented keys (see lstm_mt/checkpoint.py). Seeded, one thread.

At the end, plain helpers that several test files import (``from conftest import compose_train``):
the composed train config, the `lstm-mt train` command line, the ``offline`` fixture and fake
mirrors and custom corpora for the data tests.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

if not torch.cuda.is_available():  # Triton kernels (lstm_mt.lstm.triton_step) then run in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when Triton is imported, which happens later

from lstm_mt.checkpoint import save_checkpoint
from lstm_mt.config import register_configs
from lstm_mt.data import MIRROR_ENV, CustomConfig, DataConfig, FilePair, collate, load_split, sources
from lstm_mt.hydra_app import CONFIG_DIR
from lstm_mt.lstm import cuda_graphs
from lstm_mt.model import ModelConfig, Seq2Seq, build_model
from lstm_mt.tokenizer import SubwordConfig, Tokenizer, train_or_load_tokenizer
from lstm_mt.vocab import PAD_ID

MIRROR = Path(os.environ.get(MIRROR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")

TOKENIZER_PAIRS = 500
TRAINING_PAIRS = 48
TRAINING_STEPS = 160
TINY_MODEL = ModelConfig(
    emb_size=32,
    encoder_hidden=32,
    decoder_hidden=64,
    attentional_size=32,
    attention_hidden=32,
    dropout=0.0,
    embedding_dropout=0.0,
)


@dataclass
class TinyCheckpoint:
    """A saved checkpoint and what made it: the model (eval mode), tokenizer and training sources."""

    path: Path
    model: Seq2Seq
    tokenizer: Tokenizer
    data: DataConfig
    training_sources: list[str]


TOY_WORDS = "the a cat dog sits runs on under red big small mat house tree".split()


def toy_pair_lists(count: int = 300) -> tuple[list[str], list[str]]:
    """``count`` deterministic source sentences of 1-6 toy words, and each one's words reversed."""
    src = [" ".join(TOY_WORDS[(i * k) % len(TOY_WORDS)] for k in range(1, 2 + i % 6)) for i in range(count)]
    return src, [" ".join(reversed(sentence.split())) for sentence in src]


def graphs_or_stand_in(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, module, stand_in: dict
) -> torch.device:
    """The device of a graph test parametrized over ``["cpu", "cuda"]``: CUDA with real graphs (skipped without
    one; TF32 off), or CPU, where ``module`` takes CPU tensors and its attributes ``stand_in`` (a graph class
    that replays by running again) replace the real ones."""
    monkeypatch.delenv(cuda_graphs.ENV, raising=False)
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device: real graphs are CUDA only (the cpu variant checks the rest)")
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    else:
        monkeypatch.setattr(module, "DEVICE_TYPES", {"cpu"})
        for name, value in stand_in.items():
            monkeypatch.setattr(module, name, value)
    return torch.device(request.param)


@pytest.fixture(scope="session")
def toy_pairs() -> tuple[list[str], list[str]]:
    """The toy corpus: 300 (source, target) line lists (see the module docstring)."""
    return toy_pair_lists()


@pytest.fixture(scope="session")
def toy_tokenizer(toy_pairs: tuple[list[str], list[str]], tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A joint 30-piece SentencePiece model trained on the toy corpus."""
    return train_or_load_tokenizer(SubwordConfig(vocab_size=30), *toy_pairs, tmp_path_factory.mktemp("toy_spm"))


@pytest.fixture(scope="session")
def multi30k_de_en() -> DataConfig:
    """Multi30k de-en read from the shared mirror (skips when there is none)."""
    if not (MIRROR / "multi30k" / "raw").is_dir():
        pytest.skip(f"no data mirror at {MIRROR}")
    return DataConfig(src="de", tgt="en", mirror=str(MIRROR), test_splits=["test_2016_flickr"])


@pytest.fixture(scope="session")
def tiny_checkpoint(multi30k_de_en: DataConfig, tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """The tiny checkpoint, trained once per test session (about 10 s on one core)."""
    train = load_split(multi30k_de_en, "train")
    src, tgt = train.src_lines[:TOKENIZER_PAIRS], train.tgt_lines[:TOKENIZER_PAIRS]
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    tokenizer = train_or_load_tokenizer(SubwordConfig(vocab_size=500), src, tgt, folder / "cache")
    shortest = sorted(range(len(src)), key=lambda i: (len(src[i]), i))[:TRAINING_PAIRS]
    sources = [src[i] for i in shortest]
    model = _overfit(tokenizer, sources, [tgt[i] for i in shortest])
    path = save_checkpoint(
        {
            "model": model.state_dict(),
            "config": {"data": asdict(multi30k_de_en), "model": asdict(TINY_MODEL), "train": {}},
            "tokenizer": tokenizer.to_bytes_dict(),
            "vocab_sizes": {"src": tokenizer.src_vocab_size, "tgt": tokenizer.tgt_vocab_size},
            "step": TRAINING_STEPS,
            "epoch": TRAINING_STEPS,
        },
        folder / "tiny.pt",
    )
    return TinyCheckpoint(path, model.eval(), tokenizer, multi30k_de_en, sources)


def _overfit(tokenizer: Tokenizer, sources: list[str], targets: list[str]) -> Seq2Seq:
    """The tiny model after full-batch Adam steps on the given pairs (one thread: fast and repeatable)."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    batch = collate(tokenizer.encode_src(sources), tokenizer.encode_tgt(targets), range(len(sources)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(TRAINING_STEPS):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model


# --- helpers shared by several test files (imported with `from conftest import ...`) -------------

REPO = Path(__file__).resolve().parents[1]
needs_mirror = pytest.mark.skipif(not (MIRROR / "multi30k" / "raw").is_dir(), reason=f"no data mirror at {MIRROR}")


def compose_train(*overrides: str) -> DictConfig:
    """The job config exactly as `lstm-mt train <overrides>` composes it."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def train_cli(*args: str) -> list[str]:
    """The command line of `lstm-mt train <args>` run with this Python."""
    return [sys.executable, "-m", "lstm_mt", "train", *args]


def run_train_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`lstm-mt train <args>` run from the repository root, output captured as text."""
    return subprocess.run(train_cli(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(autouse=True)
def fresh_cuda_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without CUDA graphs: one captured in another test would replay the kernels it
    launched then, whatever this test patches (lstm_mt.lstm.cuda_graphs)."""
    from lstm_mt.lstm import cuda_graphs

    monkeypatch.setattr(cuda_graphs, "_cache", None)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test picks its mirror explicitly, and any real download attempt fails the test."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def no_network(url, out):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(sources, "fetch_url", no_network)


def write_gz(path: Path, data: bytes) -> Path:
    """``data`` gzipped into ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data))
    return path


def fake_multi30k(root: Path, files: dict[str, bytes]) -> Path:
    """A mirror folder holding only ``files`` (name like 'train.de' -> content)."""
    for name, data in files.items():
        write_gz(root / "multi30k" / "raw" / f"{name}.gz", data)
    return root


def custom_config(tmp_path: Path, train: tuple[bytes, bytes], valid: tuple[bytes, bytes], **kwargs) -> DataConfig:
    """A ``data=custom`` config over files written here: plain train, gzipped valid, test sets t1 and t2."""

    def pair(name: str, texts: tuple[bytes, bytes], gz: bool) -> FilePair:
        paths = [tmp_path / f"{name}.{side}{'.gz' if gz else ''}" for side in ("src", "tgt")]
        for path, text in zip(paths, texts):
            path.write_bytes(gzip.compress(text) if gz else text)
        return FilePair(str(paths[0]), str(paths[1]))

    custom = CustomConfig(
        train=pair("train", train, gz=False),
        valid=pair("valid", valid, gz=True),
        test={"t1": pair("t1", (b"x\n", b"y\n"), gz=False), "t2": pair("t2", (b"p\nq\n", b"r\ns\n"), gz=True)},
    )
    return DataConfig(
        name="custom",
        src="src",
        tgt="tgt",
        valid_split="valid",
        cache_dir=str(tmp_path / "cache"),
        custom=custom,
        **kwargs,
    )


def use_point_wise(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the LSTM's point-wise step run as ``kind``: "tensor" (C kernel off) or "native" (skip where
    no C compiler can build it); for fixtures that run a test both ways."""
    from lstm_mt.lstm import native

    if kind == "tensor":
        monkeypatch.setattr(native, "_library", lambda: None)
    elif not native.available():
        pytest.skip("no C compiler here: the compiled kernel is not built")
