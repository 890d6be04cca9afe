"""The leaderboard's table model: runs, cells, rows and tables (plain dataclasses), and its options.

Everything here is data: :mod:`~dcac_plugin.benchmark.leaderboard.build` fills these classes from
records, the renderers only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcac_plugin.benchmark.records import BENCHMARKS, KINDS, Provenance

METRIC_CHOICES: tuple[str, ...] = ("both", "mAP", "rank1")
PROTOCOL_CHOICES: dict[str, tuple[str, ...]] = {
    "single": ("single_source",),
    "multi": ("multi_source",),
    "all": KINDS,
}
BENCHMARK_CHOICES: dict[str, tuple[str, ...]] = {
    "real": ("real",), "synthetic": ("synthetic",), "all": BENCHMARKS,
}
AVERAGE = "average"
PAIR = ("mAP", "rank1")
METRIC_LABEL = {"mAP": "mAP", "rank1": "R1"}
#: The flag that names a different training protocol: its rows get their own table (own marks).
PROTOCOL_FLAG = "protocol"


class LeaderboardError(ValueError):
    """Invalid leaderboard option."""


@dataclass
class RunValue:
    """One run's values inside a reproduced cell.

    Attributes:
        run_name: the run (for an ``Average`` cell: the four runs joined with ``+``).
        seed: the run's seed (``None`` when unknown).
        metrics: metric -> value in percent.
        provenance: where the run comes from (``None`` for averages and hand-made results).
    """

    run_name: str
    seed: int | None
    metrics: dict[str, float]
    provenance: Provenance | None = None


@dataclass
class Cell:
    """One table cell.

    Attributes:
        values: metric -> value in percent (``None`` where unknown): the mean over runs for a
            reproduced cell (every metric all runs have), the printed value for a published cell,
            the difference for a difference cell.
        std: metric -> sample standard deviation (ddof=1) over runs; empty below two runs.
        n: number of runs aggregated (reproduced cells; 0 otherwise).
        runs: each run's values and provenance (reproduced cells).
        source: the publication a published cell comes from.
        computed: True for an ``Average`` computed here (not printed by a source).
        marks: metric -> ``"best"`` / ``"second"`` (absent when unmarked).
    """

    values: dict[str, float | None]
    std: dict[str, float] = field(default_factory=dict)
    n: int = 0
    runs: list[RunValue] = field(default_factory=list)
    source: str | None = None
    computed: bool = False
    marks: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    """One table row.

    Attributes:
        label: the row name shown.
        method: the method (reproduced and published rows of one method are compared).
        origin: ``"published"``, ``"ours"`` or ``"diff"``.
        cells: column key -> cell.
        source: the publication of a published row (of the compared row, for a difference row).
        tag: a published row's source kind (``paper``, ``torchreid``...).
        flags: a published row's protocol flags, ``((name, value), ...)``.
    """

    label: str
    method: str
    origin: str
    cells: dict[str, Cell]
    source: str | None = None
    tag: str = "paper"
    flags: tuple[tuple[str, str], ...] = ()

    @property
    def protocol(self) -> str | None:
        """The row's different training protocol (its ``protocol`` flag), ``None`` for the standard one."""
        return dict(self.flags).get(PROTOCOL_FLAG)

    def runs(self) -> tuple[int, int] | None:
        """(min, max) number of runs over the row's reproduced cells, ``None`` for other rows."""
        ns = [c.n for k, c in self.cells.items() if k != AVERAGE and c.n > 0]
        return (min(ns), max(ns)) if ns else None

    def sources(self) -> list[str]:
        """Distinct sources of the row (its own, then its cells'), in order of first appearance."""
        out: list[str] = [self.source] if self.source else []
        for c in self.cells.values():
            if c.source and c.source not in out:
                out.append(c.source)
        return out


@dataclass
class Table:
    """One leaderboard table (one benchmark, one protocol kind, one training protocol).

    ``protocol`` is ``None`` for the standard training protocol (source train splits), else the
    ``protocol`` flag shared by every row of the table.
    """

    benchmark: str
    kind: str
    columns: list[str]
    rows: list[Row]
    protocol: str | None = None

    @property
    def title(self) -> str:
        """Human title; generated-benchmark tables say so explicitly."""
        what = "Single-source DG" if self.kind == "single_source" else "Multi-source DG (leave-one-out)"
        if self.benchmark == "synthetic":
            return (f"{what}: GENERATED benchmark "
                    "(synthetic data; not comparable with real or published results)")
        if self.protocol:
            return f"{what}: real datasets, different training protocol: {self.protocol}"
        return f"{what}: real datasets"
