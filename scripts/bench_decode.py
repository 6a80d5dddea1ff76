"""Decoding speed: greedy and beam-5 sentences/second on Multi30k test_2016_flickr (de-en).

    .venv/bin/python scripts/bench_decode.py --limit 200                  # base model, untrained
    .venv/bin/python scripts/bench_decode.py --checkpoint runs/x/best.pt  # a trained model

Without ``--checkpoint`` the model is configs/model/base.yaml with random weights and the
real 8k joint SentencePiece model of configs/data/multi30k.yaml (trained once into
``--cache-dir``, as training does). A random model never chooses EOS, so every output
runs to its length cap (1.5 x source + 10): the slowest case per sentence; a trained model
stops earlier. Decoding goes through `Translator` (length-sorted batches, the same path as
`lstm-mt translate`), after one untimed warm-up batch; the table is Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lstm_mt.configuring import typed_config
from lstm_mt.data import MIRROR_ENV, DataConfig, load_split
from lstm_mt.errors import LstmMtError
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.search import SearchConfig
from lstm_mt.tokenizer import train_or_load_tokenizer
from lstm_mt.translate import DEFAULT_MAX_TOKENS, Translator

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "lstm_mt" / "configs"
SHARED_MIRROR = ROOT.parent / "shared" / "data"  # where the tests look too
SPLIT = "test_2016_flickr"


def untrained_base_translator(data: DataConfig, device: str) -> Translator:
    """configs/model/base.yaml with random (seeded) weights and the real 8k tokenizer."""
    train = load_split(data, data.train_split)
    tokenizer = train_or_load_tokenizer(data.spm, train.src_lines, train.tgt_lines, data.cache_dir)
    torch.manual_seed(0)
    model_cfg = typed_config(ModelConfig, OmegaConf.load(CONFIGS / "model" / "base.yaml"), "configs/model/base.yaml")
    return Translator(build_model(model_cfg, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size), tokenizer, device)


def time_search(translator: Translator, sentences: list[str], cfg: SearchConfig, max_tokens: int) -> tuple[float, int]:
    """Seconds to translate ``sentences`` and the number of output subword tokens (EOS not counted)."""
    start = time.perf_counter()
    results = translator.translate_nbest(sentences, cfg, max_tokens=max_tokens)
    seconds = time.perf_counter() - start
    return seconds, sum(len(nbest[0].target_ids) for nbest in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: untrained base model)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N test sentences (0: all 1,000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="source tokens per batch")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5], help="beam sizes to time (1: greedy)")
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


def run(args: argparse.Namespace) -> None:
    """Print the table for the parsed command-line ``args``."""
    data = typed_config(DataConfig, OmegaConf.load(CONFIGS / "data" / "multi30k.yaml"), "configs/data/multi30k.yaml")
    data.cache_dir = args.cache_dir or data.cache_dir
    data.mirror = args.mirror or os.environ.get(MIRROR_ENV) or (str(SHARED_MIRROR) if SHARED_MIRROR.is_dir() else None)
    if args.checkpoint:
        translator = Translator.from_checkpoint(args.checkpoint, args.device)
    else:
        translator = untrained_base_translator(data, args.device)
    sentences = load_split(data, SPLIT).src_lines
    sentences = sentences[: args.limit] if args.limit else sentences
    translator.translate(sentences[:8], beam_size=max(args.beams))  # warm-up

    model = args.checkpoint or "configs/model/base.yaml, untrained"
    print(
        f"{SPLIT} de-en, {len(sentences)} sentences; model: {model} "
        f"({translator.model.num_parameters() / 1e6:.1f}M parameters); device {args.device}, "
        f"{torch.get_num_threads()} threads, max_tokens {args.max_tokens}, torch {torch.__version__}\n"
    )
    print("| search | seconds | sentences/s | output tokens/s |")
    print("|---|---|---|---|")
    for beam_size in args.beams:
        cfg = SearchConfig(beam_size=beam_size)
        seconds, tokens = time_search(translator, sentences, cfg, args.max_tokens)
        name = "greedy" if beam_size == 1 else f"beam {beam_size}"
        print(f"| {name} | {seconds:.1f} | {len(sentences) / seconds:.1f} | {tokens / seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
