"""The tests' tiny runs, written once: the config overrides that make a run small and fast on CPU, the
demo config of each model kind, and the one way a test trains such a run (the CLI's ``main(argv)``).

The overrides are the same for every model kind (DCAC, CLIP baseline, OSNet): the demo configs
already pick the tiny models. A test file that needs more says so next to its import, as
``TINY + [...]``, so the difference stays visible.

The session fixtures ``tiny_dcac_run``, ``tiny_clip_run`` and ``tiny_osnet_run`` (tests/conftest.py)
train :data:`SHARED_RUN_OPTS` once per session; :func:`returned_record` gives the record that
training returned.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

#: the repository root (configs/ is read from here)
ROOT = Path(__file__).resolve().parents[2]

#: in-process data loading, small batches: what every tiny run of the tests starts from
TINY = ["data.workers", "0", "train.batch_size", "16", "test.batch_size", "64"]

#: the demo config of each model kind
CONFIGS = {
    "dcac": "configs/demo/dcac_tiny.yaml",
    "clip": "configs/demo/clip_tiny.yaml",
    "osnet": "configs/demo/osnet.yaml",
}

#: what the shared runs add to :data:`TINY`: one epoch, a log line per step
SHARED_RUN_OPTS = [*TINY, "train.print_freq", "1", "train.max_epoch", "1"]

#: per kind, what its shared run adds: DCAC is evaluated on two targets (the demo's one and Market)
SHARED_RUN_EXTRA = {
    "dcac": ["data.targets", "msmt17,market1501"],
    "clip": [],
    "osnet": [],
}

_RECORDS: dict[Path, dict[str, Any]] = {}


def train(config: str | Path, data_root: Path, out: Path, *opts: str) -> dict[str, Any]:
    """Train (and evaluate) one run into ``out`` through the CLI's ``main(argv)``; returns its record."""
    from dcac_plugin.cli.train import main

    return main(["--config-file", str(ROOT / config), "data.root", str(data_root), "data.save_dir", str(out),
                 *opts])


def train_shared(kind: str, data_root: Path, out: Path) -> Path:
    """Train the shared tiny run of ``kind`` into ``out``; remembers the record it returned."""
    _RECORDS[out] = train(CONFIGS[kind], data_root, out, *SHARED_RUN_OPTS, *SHARED_RUN_EXTRA[kind])
    return out


def returned_record(run: Path) -> dict[str, Any]:
    """A copy of the record ``main(argv)`` returned when the shared ``run`` was trained."""
    return copy.deepcopy(_RECORDS[run])
