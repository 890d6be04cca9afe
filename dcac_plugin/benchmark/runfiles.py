"""The files a suite run leaves in its folder, and what they say about the run.

``results.json`` (written by the training runner) marks a finished run; ``failed.json`` (written
by the suite runner or the Slurm job, :func:`write_failure`) records a failure; ``claim.json`` (see
:mod:`dcac_plugin.benchmark.claims`) marks a run in progress. The names, the readers and
:func:`results_state` live in :mod:`dcac_plugin.runfolder` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dcac_plugin.runfolder import (  # noqa: F401  (re-exported: their old home)
    FAILED_FILE,
    RESULTS_FILE,
    clear_failure,
    failure_record,
    results_state,
)
from dcac_plugin.runfolder import read_json_object as read_json  # noqa: F401  (its old name)


def write_failure(run_dir: str | Path, run_name: str, argv: Sequence[str], error: str, traceback_text: str = "",
                  elapsed: float = 0.0, **extra: Any) -> str:
    """Write ``<run_dir>/failed.json`` (:func:`dcac_plugin.runfolder.failure_record`) atomically; returns ``error``."""
    atomic_write_json(failure_record(run_name, argv, error, traceback_text, elapsed, **extra),
                      Path(run_dir) / FAILED_FILE)
    return error


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """:func:`dcac_plugin.utils.io.atomic_write_json`, imported on use (it imports torch)."""
    # local: dcac_plugin.benchmark stays torch-free (utils.io imports torch)
    from dcac_plugin.utils.io import atomic_write_json as write

    return write(obj, path)
