"""Where corpus files come from: a local mirror folder, or a checksummed download into the cache.

A mirror is any folder with the layout of /work/shared/data (``<mirror>/multi30k/raw/...``),
given by ``data.mirror`` or, when that is unset, by $LSTM_MT_DATA_MIRROR. Without a mirror,
files are downloaded once into ``data.cache_dir``: written to a temporary file, verified
against the known sha256, then renamed, so an interrupted download never looks finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from lstm_mt.errors import LstmMtError
from lstm_mt.files import atomic_write

log = logging.getLogger(__name__)

MIRROR_ENV = "LSTM_MT_DATA_MIRROR"
USER_AGENT = "lstm-mt/0.1 (python urllib)"


def resolve_mirror(configured: str | None) -> Path | None:
    """The mirror folder to read from: ``configured`` wins over $LSTM_MT_DATA_MIRROR; None = download."""
    value = configured or os.environ.get(MIRROR_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "data.mirror" if configured else f"${MIRROR_ENV}"
        raise LstmMtError(f"{path}: data mirror folder does not exist (set by {origin})")
    return path


def mirror_file(mirror: Path, relpath: str) -> Path:
    """``mirror/relpath``, or an error saying the mirror lacks it."""
    path = mirror / relpath
    if not path.is_file():
        raise LstmMtError(f"{path}: not found; the data mirror {mirror} lacks {relpath}")
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_url(url: str, out: BinaryIO) -> None:
    """Stream the body of ``url`` into ``out``; the only function here that uses the network."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=60) as response:
        shutil.copyfileobj(response, out, 1 << 20)


def download(url: str, dest: Path, sha256: str | None) -> Path:
    """Make ``dest`` hold the verified content of ``url``, downloading only if it is not there yet.

    An existing ``dest`` is re-verified; a mismatch is an error rather than a silent re-download,
    since atomic writes mean the cached file was changed by someone.
    """
    if dest.is_file():
        if sha256 is not None and (actual := file_sha256(dest)) != sha256:
            raise LstmMtError(
                f"{dest}: sha256 mismatch (expected {sha256}, got {actual}); delete the file to download it again"
            )
        return dest
    if sha256 is None:
        log.warning("%s: no known sha256, downloading without checksum verification", url)
    log.info("downloading %s -> %s", url, dest)
    with atomic_write(dest) as out:
        _fetch_or_fail(url, out)
        out.flush()
        if sha256 is not None and (actual := file_sha256(Path(out.name))) != sha256:
            raise LstmMtError(
                f"{url}: sha256 mismatch (expected {sha256}, got {actual}); download discarded, {dest} not written"
            )
    return dest


def _fetch_or_fail(url: str, out: BinaryIO) -> None:
    try:
        fetch_url(url, out)
    except (urllib.error.URLError, OSError) as e:
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise LstmMtError(
            f"{url}: download failed ({reason}); set data.mirror or ${MIRROR_ENV} to read a local copy instead"
        ) from None
