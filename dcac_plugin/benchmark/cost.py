"""What a suite costs before it runs: trainings, evaluations and estimated GPU-hours.

The estimate is ``epochs x train images per epoch / throughput`` with the throughput given in
training images per second **per GPU** (``--imgs-per-sec``), so a run's GPU-hours do not depend on
how many GPUs it is spread over (its wall time does: GPU-hours / GPUs). Evaluation, the per-epoch
memory rebuild of DCAC and start-up are not counted. Train-image counts are those of the real
datasets (below) or, on a generated benchmark, the ``train_images`` its ``SYNTHETIC.json`` records.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

#: training images of the real datasets (torchreid layouts; the method's data table)
TRAIN_IMAGES: dict[str, int] = {
    "market1501": 12_936,
    "dukemtmcreid": 16_522,
    "msmt17": 32_621,  # train + val (data.msmt17_include_val True, the paper's choice)
    "msmt17_trainval": 32_621,
    "cuhk03_np": 7_365,  # detected boxes, 767/700 split
    "cuhk03": 7_365,
}
#: MSMT17 train split alone (data.msmt17_include_val False)
MSMT17_TRAIN_ONLY = 30_248


def train_images(cfg: CfgNode) -> int | None:
    """Training images per epoch of ``cfg``'s sources; ``None`` when a source is unknown."""
    marker = Path(cfg.data.root) / "SYNTHETIC.json"
    counts: dict[str, Any] = {}
    if marker.is_file():
        try:
            counts = json.loads(marker.read_text(encoding="utf-8")).get("counts", {})
        except (OSError, json.JSONDecodeError):
            counts = {}
    total = 0
    for src in list(cfg.data.sources):
        if marker.is_file():
            n = (counts.get(src) or {}).get("train_images")
        elif src == "msmt17" and not cfg.data.msmt17_include_val:
            n = MSMT17_TRAIN_ONLY
        else:
            n = TRAIN_IMAGES.get(src)
        if n is None:
            return None
        total += int(n)
    return total


def parse_throughput(spec: str | None) -> dict[str, float]:
    """``"250"`` -> ``{"*": 250}``; ``"dcac*=250,osnet*=1500"`` -> per model-name pattern.

    Raises:
        ValueError: a figure that is not a positive number.
    """
    if not spec:
        return {}
    out: dict[str, float] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        pattern, _, value = part.rpartition("=")
        try:
            figure = float(value)
        except ValueError:
            figure = -1.0
        if figure <= 0:
            raise ValueError(f"--imgs-per-sec: '{part}' is not a positive images/s figure; give e.g. 250 or "
                             f"'dcac*=250,osnet*=1500'")
        out[pattern or "*"] = figure
    return out


def throughput_for(model: str, table: dict[str, float]) -> float | None:
    """The figure whose pattern matches ``model`` (an exact name first, then the first pattern)."""
    if model in table:
        return table[model]
    for pattern, figure in table.items():
        if fnmatch.fnmatchcase(model, pattern):
            return figure
    return None


@dataclass
class RunCost:
    """Cost of one training run."""

    run_name: str
    model: str
    targets: tuple[str, ...]
    epochs: int | None
    images: int | None
    gpus: int
    imgs_per_sec: float | None

    @property
    def samples(self) -> int | None:
        """Training images processed: epochs x images per epoch."""
        return None if self.epochs is None or self.images is None else self.epochs * self.images

    @property
    def gpu_hours(self) -> float | None:
        if self.samples is None or not self.imgs_per_sec:
            return None
        return self.samples / self.imgs_per_sec / 3600.0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "?" if value is None else f"{value:,.{digits}f}"


def cost_table(costs: list[RunCost], gpus_per_run: int) -> str:
    """Per-run and per-model tables plus the total (plain text)."""
    lines = ["| run | targets | epochs | train imgs/epoch | GPUs | img/s/GPU | GPU-h |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in costs:
        epochs = "?" if c.epochs is None else str(c.epochs)
        lines.append(f"| {c.run_name} | {', '.join(c.targets)} | {epochs} | {_fmt(c.images, 0)} | {c.gpus} | "
                     f"{_fmt(c.imgs_per_sec, 0)} | {_fmt(c.gpu_hours, 2)} |")
    lines += ["", "| model | trainings | evaluations | GPU-h |", "|---|---:|---:|---:|"]
    models: dict[str, list[RunCost]] = {}
    for c in costs:
        models.setdefault(c.model, []).append(c)
    for model, group in models.items():
        hours = [c.gpu_hours for c in group]
        total = None if any(h is None for h in hours) else sum(h for h in hours if h is not None)
        lines.append(f"| {model} | {len(group)} | {sum(len(c.targets) for c in group)} | {_fmt(total, 1)} |")
    hours = [c.gpu_hours for c in costs]
    known = sum(h for h in hours if h is not None)
    missing = sum(h is None for h in hours)
    if missing == len(costs):
        total = "GPU-hours not estimated: give a throughput, --imgs-per-sec N or 'model*=N,...'"
    elif missing:
        total = (f"{known:,.1f} GPU-h for the {len(costs) - missing} run(s) with a throughput figure; {missing} run(s) "
                 f"have none (give --imgs-per-sec N or 'model*=N,...')")
    else:
        total = f"{known:,.1f} GPU-h"
    lines += ["", f"total: {len(costs)} training(s), {sum(len(c.targets) for c in costs)} evaluation(s), {total} "
                  f"(estimate: epochs x train images / images per second per GPU; evaluation not counted; a "
                  f"run's wall time is its GPU-h / {max(gpus_per_run, 1)} GPU(s))"]
    return "\n".join(lines)
