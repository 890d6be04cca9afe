"""The files a suite run leaves in its folder, and what they say about the run.

``results.json`` (written by the training runner) marks a finished run; ``failed.json`` (written
by the suite runner or the Slurm job) records a failure; ``claim.json`` (see
:mod:`dcac_plugin.benchmark.claims`) marks a run in progress.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def results_state(run_dir: str | Path) -> tuple[str | None, str]:
    """What the run folder's result files say.

    Returns:
        ``("done", "")`` for a ``results.json`` with status ``ok`` (or without a status: records
        older than the status field), ``("incomplete", why)`` for any other status or an unreadable
        ``results.json``, ``("failed", error)`` for a ``failed.json``, ``(None, "")`` when neither exists.
    """
    run_dir = Path(run_dir)
    results = run_dir / RESULTS_FILE
    if results.is_file():
        record = read_json(results)
        if record is None:
            return "incomplete", f"{RESULTS_FILE} is not a JSON object"
        status = record.get("status", "ok")
        if status == "ok":
            return "done", ""
        return "incomplete", f"{RESULTS_FILE} status '{status}'"
    failed = run_dir / FAILED_FILE
    if failed.is_file():
        info = read_json(failed) or {}
        return "failed", str(info.get("error") or "see failed.json")
    return None, ""


def write_failure(run_dir: str | Path, run_name: str, argv: Sequence[str], error: str, traceback_text: str = "",
                  elapsed: float = 0.0, **extra: Any) -> str:
    """Write ``<run_dir>/failed.json`` atomically; returns ``error``."""
    atomic_write_json({
        "status": "failed", "run_name": run_name, "error": error, "traceback": traceback_text,
        "argv": list(argv), "wall_time_s": round(elapsed, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    }, Path(run_dir) / FAILED_FILE)
    return error


def clear_failure(run_dir: str | Path) -> None:
    """Remove a ``failed.json`` left by an earlier attempt."""
    path = Path(run_dir) / FAILED_FILE
    if path.is_file():
        path.unlink()


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """:func:`dcac_plugin.utils.io.atomic_write_json`, imported on use (it imports torch)."""
    from dcac_plugin.utils.io import atomic_write_json as write

    return write(obj, path)
