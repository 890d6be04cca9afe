"""Numbers of the table: per-cell aggregation over runs, the multi-source ``Average`` and the marks.

Marks. Per column and per metric (mAP, R1 separately), over all published and reproduced rows
(never the difference rows), comparing values rounded half-up to one decimal: the best value (ties
all marked) and the second-best distinct value. Marks are only given in a column with at least two
values.
"""

from __future__ import annotations

import statistics
from decimal import ROUND_HALF_UP, Decimal

from dcac_plugin.benchmark.leaderboard.model import AVERAGE, PAIR, Cell, Row, RunValue
from dcac_plugin.benchmark.records import STANDARD_CODES


def mean(values: list[float]) -> float:
    """Arithmetic mean of a non-empty list."""
    return sum(values) / len(values)


def round1(v: float) -> Decimal:
    """``v`` rounded half-up to one decimal (after removing float noise): 69.55 -> 69.6."""
    return Decimal(repr(round(v, 6))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _run_sort_key(run: RunValue) -> tuple:
    return (run.seed is None, run.seed if run.seed is not None else 0, run.run_name)


def aggregate(runs: list[RunValue], metrics: tuple[str, ...]) -> Cell:
    """Mean, sample std and count of ``runs`` for every metric all of them carry."""
    vals: dict[str, float | None] = {}
    std: dict[str, float] = {}
    for m in metrics:
        present = [run.metrics[m] for run in runs if m in run.metrics]
        if present and len(present) == len(runs):
            vals[m] = mean(present)
            if len(present) > 1:
                std[m] = statistics.stdev(present)
    return Cell(values=vals, std=std, n=len(runs), runs=sorted(runs, key=_run_sort_key))


def _seed_paired_runs(cells: list[Cell]) -> list[RunValue]:
    """Per-seed averages over ``cells`` when every cell has exactly one run per seed, same seeds."""
    per_cell = []
    for c in cells:
        seeds = [r.seed for r in c.runs]
        if not seeds or None in seeds or len(set(seeds)) != len(seeds):
            return []
        per_cell.append({r.seed: r for r in c.runs})
    if any(set(d) != set(per_cell[0]) for d in per_cell):
        return []
    out = []
    for seed in sorted(per_cell[0]):
        runs = [d[seed] for d in per_cell]
        mets = {m: mean([r.metrics[m] for r in runs]) for m in PAIR if all(m in r.metrics for r in runs)}
        out.append(RunValue("+".join(r.run_name for r in runs), seed, mets))
    return out


def add_average(row: Row) -> None:
    """Give ``row`` an ``Average`` cell when it has all four leave-one-out targets (keep a printed one).

    A reproduced average carries a ± over seeds when every seed has all four targets.
    """
    if AVERAGE in row.cells or not all(c in row.cells for c in STANDARD_CODES):
        return
    cols = [row.cells[c] for c in STANDARD_CODES]
    vals: dict[str, float | None] = {}
    for m in PAIR:
        xs = [c.values.get(m) for c in cols]
        vals[m] = mean(xs) if all(x is not None for x in xs) else None
    cell = Cell(values=vals, source=row.source, computed=True)
    if row.origin == "ours":
        paired = _seed_paired_runs(cols)
        if paired:
            cell.runs, cell.n = paired, len(paired)
            cell.std = {m: statistics.stdev([r.metrics[m] for r in paired]) for m in PAIR
                        if len(paired) > 1 and all(m in r.metrics for r in paired)}
    row.cells[AVERAGE] = cell


def mark(rows: list[Row], columns: list[str]) -> None:
    """Set ``best`` / ``second`` marks per column and metric over the non-difference rows."""
    for key in columns:
        for m in PAIR:
            scored = [(round1(r.cells[key].values[m]), r.cells[key]) for r in rows
                      if r.origin != "diff" and key in r.cells and r.cells[key].values.get(m) is not None]
            if len(scored) < 2:
                continue
            distinct = sorted({v for v, _ in scored}, reverse=True)
            for v, cell in scored:
                if v == distinct[0]:
                    cell.marks[m] = "best"
                elif len(distinct) > 1 and v == distinct[1]:
                    cell.marks[m] = "second"
