"""From per-target results and published numbers to leaderboard tables.

One table per (benchmark, protocol kind); real and generated benchmarks never share a table, and
published numbers only join real tables. Published rows flagged with a different training
``protocol`` form their own table per kind, ranked among themselves only.
"""

from __future__ import annotations

from collections import defaultdict

from dcac_plugin.benchmark.leaderboard.model import (
    BENCHMARK_CHOICES,
    PAIR,
    PROTOCOL_CHOICES,
    Cell,
    LeaderboardError,
    Row,
    RunValue,
    Table,
)
from dcac_plugin.benchmark.leaderboard.ranking import add_average, aggregate, mark
from dcac_plugin.benchmark.records import METRICS, PublishedResult, TargetResult, column_sort_key, method_sort_key


def _ours_rows(results: list[TargetResult]) -> list[Row]:
    grouped: dict[str, dict[str, list[RunValue]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        grouped[r.method][r.key].append(RunValue(r.run_name, r.seed, dict(r.metrics), r.provenance))
    rows = []
    for method in sorted(grouped, key=method_sort_key):
        cells = {key: aggregate(runs, METRICS) for key, runs in grouped[method].items()}
        rows.append(Row(label=f"{method} (ours)", method=method, origin="ours", cells=cells))
    return rows


def _published_rows(published: list[PublishedResult], kind: str) -> list[Row]:
    rows: dict[str, Row] = {}
    for p in published:
        if p.kind != kind:
            continue
        label = p.label or p.method
        row = rows.setdefault(label, Row(label=label, method=p.method, origin="published", cells={},
                                         source=p.source, tag=p.tag, flags=p.flags))
        row.cells[p.key] = Cell(values={"mAP": p.mAP, "rank1": p.rank1}, source=p.source)
    return list(rows.values())


def _diff_row(ours: Row, paper: Row) -> Row | None:
    cells = {}
    for key, oc in ours.cells.items():
        pc = paper.cells.get(key)
        if pc is None:
            continue
        vals: dict[str, float | None] = {}
        for m in PAIR:
            o, p = oc.values.get(m), pc.values.get(m)
            vals[m] = None if o is None or p is None else o - p
        cells[key] = Cell(values=vals)
    if not cells:
        return None
    return Row(label=f"{ours.method}: ours - {paper.tag}", method=ours.method, origin="diff", cells=cells,
               source=paper.source, tag=paper.tag)


def _table(bench: str, kind: str, ours: list[Row], pub: list[Row], protocol: str | None) -> Table | None:
    """One table: averages, "(tag)" labels, difference rows and marks over its own rows."""
    if not ours and not pub:
        return None
    if kind == "multi_source":
        for row in pub + ours:
            add_average(row)
    ours_methods = {r.method for r in ours}
    for paper in pub:
        if paper.label == paper.method and paper.method in ours_methods:
            paper.label = f"{paper.method} ({paper.tag})"
    diffs = [d for row in ours for paper in pub if paper.method == row.method
             if (d := _diff_row(row, paper)) is not None]
    rows = pub + ours + diffs
    columns = sorted({k for r in rows for k in r.cells}, key=column_sort_key)
    mark(rows, columns)
    return Table(benchmark=bench, kind=kind, columns=columns, rows=rows, protocol=protocol)


def build_tables(
    results: list[TargetResult],
    published: list[PublishedResult] | None = None,
    protocol: str = "all",
    benchmark: str = "all",
) -> list[Table]:
    """Group per-target results (and optionally published numbers) into leaderboard tables.

    Args:
        results: from :func:`dcac_plugin.benchmark.records.expand_per_target` (may be empty).
        published: published cells to merge into the real-benchmark tables (``None``: none).
        protocol: ``single``, ``multi`` or ``all``.
        benchmark: ``real``, ``synthetic`` or ``all``.

    Returns:
        Tables ordered real before synthetic, single- before multi-source; a table is produced
        for a (benchmark, kind) with at least one row. Rows: published, reproduced, differences.
        Published rows of a different training ``protocol`` (flag) follow in a table of their own
        per protocol, after the standard table of their kind.

    Raises:
        LeaderboardError: an unknown ``protocol`` or ``benchmark`` value.
    """
    if protocol not in PROTOCOL_CHOICES:
        raise LeaderboardError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOL_CHOICES)}")
    if benchmark not in BENCHMARK_CHOICES:
        raise LeaderboardError(f"unknown benchmark {benchmark!r}; choose one of {list(BENCHMARK_CHOICES)}")
    tables = []
    for bench in BENCHMARK_CHOICES[benchmark]:
        for kind in PROTOCOL_CHOICES[protocol]:
            ours = _ours_rows([r for r in results if r.benchmark == bench and r.kind == kind])
            pub = _published_rows(published, kind) if (published and bench == "real") else []
            groups: dict[str | None, list[Row]] = {None: []}
            for row in pub:
                groups.setdefault(row.protocol, []).append(row)
            for proto, group in groups.items():
                table = _table(bench, kind, ours if proto is None else [], group, proto)
                if table is not None:
                    tables.append(table)
    return tables
