"""Atomic writes: a crash never leaves a half-written checkpoint or result file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from dcac_plugin.utils.files import write_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes it 0600)


def _atomic_target(path: str | os.PathLike) -> tuple[Path, int, str]:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (write_error(path, exc) or exc) from None
    return path, fd, tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. A write that fails
    for lack of space, quota, file-size limit, permission or a read-only disk raises
    :class:`dcac_plugin.utils.files.WriteError` (one line: the file, the cause, the fix), also when
    the writer (``torch.save``) wrapped the ``OSError`` in another exception.
    """
    target, fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        err = write_error(target, exc) if isinstance(exc, Exception) else None
        if err is not None and err is not exc:
            raise err from None
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically (temp file + rename)."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)
