"""Decoding speed and quality: greedy, beam 5 and beam 10 in fp32, bf16 and int8 on Multi30k test_2016_flickr.

    .venv/bin/python scripts/bench_decode.py --limit 200                     # base model, untrained
    .venv/bin/python scripts/bench_decode.py --checkpoint runs/x/best.pt     # a trained model
    .venv/bin/python scripts/bench_decode.py --checkpoint a.pt b.pt          # their ensemble

A checkpoint is benchmarked in its own direction (its ``data.src``/``data.tgt``; the test
split must exist for that pair). Without ``--checkpoint`` the model is configs/model/base.yaml
with random weights and the real 8k joint SentencePiece model of configs/data/multi30k.yaml
(trained once into ``--cache-dir``, as training does), de->en. A random model never chooses
EOS, so every output runs to its length cap (1.5 x source + 10): the slowest case per
sentence; a trained model stops earlier. Decoding goes through `Translator` (length-sorted
batches, the same path as `lstm-mt translate`), after an untimed warm-up batch per setting.
Each row gives sentences/s, output pieces/s (EOS not counted), the decoder rows stepped per
output piece (one row per live hypothesis and step: what search costs in model work, about 1
for greedy and at least the beam size for beam search) and that run's sacreBLEU against the raw
references; the table is Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lstm_mt.checkpoint import load_checkpoint
from lstm_mt.configuring import typed_config
from lstm_mt.data import MIRROR_ENV, DataConfig, load_split
from lstm_mt.errors import LstmMtError
from lstm_mt.metrics import corpus_bleu
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.precision import INFERENCE_PRECISIONS
from lstm_mt.search import SearchConfig
from lstm_mt.tokenizer import train_or_load_tokenizer
from lstm_mt.translate import DEFAULT_MAX_TOKENS, Translator

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "lstm_mt" / "configs"
SHARED_MIRROR = ROOT.parent / "shared" / "data"  # where the tests look too
SPLIT = "test_2016_flickr"


def untrained_base_translator(data: DataConfig, device: str, precision: str = "fp32") -> Translator:
    """configs/model/base.yaml with random (seeded) weights and the real 8k tokenizer."""
    train = load_split(data, data.train_split)
    tokenizer = train_or_load_tokenizer(data.spm, train.src_lines, train.tgt_lines, data.cache_dir)
    torch.manual_seed(0)
    model_cfg = typed_config(ModelConfig, OmegaConf.load(CONFIGS / "model" / "base.yaml"), "configs/model/base.yaml")
    model = build_model(model_cfg, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    return Translator(model, tokenizer, device, precision=precision)


@dataclass
class SearchRun:
    """One timed translation of the test sentences."""

    seconds: float
    pieces: int  # output subword tokens, EOS not counted
    decoder_rows: int  # rows of all decoder steps: one per live hypothesis and step
    hypotheses: list[str]


def time_search(translator: Translator, sentences: list[str], cfg: SearchConfig, max_tokens: int) -> SearchRun:
    """Translate ``sentences`` once, timed, counting the rows of every decoder step search takes."""
    model = translator.model
    decoder_rows = 0

    def counted_step(prev_tokens: torch.Tensor, state: Any, encoder_out: Any) -> Any:
        nonlocal decoder_rows
        decoder_rows += prev_tokens.shape[0]
        return step(prev_tokens, state, encoder_out)

    step = model.decode_step
    model.decode_step = counted_step  # type: ignore[method-assign]  # shadows the method until deleted
    try:
        start = time.perf_counter()
        results = translator.translate_nbest(sentences, cfg, max_tokens=max_tokens)
        seconds = time.perf_counter() - start
    finally:
        del model.decode_step
    pieces = sum(len(nbest[0].target_ids) for nbest in results)
    return SearchRun(seconds, pieces, decoder_rows, [nbest[0].text for nbest in results])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", help="trained checkpoint(s); several: their ensemble")
    parser.add_argument("--limit", type=int, default=0, help="only the first N test sentences (0: all 1,000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="source tokens per batch")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5, 10], help="beam sizes (1: greedy)")
    parser.add_argument("--alpha", type=float, default=SearchConfig.alpha, help="length penalty of beam search")
    parser.add_argument(
        "--precisions", nargs="+", default=list(INFERENCE_PRECISIONS), choices=INFERENCE_PRECISIONS, help="to time"
    )
    parser.add_argument("--cache-dir", default=None, help="SentencePiece cache (default: data.cache_dir)")
    parser.add_argument(
        "--mirror", default=None, help=f"data mirror (default: ${MIRROR_ENV}, else {SHARED_MIRROR} if it exists)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    except LstmMtError as error:
        sys.exit(f"error: {error}")


def test_data(args: argparse.Namespace) -> DataConfig:
    """Multi30k in the checkpoint's direction (de->en for the untrained model), from the mirror."""
    data = typed_config(DataConfig, OmegaConf.load(CONFIGS / "data" / "multi30k.yaml"), "configs/data/multi30k.yaml")
    data.cache_dir = args.cache_dir or data.cache_dir
    data.mirror = args.mirror or os.environ.get(MIRROR_ENV) or (str(SHARED_MIRROR) if SHARED_MIRROR.is_dir() else None)
    if args.checkpoint:
        saved = load_checkpoint(args.checkpoint[0])["config"].get("data") or {}
        data.src, data.tgt = saved.get("src", data.src), saved.get("tgt", data.tgt)
    return data


def run(args: argparse.Namespace) -> None:
    """Print the table for the parsed command-line ``args``."""
    data = test_data(args)
    test = load_split(data, SPLIT)
    limit = args.limit or len(test.src_lines)
    sentences, references = test.src_lines[:limit], test.tgt_lines[:limit]
    model = " + ".join(args.checkpoint) if args.checkpoint else "configs/model/base.yaml, untrained"
    print(
        f"{SPLIT} {data.src}-{data.tgt}, {len(sentences)} sentences; model: {model}; device {args.device}, "
        f"{torch.get_num_threads()} threads, max_tokens {args.max_tokens}, alpha {args.alpha}, torch {torch.__version__}\n"
    )
    print("| precision | search | seconds | sentences/s | output pieces/s | decoder rows/piece | sacreBLEU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for precision in args.precisions:
        if precision == "int8" and torch.device(args.device).type != "cpu":
            print(f"| int8 | (skipped: CPU only, device {args.device}) | | | | | |")
            continue
        if args.checkpoint:
            translator = Translator.from_checkpoint(args.checkpoint, args.device, precision=precision)
        else:
            translator = untrained_base_translator(data, args.device, precision)
        for beam_size in args.beams:
            cfg = SearchConfig(beam_size=beam_size, alpha=args.alpha)
            translator.translate(sentences[:8], cfg)  # warm-up
            timed = time_search(translator, sentences, cfg, args.max_tokens)
            bleu = corpus_bleu(timed.hypotheses, references).score
            name = "greedy" if beam_size == 1 else f"beam {beam_size}"
            print(
                f"| {precision} | {name} | {timed.seconds:.1f} | {len(sentences) / timed.seconds:.1f} "
                f"| {timed.pieces / timed.seconds:.0f} | {timed.decoder_rows / timed.pieces:.2f} | {bleu:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
