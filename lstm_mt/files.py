"""Small file helpers shared by every writer: one atomic write that honours the umask.

Checkpoints, translation outputs, evaluation reports, SentencePiece models and downloaded
corpora are all written through `atomic_write`, so a crash or an error never leaves half a
file under the final name, and every new file gets the mode a plain ``open()`` would give it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lstm_mt.errors import LstmMtError

__all__ = ["atomic_write", "write_bytes_atomic", "write_text_atomic"]


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only if the ``with`` block ends without error.

    The handle writes a hidden temporary file in the same folder (``handle.name`` is its path);
    at the end it is flushed to disk and renamed over ``path``, so a crash at any moment leaves
    either the old file or the whole new one. The file is created like ``open(path, "wb")``
    would create it (mode 0o666 less the umask), unlike ``tempfile.mkstemp``'s private 0o600.
    An error in the block removes the temporary file and leaves ``path`` untouched.
    """
    path = Path(path)
    handle = _create_temporary(path)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` with `atomic_write`; returns the path."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 (newlines as given) to ``path`` with `atomic_write`; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _create_temporary(path: Path) -> BinaryIO:
    """A new, exclusively created ``.<name>.<random>.tmp`` beside ``path``, open for binary writing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                # "x": create exclusively, with open()'s own mode rules (0o666 & ~umask)
                return open(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp", "xb")
            except FileExistsError:
                continue
    except OSError as error:
        raise LstmMtError(f"{path}: cannot write ({error.strerror or error})") from None
