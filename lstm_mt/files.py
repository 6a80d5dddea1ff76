"""Small file helpers shared by every writer: one atomic write, output checks, stale temporaries, locks.

Checkpoints, translation outputs, evaluation reports, SentencePiece models and downloaded
corpora are all written through `atomic_write`, so a crash or an error never leaves half a
file under the final name, and every new file gets the mode a plain ``open()`` would give it.
Files that another program writes by name (the C compiler's ``-o`` for the LSTM kernel) go
through `atomic_path`, the same thing with a path in place of a handle.
Its temporary files are named ``.<name>.tmp-<pid>-<random>``; those of a process that died
mid-write (``kill -9``) are removed by the next write into the same folder.

Outputs never destroy anything: `check_output_file` (called before the work) refuses a folder,
or a file that is one of the inputs (also through links); `write_output` replaces regular
files atomically but writes into FIFOs, devices and symlinks in place, so ``output=/dev/stdout``
or a link to a pipe still reaches the reader. `FolderLock` keeps two trainings out of one run folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from lstm_mt.errors import LstmMtError

__all__ = [
    "FolderLock",
    "atomic_path",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "remove_stale_temporaries",
    "temporary_name",
    "write_bytes_atomic",
    "write_output",
    "write_text_atomic",
]

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")  # .<name>.tmp-<pid>-<random>


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


def temporary_name(path: Path) -> Path:
    """A fresh ``.<name>.tmp-<pid>-<random>`` beside ``path``: whose it is stays readable after a crash."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files in ``folder`` left by processes that no longer run; returns them."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY.match(name)
        if match and not _process_alive(int(match.group(1))):
            stale = Path(folder) / name
            try:
                stale.unlink()
                removed.append(stale)
            except OSError:
                pass  # gone already, or not ours to remove
    return removed


def check_output_file(
    path: str | os.PathLike[str], key: str, inputs: tuple[str | os.PathLike[str] | None, ...] = ()
) -> None:
    """Raise `LstmMtError` unless ``path`` can take an output: not a folder, not one of ``inputs``."""
    target = Path(path)
    if target.is_dir():
        raise LstmMtError(f"{key}={path}: is a folder; name a file to write")
    for source in inputs:
        if source is not None and target.exists() and Path(source).exists() and os.path.samefile(target, source):
            raise LstmMtError(f"{key}={path}: is the input {source}; writing it would destroy the input")
    _check_parent(target, key)


def check_output_dir(path: str | os.PathLike[str], key: str) -> None:
    """Raise `LstmMtError` if ``path`` exists and is not a folder (or cannot become one)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise LstmMtError(f"{key}={path}: is a file, not a folder")
    _check_parent(target, key)


def write_output(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path``: atomically for a regular (or new) file, in place for anything else.

    FIFOs, character devices and symlinks are opened and written as they are, never replaced
    by a regular file (``output=/dev/stdout``, a link to a pipe).
    """
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        try:
            with open(target, "wb") as handle:
                handle.write(data)
        except OSError as error:
            raise LstmMtError(f"{path}: cannot write ({error.strerror or error})") from None
        return target
    return write_bytes_atomic(target, data)


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock`` while the ``with`` block runs; a second holder is refused.

    The kernel drops the lock when the process ends, however it ends, so a crash never leaves a
    folder locked.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str) -> None:
        self.path = Path(folder) / ".lock"
        self.what = what
        self._handle: IO[str] | None = None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise LstmMtError(f"{self.path.parent}: {self.what} already runs there ({holder})") from None
            raise
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock
            self._handle = None


def _check_parent(target: Path, key: str) -> None:
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LstmMtError(f"{key}={target}: {parent} is a file, not a folder")
            return


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _create_temporary(path: Path) -> BinaryIO:
    """A new, exclusively created temporary file beside ``path`` (`temporary_name`), open for binary writing.

    Temporaries that dead processes left in the folder are removed first.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        while True:
            try:
                # "x": create exclusively, with open()'s own mode rules (0o666 & ~umask)
                return open(temporary_name(path), "xb")
            except FileExistsError:
                continue
    except OSError as error:
        raise LstmMtError(f"{path}: cannot write ({error.strerror or error})") from None
