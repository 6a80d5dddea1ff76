"""SentencePiece subwords: training (on the training split only), caching, encoding, decoding.

Every model built here has the special ids of `lstm_mt.vocab` (pad=0, unk=1, bos=2, eos=3),
so model code can use them as constants. `SubwordConfig` (``data.spm``) holds the settings.
A :class:`Tokenizer` serializes to a dict of bytes, which a checkpoint stores to re-tokenize and detokenize without the original files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from lstm_mt.errors import LstmMtError
from lstm_mt.files import write_bytes_atomic
from lstm_mt.ranges import bounded, check_ranges
from lstm_mt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

log = logging.getLogger(__name__)

MODEL_TYPES = ("unigram", "bpe")
SPM_SEED = 0  # SentencePiece's sampling seed, fixed so a retrain gives the same model
CACHE_FORMAT = 1  # bump when training arguments change, to invalidate old cached models


@dataclass
class SubwordConfig:
    """SentencePiece settings; the model is trained on the training split only.

    ``joint`` trains one model on source and target text together (shared vocabulary);
    otherwise one model per side. Special ids are fixed (pad=0, unk=1, bos=2, eos=3).
    ``max_sentences`` caps the sentences SentencePiece samples (input_sentence_size).
    ``sample_alpha`` > 0 turns on subword regularization (Kudo 2018; BPE-dropout for bpe
    models): each training batch gets a freshly sampled segmentation, drawn with SentencePiece's
    ``alpha`` (unigram: smoothing, lower samples more widely; bpe: dropout probability) from
    the ``sample_nbest`` best segmentations (-1: all of them). Valid and test text and the
    model itself are unchanged; 0 keeps the one best segmentation everywhere.
    An existing model is used instead of training one when ``model`` (joint) or both
    ``src_model`` and ``tgt_model`` name ``.model`` files; the training settings are then unused.
    """

    model_type: str = "unigram"
    vocab_size: int = bounded(8000, ge=5)
    joint: bool = True
    character_coverage: float = bounded(1.0, gt=0, le=1)
    byte_fallback: bool = False
    max_sentences: int = bounded(1_000_000, ge=1)
    model: str | None = None
    src_model: str | None = None
    tgt_model: str | None = None
    sample_alpha: float = bounded(0.0, ge=0, le=1)
    sample_nbest: int = bounded(-1, ge=-1)


@dataclass(frozen=True)
class Sampling:
    """One draw of sampled segmentations: SentencePiece's ``alpha`` and ``nbest_size``, and a seed.

    The same seed gives the same segmentations of the same sentences, so a resumed training
    run sees exactly the batches it would have seen.
    """

    alpha: float
    nbest: int
    seed: int


def available_cores() -> int:
    """CPU cores this process may use (respects affinity masks, unlike os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Tokenizer:
    """One joint SentencePiece model, or one per side, with the project's fixed special ids.

    Encoding returns plain subword ids (no bos/eos; batching adds them). Decoding stops at the
    first eos and ignores pad and bos, so a padded model output can be decoded as is.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, src_model: bytes, tgt_model: bytes | None = None, model_files: Sequence[str] = ()) -> None:
        self.joint = tgt_model is None
        self._protos = {"src": src_model, "tgt": src_model if tgt_model is None else tgt_model}
        self._src = _processor(src_model, "source")
        self._tgt = self._src if self.joint else _processor(self._protos["tgt"], "target")
        self.model_files = list(model_files)

    @classmethod
    def from_files(cls, src_model: str | Path, tgt_model: str | Path | None = None) -> Tokenizer:
        """Load ``.model`` file(s) written by SentencePiece (joint when ``tgt_model`` is None)."""
        paths = [Path(src_model)] + ([Path(tgt_model)] if tgt_model is not None else [])
        protos = [_read_model(p) for p in paths]
        return cls(protos[0], protos[1] if len(protos) > 1 else None, [str(p) for p in paths])

    def to_bytes_dict(self) -> dict[str, bytes]:
        """Serialized model(s): {"joint": ...} or {"src": ..., "tgt": ...}."""
        if self.joint:
            return {"joint": self._protos["src"]}
        return {"src": self._protos["src"], "tgt": self._protos["tgt"]}

    @classmethod
    def from_bytes_dict(cls, data: dict[str, bytes]) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_bytes_dict` output (e.g. stored in a checkpoint)."""
        if "joint" in data:
            return cls(data["joint"])
        if "src" in data and "tgt" in data:
            return cls(data["src"], data["tgt"])
        raise LstmMtError(f"tokenizer data has keys {sorted(data)}; expected 'joint' or 'src' and 'tgt'")

    @property
    def src_vocab_size(self) -> int:
        """Number of source ids, special ids included."""
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        """Number of target ids, special ids included."""
        return self._tgt.get_piece_size()

    def encode_src(self, texts: Sequence[str], sampling: Sampling | None = None) -> list[list[int]]:
        """Subword ids of each source sentence (no bos/eos): the best segmentation, or a sampled one."""
        return _encode(self._src, texts, sampling)

    def encode_tgt(self, texts: Sequence[str], sampling: Sampling | None = None) -> list[list[int]]:
        """Subword ids of each target sentence (no bos/eos): the best segmentation, or a sampled one."""
        return _encode(self._tgt, texts, sampling)

    def decode_src(self, ids: Sequence[int]) -> str:
        """Detokenized source text of ``ids`` (up to the first eos, pad/bos ignored)."""
        return self._src.decode(_strip_specials(ids))

    def decode_tgt(self, ids: Sequence[int]) -> str:
        """Detokenized target text of ``ids`` (up to the first eos, pad/bos ignored)."""
        return self._tgt.decode(_strip_specials(ids))

    def pieces_src(self, text: str) -> list[str]:
        """Subword strings of a source sentence, e.g. for labelling attention plots."""
        return self._src.encode(text, out_type=str)

    def pieces_tgt(self, text: str) -> list[str]:
        """Subword strings of a target sentence."""
        return self._tgt.encode(text, out_type=str)

    def tgt_id_pieces(self, ids: Sequence[int]) -> list[str]:
        """Subword strings of target ``ids`` as the model produced them (EOS as ``</s>``).

        Taken from the ids, not by re-encoding the detokenized text, which could segment it
        differently.
        """
        return [self._tgt.id_to_piece(int(i)) for i in ids]

    def normalize_src(self, text: str) -> str:
        """``text`` as encode-then-decode returns it (nmt_nfkc normalization; unknown characters aside)."""
        return _normalize(self._src, text)

    def normalize_tgt(self, text: str) -> str:
        """``text`` as encode-then-decode gives it back on the target side."""
        return _normalize(self._tgt, text)


def train_or_load_tokenizer(
    cfg: SubwordConfig, src_train: Sequence[str], tgt_train: Sequence[str], cache_dir: str | Path
) -> Tokenizer:
    """The tokenizer for these training sentences and settings, trained once and then reused.

    Models live in ``<cache_dir>/spm/<key>/``, where key hashes the training text and every
    setting that changes the model, so changed data or settings never reuse a stale model.
    """
    check_sampling(cfg)
    given = _given_models(cfg)
    if given:
        log.info("SentencePiece: using %s", ", ".join(f"{key}={path}" for key, path in given))
        return _load_given_models(given)
    _check_settings(cfg)
    settings = _settings(cfg)
    folder = Path(cache_dir) / "spm" / _cache_key(settings, src_train, tgt_train)
    names = ["joint.model"] if cfg.joint else ["src.model", "tgt.model"]
    paths = [folder / name for name in names]
    if all(p.is_file() for p in paths):
        log.info("SentencePiece: reusing %s", ", ".join(map(str, paths)))
        return Tokenizer.from_files(*paths)
    sides = [list(src_train) + list(tgt_train)] if cfg.joint else [src_train, tgt_train]
    for path, lines in zip(paths, sides):
        log.info(
            "SentencePiece: training %s %s (vocab %d) on %d sentences",
            "joint" if cfg.joint else path.stem,
            cfg.model_type,
            cfg.vocab_size,
            len(lines),
        )
        write_bytes_atomic(path, train_model(cfg, lines))
    write_bytes_atomic(folder / "settings.json", json.dumps(settings, indent=2).encode())
    return Tokenizer.from_files(*paths)


def train_model(cfg: SubwordConfig, sentences: Sequence[str]) -> bytes:
    """Train one SentencePiece model on ``sentences`` and return its serialized bytes."""
    writer = io.BytesIO()
    if cfg.max_sentences and len(sentences) > cfg.max_sentences:
        # Sampled here, seeded: SentencePiece's own sampling differs from process to process.
        sentences = random.Random(SPM_SEED).sample(list(sentences), cfg.max_sentences)
    spm.set_random_generator_seed(SPM_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=writer,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            input_sentence_size=0,  # all of ``sentences``: sampled above
            shuffle_input_sentence=False,
            num_threads=available_cores(),
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            minloglevel=2,
        )
    except RuntimeError as e:
        # keep SentencePiece's own sentence, drop its "INTERNAL: file.cc(744) [check]" prefix
        reason = re.sub(r"^.*\]\s*", "", str(e).strip().splitlines()[-1]) if str(e).strip() else repr(e)
        raise LstmMtError(f"SentencePiece training failed with data.spm settings: {reason}") from None
    return writer.getvalue()


def _settings(cfg: SubwordConfig) -> dict:
    return {
        "format": CACHE_FORMAT,
        "sentencepiece": spm.__version__,
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "joint": cfg.joint,
        "character_coverage": cfg.character_coverage,
        "byte_fallback": cfg.byte_fallback,
        "max_sentences": cfg.max_sentences,
    }


def _cache_key(settings: dict, src: Sequence[str], tgt: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for lines in (src, tgt):
        digest.update(f"\0{len(lines)}\0".encode())
        digest.update("\n".join(lines).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _check_settings(cfg: SubwordConfig) -> None:
    if cfg.model_type not in MODEL_TYPES:
        raise LstmMtError(f"data.spm.model_type={cfg.model_type}: choose one of {', '.join(MODEL_TYPES)}")
    if cfg.vocab_size <= EOS_ID + 1:
        raise LstmMtError(f"data.spm.vocab_size={cfg.vocab_size}: must be larger than {EOS_ID + 1}")
    if not 0 < cfg.character_coverage <= 1:
        raise LstmMtError(f"data.spm.character_coverage={cfg.character_coverage}: must be in (0, 1]")


def check_sampling(cfg: SubwordConfig) -> None:
    """`LstmMtError` naming the key when ``sample_alpha``/``sample_nbest`` are out of their declared
    ranges (`lstm_mt.ranges`, for configs built in Python) or cannot sample anything."""
    check_ranges(cfg, "data.spm.")
    if cfg.sample_alpha > 0 and cfg.sample_nbest in (0, 1):
        raise LstmMtError(
            f"data.spm.sample_nbest={cfg.sample_nbest}: sampling needs -1 (all segmentations) or at least 2"
        )


def _given_models(cfg: SubwordConfig) -> list[tuple[str, str]]:
    """The (config key, path) of each existing model the user named: none, the joint one, or one per side."""
    per_side = {"data.spm.src_model": cfg.src_model, "data.spm.tgt_model": cfg.tgt_model}
    if cfg.model is not None and any(per_side.values()):
        raise LstmMtError(
            "data.spm.model (one joint model) and data.spm.src_model/tgt_model (one per side) exclude each other"
        )
    if cfg.model is not None:
        return [("data.spm.model", cfg.model)]
    missing = [key for key, path in per_side.items() if path is None]
    if len(missing) == 1:
        raise LstmMtError(f"{missing[0]} is not set: a model per side needs both data.spm.src_model and tgt_model")
    return [(key, str(path)) for key, path in per_side.items() if path is not None]


def _load_given_models(given: list[tuple[str, str]]) -> Tokenizer:
    """A tokenizer from the user's ``.model`` files, each checked alone so an error names its key and file."""
    protos = []
    for key, path in given:
        proto = _read_model(Path(path))
        _processor(proto, f"{key}={path}:")
        protos.append(proto)
    return Tokenizer(protos[0], protos[1] if len(protos) > 1 else None, [path for _, path in given])


def _processor(proto: bytes, side: str) -> spm.SentencePieceProcessor:
    try:
        sp = spm.SentencePieceProcessor(model_proto=proto)
    except RuntimeError as e:
        raise LstmMtError(f"{side} SentencePiece model cannot be loaded ({e})") from None
    ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise LstmMtError(
            f"{side} SentencePiece model has special ids pad,unk,bos,eos={ids}; "
            f"lstm-mt needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)} (train it with --pad_id={PAD_ID} --unk_id={UNK_ID} "
            f"--bos_id={BOS_ID} --eos_id={EOS_ID})"
        )
    return sp


def _read_model(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise LstmMtError(f"{path}: cannot read SentencePiece model ({e.strerror})") from None


def _encode(sp: spm.SentencePieceProcessor, texts: Sequence[str], sampling: Sampling | None) -> list[list[int]]:
    if isinstance(texts, str):
        raise TypeError("encode_src/encode_tgt take a list of sentences, not one string")
    if sampling is None:
        return sp.encode(list(texts), out_type=int, num_threads=available_cores())
    # A batch encode runs in fresh threads whose generators start from the global seed: with one
    # thread, the draws depend on the seed and the sentences alone.
    spm.set_random_generator_seed(sampling.seed)
    return sp.encode(
        list(texts),
        out_type=int,
        enable_sampling=True,
        alpha=sampling.alpha,
        nbest_size=sampling.nbest,
        num_threads=1,
    )


def _strip_specials(ids: Sequence[int]) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    kept = []
    for i in ids:
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            kept.append(int(i))
    return kept


def _normalize(sp: spm.SentencePieceProcessor, text: str) -> str:
    # SentencePiece marks spaces (and a leading dummy prefix) with U+2581; decode turns them back.
    return sp.normalize(text).replace("\u2581", " ").removeprefix(" ")
