"""The files of a run folder, without importing torch: checkpoints, their sha256, ``results.json``."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_PATTERN", "file_sha256", "latest_checkpoint", "read_results"]

#: ``checkpoint_ep<N>.pth``, N = completed epochs.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_ep(\d+)\.pth$")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``checkpoint_ep<N>.pth`` of the highest epoch in ``run_dir``, if any."""
    best: tuple[int, Path] | None = None
    for p in Path(run_dir).glob("checkpoint_ep*.pth"):
        m = CHECKPOINT_PATTERN.match(p.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


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
