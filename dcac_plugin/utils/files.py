"""The files of a run folder, without importing torch: checkpoints, their sha256, ``results.json``;
and the one-line errors of a file that cannot be written (:class:`WriteError`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_PATTERN", "DAMAGED_SUFFIX", "CheckpointError", "WriteError", "checkpoints", "file_sha256",
           "latest_checkpoint", "latest_loadable_checkpoint", "read_results", "write_error"]

logger = logging.getLogger(__name__)

#: ``checkpoint_ep<N>.pth``, N = completed epochs.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_ep(\d+)\.pth$")


#: what an unreadable checkpoint is renamed to (``checkpoint_ep3.pth`` -> ``checkpoint_ep3.pth.damaged``).
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(ValueError):
    """No checkpoint of a run folder can be read (the message lists them and why)."""


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``checkpoint_ep<N>.pth`` in ``run_dir``, highest epoch first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint_ep*.pth")
             if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, key=lambda t: -t[0])]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``checkpoint_ep<N>.pth`` of the highest epoch in ``run_dir``, if any (not opened)."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def _probe_checkpoint(path: Path) -> None:
    """Raise when ``path`` cannot be read as a weight file: its diagnosis (empty, truncated...) or the
    loader's error. Memory-mapped: the tensors are not copied."""
    from dcac_plugin.models.weights import read_state_dict

    read_state_dict(path, "checkpoint", mmap=True)


def _move_aside(path: Path) -> Path | None:
    """Rename ``path`` to ``<name>.damaged`` (``.damaged.1``, ... when taken); ``None`` when it cannot be."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
    try:
        path.rename(target)
    except OSError as exc:
        logger.warning("could not move %s aside (%s); it is skipped but stays in place", path, exc)
        return None
    return target


def latest_loadable_checkpoint(run_dir: str | Path, probe: Callable[[Path], Any] | None = None,
                               move_aside: bool = True) -> Path | None:
    """The newest ``checkpoint_ep<N>.pth`` of ``run_dir`` that can be read.

    A checkpoint that cannot be read (truncated copy, full disk, bit rot) is reported with a
    warning naming it and why, renamed to ``<name>.damaged`` (never deleted) when ``move_aside``,
    and the next older one is tried.

    Args:
        run_dir: the run folder.
        probe: reads a checkpoint and raises when it cannot (default: a memory-mapped
            ``torch.load(weights_only=True)``).
        move_aside: rename unreadable checkpoints so that later runs do not pick them again.

    Returns:
        The checkpoint, or ``None`` when the folder holds none.

    Raises:
        CheckpointError: there are checkpoints but none can be read (all are listed with the reason).
    """
    probe = probe or _probe_checkpoint
    bad: list[str] = []
    for path in checkpoints(run_dir):
        try:
            probe(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read means: not usable
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
            why = text if type(exc).__name__ == "WeightLoadError" else f"{type(exc).__name__}: {text}"
            moved = _move_aside(path) if move_aside else None
            logger.warning("checkpoint %s cannot be read: %s%s; trying the previous one", path, why,
                           f"; moved aside to {moved.name}" if moved else "")
            bad.append(f"{path.name} ({why})")
            continue
        if bad:
            logger.warning("continuing from %s, the newest checkpoint that can be read", path)
        return path
    if bad:
        raise CheckpointError(
            f"no checkpoint in {run_dir} can be read: {'; '.join(bad)}. Fix: restore a good copy of one of them "
            f"(unreadable ones were renamed *{DAMAGED_SUFFIX}), or start the run again without --resume")
    return None


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


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's ``results.json`` (None when absent).

    Raises:
        ValueError: the file is not valid JSON (the message names it).
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); move it away or delete it") from exc


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
