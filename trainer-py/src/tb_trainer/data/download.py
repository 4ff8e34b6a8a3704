"""Fetching a dataset archive into the shared `/downloads` cache, once.

Several jobs (containers) may start at the same moment and want the same
archive: a file lock next to the cache entry lets exactly one download it; the
others wait and then reuse the result. The entry only becomes visible, by a
rename, once its checksum has been verified and it has been unpacked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from filelock import FileLock

COMPLETE = ".tb-complete"


class DownloadError(RuntimeError):
    """The archive could not be fetched, failed its checksum, or could not be unpacked."""


def _download(url: str, dest: Path, timeout: float) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as f:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise DownloadError(f"failed to download `{url}`: {e}") from e
    return digest.hexdigest()


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DownloadError(f"archive member `{member}` escapes the archive")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:
                for member in tf.getmembers():
                    target = (dest / member.name).resolve()
                    if not target.is_relative_to(dest.resolve()) or member.issym() or member.islnk():
                        raise DownloadError(f"archive member `{member.name}` is unsafe")
                tf.extractall(dest)
    else:
        raise DownloadError(f"`{archive}` is neither a tar nor a zip archive")


def fetch_archive(url: str, sha256: str, downloads_dir: Path, name: str = "archive", timeout: float = 60.0) -> Path:
    """Download `url`, check its SHA-256, unpack it under `downloads_dir`; return the directory.

    Idempotent and safe under concurrency (threads, processes, containers sharing
    the directory): the first caller downloads while holding the lock.
    """
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise DownloadError(f"`sha256` must be 64 hex digits, got {sha256!r}")
    base = Path(downloads_dir) / "archives"
    final = base / f"{name}-{sha256[:16]}"
    if (final / COMPLETE).exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f".{name}-{sha256[:16]}.lock"), mode=0o664):
        if (final / COMPLETE).exists():
            return final
        work = Path(tempfile.mkdtemp(dir=base, prefix=f".{name}-{sha256[:16]}."))
        try:
            archive = work / "archive"
            got = _download(url, archive, timeout)
            if got != sha256:
                raise DownloadError(f"checksum mismatch for `{url}`: expected sha256 {sha256}, got {got}")
            unpacked = work / "unpacked"
            _extract(archive, unpacked)
            (unpacked / COMPLETE).write_text(url + "\n")
            if final.exists():  # left by a crash between the two renames below: never complete
                shutil.rmtree(final)
            os.rename(unpacked, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final
