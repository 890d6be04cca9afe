"""Files without importing torch: a file's sha256, and the one-line errors of a file that cannot be
written (:class:`WriteError`).

The run folder's names, ``results.json`` reader and checkpoint lookup live in
:mod:`dcac_plugin.runfolder`; they are re-exported here under their old names.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from pathlib import Path

from dcac_plugin.runfolder import (  # noqa: F401  (re-exported: their old home)
    CHECKPOINT_PATTERN,
    DAMAGED_SUFFIX,
    CheckpointError,
    checkpoints,
    latest_checkpoint,
    latest_loadable_checkpoint,
    read_results,
)

__all__ = ["CHECKPOINT_PATTERN", "DAMAGED_SUFFIX", "CheckpointError", "WriteError", "checkpoints", "file_sha256",
           "latest_checkpoint", "latest_loadable_checkpoint", "read_results", "write_error"]


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks; cached per (path, size, mtime)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class WriteError(OSError):
    """A file could not be written (disk full, quota, file-size limit, no permission, read-only disk).

    The message is one line naming the file, the cause and the fix; nothing was written under the
    file's name and what was there before is unchanged.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


_WRITE_FIX = {
    errno.ENOSPC: ("no space left on device", "free space on the disk that holds {dir} or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or write elsewhere"),
    errno.EFBIG: ("file too large for this process or file system",
                  "raise the file-size limit (ulimit -f unlimited) or write to another file system"),
    errno.EACCES: ("permission denied", "write to a folder you may write to, or fix the permissions of {dir}"),
    errno.EPERM: ("operation not permitted", "write to a folder you may write to, or fix the permissions of {dir}"),
    errno.EROFS: ("read-only file system", "write to a folder on a writable disk"),
}


def write_error(path: str | Path, exc: BaseException, action: str = "write") -> WriteError | None:
    """The :class:`WriteError` for a failed write of ``path``, or ``None`` when ``exc`` is not one.

    ``exc`` or any exception in its chain (``__cause__``/``__context__``: torch wraps the
    ``OSError`` of a failed write in a ``RuntimeError``) must be an ``OSError`` whose errno says
    full disk, quota, file size, permission or read-only file system.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, WriteError):
            return cur
        if isinstance(cur, OSError) and cur.errno in _WRITE_FIX:
            cause, fix = _WRITE_FIX[cur.errno]
            folder = Path(path).parent
            err = WriteError(f"cannot {action} {path}: {cause} ({errno.errorcode[cur.errno]}). Fix: "
                                        f"{fix.format(dir=folder)}. Nothing was written under that name; what "
                                        f"was there before is unchanged")
            err.errno, err.filename = cur.errno, os.fspath(path)  # str(err) stays the one-line message
            return err
        cur = cur.__cause__ or cur.__context__
    return None
