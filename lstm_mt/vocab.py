"""The special token ids every lstm-mt vocabulary has: pad=0, unk=1, bos=2, eos=3.

The tokenizer trains and checks every SentencePiece model with these ids, so the model, the
loss, batching and search use them as constants without importing SentencePiece.
"""

from __future__ import annotations

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID"]

PAD_ID = 0  # padding: ignored by the loss, masked in attention
UNK_ID = 1  # a piece outside the vocabulary
BOS_ID = 2  # the decoder's first input
EOS_ID = 3  # ends every target sentence
