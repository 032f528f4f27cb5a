"""Download and unpack an archive; used only when the user passes ``download=True``.

The archive is streamed to a ``.part`` file, checked against its MD5, and unpacked into a
temporary folder beside the destination, which is renamed into place when complete: an
interrupted download never leaves a half-written dataset that a later run would read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .errors import CorruptDataError, DataError

__all__ = ["download_and_extract"]

log = logging.getLogger(__name__)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack regular files and folders only, all inside ``dest``."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
        tar.extractall(dest, filter="data")
        return
    base = dest.resolve()
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(base):
            raise CorruptDataError(f"unsafe archive member {member.name!r}")
    tar.extractall(dest)  # every member checked above


def download_and_extract(url: str, md5: str | None, root: Path, folder: str) -> Path:
    """Fetch ``url`` (a ``.tar.gz``) and unpack it so that ``root / folder`` exists.

    Returns ``root / folder``. An existing ``root / folder`` is kept as it is.
    """
    dest = root / folder
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url.split("?")[0]).name
    if not archive.is_file() or (md5 is not None and _md5(archive) != md5):
        part = archive.with_name(archive.name + ".part")
        log.info("downloading %s to %s", url, archive)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as err:
            part.unlink(missing_ok=True)
            raise DataError(f"download of {url} failed: {err}") from err
        if md5 is not None and _md5(part) != md5:
            part.unlink(missing_ok=True)
            raise CorruptDataError(f"download of {url} has the wrong MD5 (expected {md5})")
        os.replace(part, archive)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(archive) as tar:
            _safe_extract(tar, tmp)
        if not (tmp / folder).is_dir():
            raise CorruptDataError(f"{archive}: archive does not contain the folder {folder}/")
        os.replace(tmp / folder, dest)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise CorruptDataError(f"{archive}: cannot unpack ({err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s", dest)
    return dest
