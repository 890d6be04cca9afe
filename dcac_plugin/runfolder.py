"""The run folder: the files one training run leaves in ``data.save_dir``, and how to read them back.

::

    <run>/config.yaml            the merged config the run used (written by the runner)
    <run>/train.log              the run's log
    <run>/checkpoint_ep<N>.pth   N = completed epochs (the engine keeps the last few);
                                 an unreadable one is renamed ``checkpoint_ep<N>.pth.damaged``
    <run>/results.json           the results record, schema :data:`SCHEMA_VERSION` (written by the
                                 runner; fields in :mod:`dcac_plugin.benchmark.records`)
    <run>/failed.json            a failed attempt (written by the suite runner or the Slurm job)

This module holds those names, the one schema version, the one ``results.json`` reader
(:func:`read_results`, :class:`ResultsFileError`), the ``failed.json`` record and reader, and the
checkpoint lookup (:func:`checkpoints`, :func:`latest_checkpoint`,
:func:`latest_loadable_checkpoint`). It imports neither torch nor anything else of
``dcac_plugin`` when loaded (the checkpoint probe loads :mod:`dcac_plugin.models.weights` on use), so
the suite runner and the leaderboard read run folders without torch. The writers write through
:mod:`dcac_plugin.utils.io` (atomic): the runner ``results.json`` and ``config.yaml``, the engine the
checkpoints, :func:`dcac_plugin.benchmark.runfiles.write_failure` ``failed.json``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_GLOB", "CHECKPOINT_PATTERN", "CONFIG_FILE", "DAMAGED_SUFFIX", "FAILED_FILE", "RESULTS_FILE",
           "SCHEMA_VERSION", "SCHEMA_VERSIONS", "TRAIN_LOG", "CheckpointError", "ResultsFileError",
           "check_schema_version", "checkpoint_name", "checkpoints", "clear_failure", "failure_record",
           "latest_checkpoint", "latest_loadable_checkpoint", "read_failure", "read_json_object", "read_results",
           "read_results_file", "recorded_checkpoint", "results_state"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
TRAIN_LOG = "train.log"
FAILED_FILE = "failed.json"

#: The ``results.json`` schema version the runner writes now (2: adds ``seed``, ``command``, ``argv``,
#: ``checkpoint`` ({file, sha256}) and ``evaluations``), and every version the readers accept.
SCHEMA_VERSION = 2
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

#: ``checkpoint_ep<N>.pth``, N = completed epochs.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_ep(\d+)\.pth$")
CHECKPOINT_GLOB = "checkpoint_ep*.pth"
#: what an unreadable checkpoint is renamed to (``checkpoint_ep3.pth`` -> ``checkpoint_ep3.pth.damaged``).
DAMAGED_SUFFIX = ".damaged"


# ------------------------------------------------------------------------------------ results.json


class ResultsFileError(ValueError):
    """A ``results.json`` cannot be used: not valid JSON (damaged, half copied) or not a JSON object.

    The message is one line naming the file and the fix.
    """


def _fix(path: Path) -> str:
    run = path.parent
    return (f"Fix: move it away or delete it, then evaluate the run again (tools/train.py --config-file "
            f"{run / CONFIG_FILE} --eval-only data.save_dir {run})")


def read_results_file(path: str | Path, error: type[Exception] = ResultsFileError) -> dict[str, Any]:
    """Read one ``results.json`` (any schema version; :mod:`dcac_plugin.benchmark.records` validates it).

    Args:
        path: the file.
        error: the exception class raised for a damaged file (the caller's own, like
            :func:`dcac_plugin.config.read_yaml`).

    Raises:
        FileNotFoundError: the file does not exist.
        ResultsFileError: (or ``error``) not valid JSON, or not a JSON object; the message names the
            file and the fix.
        OSError: the file cannot be read (permissions).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}): the file is damaged or was not written completely. "
                    f"{_fix(path)}") from exc
    if not isinstance(obj, dict):
        raise error(f"{path}: a results.json must hold a JSON object, got {type(obj).__name__}. {_fix(path)}")
    return obj


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's ``results.json`` (``None`` when it has none).

    Raises:
        ResultsFileError: the file is damaged (see :func:`read_results_file`).
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    return read_results_file(path)


def check_schema_version(version: int, where: str, error: type[Exception] = ResultsFileError) -> int:
    """``version`` when this code reads it (:data:`SCHEMA_VERSIONS`).

    Raises:
        ResultsFileError: (or ``error``) a version this code does not read; the message names ``where``.
    """
    if version not in SCHEMA_VERSIONS:
        raise error(f"{where}: schema_version {version} is not supported (this version reads "
                    f"{', '.join(map(str, SCHEMA_VERSIONS))}); re-evaluate the run or upgrade dcac_plugin")
    return version


def recorded_checkpoint(record: dict[str, Any], run_dir: str | Path | None) -> Path | None:
    """The checkpoint a record names (``checkpoint.file``, relative to ``run_dir`` unless absolute).

    ``None`` when the record names none (or not as ``{"file": str}``); the file is not looked at.
    """
    entry = record.get("checkpoint")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    f = Path(entry["file"])
    return f if f.is_absolute() or run_dir is None else Path(run_dir) / f


# -------------------------------------------------------------------------------- failed.json, state


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def failure_record(run_name: str, argv: Sequence[str], error: str, traceback_text: str = "", elapsed: float = 0.0,
                   **extra: Any) -> dict[str, Any]:
    """What ``failed.json`` holds: status, run name, error, traceback (or log tail), argv, time, ``extra``."""
    return {"status": "failed", "run_name": run_name, "error": error, "traceback": traceback_text,
            "argv": list(argv), "wall_time_s": round(elapsed, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def read_failure(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's ``failed.json``; ``None`` when missing, unreadable or not a JSON object."""
    return read_json_object(Path(run_dir) / FAILED_FILE)


def clear_failure(run_dir: str | Path) -> None:
    """Remove a ``failed.json`` left by an earlier attempt."""
    path = Path(run_dir) / FAILED_FILE
    if path.is_file():
        path.unlink()


def results_state(run_dir: str | Path) -> tuple[str | None, str]:
    """What the run folder's result files say.

    Returns:
        ``("done", "")`` for a ``results.json`` with status ``ok`` (or without a status: records
        older than the status field), ``("incomplete", why)`` for any other status or an unreadable
        ``results.json``, ``("failed", error)`` for a ``failed.json``, ``(None, "")`` when neither exists.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESULTS_FILE).is_file():
        try:
            record = read_results_file(run_dir / RESULTS_FILE)
        except (OSError, ResultsFileError):
            return "incomplete", f"{RESULTS_FILE} is not a JSON object"
        status = record.get("status", "ok")
        if status == "ok":
            return "done", ""
        return "incomplete", f"{RESULTS_FILE} status '{status}'"
    if (run_dir / FAILED_FILE).is_file():
        info = read_failure(run_dir) or {}
        return "failed", str(info.get("error") or "see failed.json")
    return None, ""


# ------------------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """No checkpoint of a run folder can be read (the message lists them and why)."""


def checkpoint_name(epoch: int) -> str:
    """``checkpoint_ep<epoch>.pth`` (epoch = completed epochs)."""
    return f"checkpoint_ep{epoch}.pth"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``checkpoint_ep<N>.pth`` in ``run_dir``, highest epoch first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob(CHECKPOINT_GLOB)
             if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, key=lambda t: -t[0])]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``checkpoint_ep<N>.pth`` of the highest epoch in ``run_dir``, if any (not opened)."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def _probe_checkpoint(path: Path) -> None:
    """Raise when ``path`` cannot be read as a weight file: its diagnosis (empty, truncated...) or the
    loader's error. Memory-mapped: the tensors are not copied."""
    from dcac_plugin.models.weights import read_state_dict  # local: this module stays torch-free (docstring)

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


def _unreadable(path: Path, exc: Exception, move_aside: bool) -> str:
    """Report a checkpoint that cannot be read (moved aside when asked); returns ``name (why)``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
    why = text if type(exc).__name__ == "WeightLoadError" else f"{type(exc).__name__}: {text}"
    moved = _move_aside(path) if move_aside else None
    logger.warning("checkpoint %s cannot be read: %s%s; trying the previous one", path, why,
                   f"; moved aside to {moved.name}" if moved else "")
    return f"{path.name} ({why})"


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
            bad.append(_unreadable(path, exc, move_aside))
            continue
        if bad:
            logger.warning("continuing from %s, the newest checkpoint that can be read", path)
        return path
    if bad:
        raise CheckpointError(
            f"no checkpoint in {run_dir} can be read: {'; '.join(bad)}. Fix: restore a good copy of one of them "
            f"(unreadable ones were renamed *{DAMAGED_SUFFIX}), or start the run again without --resume")
    return None
