"""Small file helpers shared by every writer: one atomic write that honours the umask.

Checkpoints, translation outputs, evaluation reports, SentencePiece models and downloaded
corpora are all written through `atomic_write`, so a crash or an error never leaves half a
file under the final name, and every new file gets the mode a plain ``open()`` would give it.
Files that another program writes by name (the C compiler's ``-o`` for the LSTM kernel) go
through `atomic_path`, the same thing with a path in place of a handle.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lstm_mt.errors import LstmMtError

__all__ = ["atomic_path", "atomic_write", "write_bytes_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path whose file replaces ``path`` only if the ``with`` block ends without error.

    For programs that write a file by name (a compiler's ``-o``): the path is a hidden, newly
    created, empty file in ``path``'s folder with a plain ``open()``'s mode (0o666 less the
    umask; a linker adds the execute bits the umask allows, as it would for a new file), not
    ``tempfile.mkstemp``'s private 0o600. At the end it is flushed to disk and renamed over
    ``path``; an error in the block removes it and leaves ``path`` untouched.
    """
    path = Path(path)
    with _create_temporary(path) as handle:  # reserves a fresh name in the target's folder
        temporary = Path(handle.name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only if the ``with`` block ends without error.

    The handle writes a hidden temporary file in the same folder (``handle.name`` is its path);
    at the end it is flushed to disk and renamed over ``path``, so a crash at any moment leaves
    either the old file or the whole new one. The file is created like ``open(path, "wb")``
    would create it (mode 0o666 less the umask), unlike ``tempfile.mkstemp``'s private 0o600.
    An error in the block removes the temporary file and leaves ``path`` untouched.
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        yield handle


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
