"""Time preparing Multi30k de-en end to end (load, 8k joint SentencePiece, encode, filter).

Uses a fresh cache directory unless --cache-dir is given, so SentencePiece is trained (the
cold path). Run: .venv/bin/python scripts/prepare_data.py [--mirror DIR] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from lstm_mt.data import MIRROR_ENV, DataConfig, prepare_data
from lstm_mt.errors import LstmMtError
from lstm_mt.tokenizer import SubwordConfig, available_cores

DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV) or str(DEFAULT_MIRROR),
        help="data mirror folder (default: $LSTM_MT_DATA_MIRROR or ../shared/data)",
    )
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a fresh temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(
            name="multi30k",
            src="de",
            tgt="en",
            mirror=args.mirror,
            cache_dir=args.cache_dir or tmp,
            spm=SubwordConfig(model_type="unigram", vocab_size=8000, joint=True),
        )
        start = time.perf_counter()
        try:
            prepared = prepare_data(cfg)
        except LstmMtError as e:
            raise SystemExit(f"error: {e}") from None
        seconds = time.perf_counter() - start
    print(
        f"prepared multi30k de->en ({len(prepared.train)} train / {len(prepared.valid)} valid pairs, "
        f"8k joint unigram) in {seconds:.2f} s on {available_cores()} cores"
    )


if __name__ == "__main__":
    main()
