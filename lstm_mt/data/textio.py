"""Reading text files (plain or gzip) as exact lists of lines, with errors that name file and line."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from lstm_mt.errors import LstmMtError

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """Whole content of ``path``, gunzipped when the file starts with the gzip magic bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LstmMtError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LstmMtError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise LstmMtError(f"{path}: cannot read ({e.strerror})") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise LstmMtError(f"{path}: corrupt gzip file ({e})") from None


def decode_lines(data: bytes, path: str | Path, first_line: int = 1) -> list[str]:
    """Split UTF-8 ``data`` into lines on '\\n' only (a trailing '\\r' is dropped).

    Errors name the line as ``path:<n>``, counting from ``first_line`` (data read in parts).

    Unicode line separators (U+2028, U+0085, ...) stay inside their line, so source and
    target stay aligned exactly as the files are.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + first_line
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise LstmMtError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x} at column {column})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (plain or .gz) without line endings."""
    return decode_lines(read_bytes(path), path)
