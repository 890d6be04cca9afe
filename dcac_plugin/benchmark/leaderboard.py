"""Paper-style leaderboard tables from result records (pure functions: data in, strings out).

Tables. One table per (benchmark, protocol kind): single-source (columns ``SRC->TGT``) and
multi-source leave-one-out (columns ``MA``, ``D``, ``MS``, ``C3`` and ``Average``). Real and
generated (synthetic) benchmarks always get separate tables; published numbers only ever join
real tables.

Rows.
* Reproduced rows ("``<method> (ours)``"): every run of one method on one column (e.g. the seeds
  of a suite) is aggregated into one cell: the mean, the sample standard deviation (ddof=1; only
  for two runs or more) and the number of runs ``n``; each run's values and provenance (run
  folder, config, command, commit, checkpoint and its sha256, log, wall time, device) stay
  attached to the cell. The ``Runs`` column gives ``n`` (``3``, or ``1-3`` when columns differ).
* Published rows (with ``published``): the packaged numbers exactly as printed, one row per
  (row name, source), with the source as a footnote ``[n]`` and the row's protocol flags (e.g.
  MSMT17 V1) as lettered markers explained under the table. Rows flagged with a different
  training ``protocol`` (e.g. all images of each source, epoch chosen on the target) form their
  own table per protocol kind, ranked among themselves only; reproduced rows (trained on the
  source train splits) never share a table with them. A published row of a method that
  also has a reproduced row is labelled "``<method> (<tag>)``" (``paper``, or e.g. ``torchreid``).
* Difference rows ("``<method>: ours - <tag>``"): for every pair of a reproduced row and a
  published row of the same method sharing a column: reproduced mean minus published, per metric.

Average. The multi-source ``Average`` of any row (published or reproduced) with all four
leave-one-out targets is the mean of the four; a printed average is kept as printed, any other is
computed here and marked ``†``. A reproduced average carries a ± over seeds when every seed has
all four targets.

Marks. Per column and per metric (mAP, R1 separately), over all published and reproduced rows
(never the difference rows), comparing values rounded half-up to one decimal: the best value (ties
all marked) and the second-best distinct value. Marks are only given in a column with at least two
values. github: ``**best**`` / ``_second_``; latex: ``\\textbf`` / ``\\underline``; html: ``<b>`` /
``<i>``; csv: ``mAP_mark`` / ``rank1_mark`` columns (``best``, ``second``); json: ``mark`` per cell.

Formats. ``github`` (markdown), ``latex`` (booktabs), ``html`` (a self-contained page: inline CSS
and JS, sortable tables, the plot embedded, links to each run's files), ``csv`` (tidy: one line per
row x column) and ``json`` (everything: each run's values and provenance per cell).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import logging
import os
import statistics
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from tabulate import tabulate

from dcac_plugin.benchmark.records import (
    BENCHMARKS,
    KINDS,
    METRICS,
    STANDARD_CODES,
    Provenance,
    PublishedResult,
    TargetResult,
    checkpoint_digest,
    column_sort_key,
    method_sort_key,
)

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("github", "latex", "csv", "html", "json")
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
JSON_SCHEMA = "dcac_plugin.leaderboard/2"
COMPUTED_MARK = "†"
#: How a published row's flag reads in the legend (``{}`` is the flag's value).
FLAG_TEXT: dict[str, str] = {
    "msmt17": "MSMT17 {}",
    "msmt17_source": "MSMT17 as source: {}",
    "cuhk03_split": "CUHK03 split {}",
    "backbone": "{} backbone",
    "distance": "{} distance at test time",
    "protocol": "different training protocol: {}",
    "cited_in": "cited from {}",
    "test_time": "{} at test time (marked by the source)",
    "input": "input {} (marked by the source)",
}
#: The flag that names a different training protocol: its rows get their own table (own marks).
PROTOCOL_FLAG = "protocol"
UNKNOWN = "unknown"
#: What a published row's ``tag`` stands for, in the "ours - <tag>" note.
TAG_TEXT: dict[str, str] = {
    "paper": "the method's published row",
    "torchreid": "torchreid's model-zoo row of the same model",
}


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


# ----------------------------------------------------------------------------------------------
# building


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def round1(v: float) -> Decimal:
    """``v`` rounded half-up to one decimal (after removing float noise): 69.55 -> 69.6."""
    return Decimal(repr(round(v, 6))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _run_sort_key(run: RunValue) -> tuple:
    return (run.seed is None, run.seed if run.seed is not None else 0, run.run_name)


def _aggregate(runs: list[RunValue], metrics: tuple[str, ...]) -> Cell:
    """Mean, sample std and count of ``runs`` for every metric all of them carry."""
    vals: dict[str, float | None] = {}
    std: dict[str, float] = {}
    for m in metrics:
        present = [run.metrics[m] for run in runs if m in run.metrics]
        if present and len(present) == len(runs):
            vals[m] = _mean(present)
            if len(present) > 1:
                std[m] = statistics.stdev(present)
    return Cell(values=vals, std=std, n=len(runs), runs=sorted(runs, key=_run_sort_key))


def _ours_rows(results: list[TargetResult]) -> list[Row]:
    grouped: dict[str, dict[str, list[RunValue]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        grouped[r.method][r.key].append(RunValue(r.run_name, r.seed, dict(r.metrics), r.provenance))
    rows = []
    for method in sorted(grouped, key=method_sort_key):
        cells = {key: _aggregate(runs, METRICS) for key, runs in grouped[method].items()}
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
        mets = {m: _mean([r.metrics[m] for r in runs]) for m in PAIR if all(m in r.metrics for r in runs)}
        out.append(RunValue("+".join(r.run_name for r in runs), seed, mets))
    return out


def _add_average(row: Row) -> None:
    """Give ``row`` an ``Average`` cell when it has all four leave-one-out targets (keep a printed one)."""
    if AVERAGE in row.cells or not all(c in row.cells for c in STANDARD_CODES):
        return
    cols = [row.cells[c] for c in STANDARD_CODES]
    vals: dict[str, float | None] = {}
    for m in PAIR:
        xs = [c.values.get(m) for c in cols]
        vals[m] = _mean(xs) if all(x is not None for x in xs) else None
    cell = Cell(values=vals, source=row.source, computed=True)
    if row.origin == "ours":
        paired = _seed_paired_runs(cols)
        if paired:
            cell.runs, cell.n = paired, len(paired)
            cell.std = {m: statistics.stdev([r.metrics[m] for r in paired]) for m in PAIR
                        if len(paired) > 1 and all(m in r.metrics for r in paired)}
    row.cells[AVERAGE] = cell


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


def _mark(rows: list[Row], columns: list[str]) -> None:
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


def _table(bench: str, kind: str, ours: list[Row], pub: list[Row], protocol: str | None) -> Table | None:
    """One table: averages, "(tag)" labels, difference rows and marks over its own rows."""
    if not ours and not pub:
        return None
    if kind == "multi_source":
        for row in pub + ours:
            _add_average(row)
    ours_methods = {r.method for r in ours}
    for paper in pub:
        if paper.label == paper.method and paper.method in ours_methods:
            paper.label = f"{paper.method} ({paper.tag})"
    diffs = [d for row in ours for paper in pub if paper.method == row.method
             if (d := _diff_row(row, paper)) is not None]
    rows = pub + ours + diffs
    columns = sorted({k for r in rows for k in r.cells}, key=column_sort_key)
    _mark(rows, columns)
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


# ----------------------------------------------------------------------------------------------
# rendering helpers


def _metrics(metric: str) -> tuple[str, ...]:
    if metric not in METRIC_CHOICES:
        raise LeaderboardError(f"unknown metric {metric!r}; choose one of {list(METRIC_CHOICES)}")
    return PAIR if metric == "both" else (metric,)


def _source_refs(tables: list[Table]) -> dict[str, int]:
    refs: dict[str, int] = {}
    for t in tables:
        for r in t.rows:
            if r.origin == "published":
                for s in r.sources():
                    refs.setdefault(s, len(refs) + 1)
    return refs


def flag_text(name: str, value: str) -> str:
    """Legend text of one published-row flag, e.g. ``("msmt17", "V1")`` -> ``MSMT17 V1``."""
    return FLAG_TEXT[name].format(value) if name in FLAG_TEXT else f"{name}: {value}"


def _flag_letters(tables: list[Table]) -> dict[tuple[str, str], str]:
    """One letter per distinct flag, in order of first appearance (``a``, ``b``, ...)."""
    letters: dict[tuple[str, str], str] = {}
    for t in tables:
        for r in t.rows:
            for f in r.flags:
                if f not in letters:
                    i = len(letters)
                    letters[f] = chr(ord("a") + i) if i < 26 else f"f{i + 1}"
    return letters


def _fmt_value(v: float | None, signed: bool) -> str:
    if v is None:
        return "-"
    r = round1(v)
    if signed:
        return "0.0" if r == 0 else f"{r:+.1f}"
    return f"{r:.1f}"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


@dataclass(frozen=True)
class _Style:
    """Markup of one output format."""

    best: str  # format string for a best value
    second: str
    pm: str  # the plus-minus sign
    computed: str  # marker of a computed average
    sup: str  # format string for flag letters
    esc: Callable[[str], str] = lambda s: s
    best_word: str = "bold"
    second_word: str = "italic"


def _metric_text(cell: Cell, m: str, signed: bool, style: _Style) -> str:
    txt = _fmt_value(cell.values.get(m), signed)
    if m in cell.std and cell.values.get(m) is not None:
        txt += style.pm + _fmt_value(cell.std[m], signed=False)
    mark = cell.marks.get(m)
    return style.best.format(txt) if mark == "best" else style.second.format(txt) if mark == "second" else txt


def _cell_text(row: Row, key: str, metrics: tuple[str, ...], style: _Style) -> str:
    cell = row.cells.get(key)
    if cell is None:
        return ""
    text = "/".join(_metric_text(cell, m, row.origin == "diff", style) for m in metrics)
    return text + (style.computed if cell.computed else "")


def _runs_text(row: Row) -> str:
    runs = row.runs()
    if runs is None:
        return ""
    return str(runs[0]) if runs[0] == runs[1] else f"{runs[0]}-{runs[1]}"


def _source_text(row: Row, refs: dict[str, int]) -> str:
    if row.origin == "ours":
        return "this repo"
    return " ".join(f"[{refs[s]}]" for s in row.sources() if s in refs)


def _label_text(row: Row, letters: dict[tuple[str, str], str], style: _Style) -> str:
    text = style.esc(row.label)
    if row.flags:
        text += style.sup.format(",".join(letters[f] for f in row.flags))
    return text


def _column_label(key: str) -> str:
    return "Average" if key == AVERAGE else key


def _has_ours(table: Table) -> bool:
    return any(r.origin == "ours" for r in table.rows)


def _text_grid(table: Table, metrics: tuple[str, ...], style: _Style, refs: dict[str, int],
               letters: dict[tuple[str, str], str]) -> tuple[list[str], list[list[str]]]:
    esc = style.esc
    header = ["Method", "Source"] + (["Runs"] if _has_ours(table) else [])
    header += [esc(_column_label(k)) for k in table.columns]
    body = []
    for row in table.rows:
        line = [_label_text(row, letters, style), esc(_source_text(row, refs))]
        if _has_ours(table):
            line.append(_runs_text(row))
        line += [_cell_text(row, k, metrics, style) for k in table.columns]
        body.append(line)
    return header, body


def _notes(table: Table, metrics: tuple[str, ...], style: _Style, letters: dict[tuple[str, str], str]) -> str:
    """The explanation under a table (markers, aggregation, flags), in ``style``'s markup."""
    esc = style.esc
    origins = {r.origin for r in table.rows}
    over = "all published and reproduced rows" if {"ours", "published"} <= origins else "all rows"
    parts = [esc(f"Cells: {'/'.join(METRIC_LABEL[m] for m in metrics)} in %."),
             style.best.format(style.best_word) + esc(" = best, ") + style.second.format(style.second_word)
             + esc(f" = second best per column and metric, over {over}"
                   + (" (not the difference rows)." if "diff" in origins else "."))]
    if "ours" in origins:
        parts.append(esc("Reproduced cells: mean") + style.pm + esc("std over the runs of the cell (sample "
                     "standard deviation, ddof=1; no ") + style.pm + esc(" for a single run); Runs = runs "
                     "per cell (min-max over the columns)."))
    cells = [c for r in table.rows for c in r.cells.values()]
    if any(c.computed for c in cells):
        parts.append(style.computed + esc(" Average computed here from the four columns (the source printed "
                                          "none)."))
        if any(c.computed and c.std for c in cells):
            parts.append(esc("A reproduced Average's ") + style.pm + esc(" is over the seeds that have all four "
                                                                         "targets."))
    flags = list(dict.fromkeys(f for r in table.rows for f in r.flags))
    if flags:
        parts.append(esc("Flags: ") + "; ".join(style.sup.format(letters[f]) + esc(" " + flag_text(*f))
                                                for f in flags) + esc("."))
    if table.protocol:
        parts.append(esc("These rows were trained under a different protocol than the source train splits the "
                         "other tables use (and reproduced runs follow): they are ranked among themselves only."))
    tags = list(dict.fromkeys(r.tag for r in table.rows if r.origin == "diff"))
    if tags:
        what = [f"'ours - {tag}' rows: reproduced mean minus {TAG_TEXT.get(tag, f'the row tagged {tag}')}"
                for tag in tags]
        parts.append(esc("; ".join(what) + "."))
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# formats

_GITHUB = _Style(best="**{}**", second="_{}_", pm="±", computed=COMPUTED_MARK, sup="<sup>{}</sup>")


def render_github(tables: list[Table], metric: str = "both") -> str:
    """GitHub markdown: a ``###`` title, a pipe table and notes per table; sources at the end."""
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    letters = _flag_letters(tables)
    out = []
    for t in tables:
        header, body = _text_grid(t, metrics, _GITHUB, refs, letters)
        out.append(f"### {t.title}\n")
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
        out.append("\n" + _notes(t, metrics, _GITHUB, letters) + "\n")
    if refs:
        out.append("Sources:\n")
        out.extend(f"- [{n}] {s}" for s, n in refs.items())
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$", "±": r"$\pm$", "†": r"\dag{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; ``->`` becomes ``$\\rightarrow$``."""
    parts = ["".join(_LATEX_SPECIAL.get(ch, ch) for ch in part) for part in text.split("->")]
    return r"$\rightarrow$".join(parts)


_LATEX = _Style(best=r"\textbf{{{}}}", second=r"\underline{{{}}}", pm=r"$\pm$", computed=r"\textsuperscript{\dag}",
                sup=r"\textsuperscript{{{}}}", esc=latex_escape, best_word="Bold", second_word="underlined")


def render_latex(tables: list[Table], metric: str = "both") -> str:
    """LaTeX (booktabs): one ``table`` environment per table, notes and sources as a footnote block."""
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    letters = _flag_letters(tables)
    out = ["% generated by dcac_plugin.benchmark.leaderboard; needs \\usepackage{booktabs}"]
    for t in tables:
        header, body = _text_grid(t, metrics, _LATEX, refs, letters)
        n_lead = len(header) - len(t.columns)
        out.append(r"\begin{table}[t]")
        out.append(r"\centering\small")
        out.append(r"\caption{" + latex_escape(t.title) + "}")
        out.append(r"\begin{tabular}{" + "l" * n_lead + "c" * len(t.columns) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(header) + r" \\")
        out.append(r"\midrule")
        for line in body:
            out.append(" & ".join(line) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        note = _notes(t, metrics, _LATEX, letters)
        srcs = [f"[{refs[s]}] {latex_escape(s)}" for s in refs if any(s in r.sources() for r in t.rows)]
        out.append(r"\par\footnotesize " + " \\\\\n".join([note] + srcs))
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


# ---- html

_HTML = _Style(best="<b>{}</b>", second="<i>{}</i>", pm="±", computed="<sup>†</sup>", sup="<sup>{}</sup>",
               esc=html.escape)

_HTML_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5em 2em;color:#1f2328}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
.legend,.notes,.sources{font-size:13px;max-width:80em;line-height:1.45}
.legend{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em}
.scroll{overflow-x:auto}
table.lb{border-collapse:collapse;font-size:12.5px;margin:.6em 0}
table.lb th,table.lb td{padding:3px 5px;border-bottom:1px solid #d8dee4;text-align:right;white-space:nowrap}
table.lb td.name{white-space:normal;min-width:10em;max-width:19em}
table.lb th{background:#eef1f4;cursor:pointer;user-select:none;position:sticky;top:0}
table.lb th:hover{background:#dde3e9}
table.lb th .arrow{color:#57606a;font-size:10px;margin-left:2px}
table.lb td.name,table.lb td.src,table.lb th.name,table.lb th.src{text-align:left}
table.lb tr.ours td{background:#eaf3ff}
table.lb tbody.diff td{background:#fafafa;color:#57606a}
table.lb tbody.diff tr:first-child td{border-top:2px solid #afb8c1}
table.lb td.cell a{color:inherit;text-decoration:none;border-bottom:1px dotted #57606a}
table.lb sup{color:#8250df;font-size:9px}
details.prov{margin:.4em 0 1em}
details.prov summary{cursor:pointer;font-size:13px;color:#0969da}
table.prov{border-collapse:collapse;font-size:11.5px;margin:.4em 0}
table.prov th,table.prov td{border:1px solid #d8dee4;padding:2px 5px;vertical-align:top;text-align:left}
table.prov th{background:#eef1f4}
table.prov code{font-size:11px;overflow-wrap:anywhere}
table.prov td.hash code{word-break:break-all}
table.prov td.cmd{max-width:34em}table.prov td.hash{max-width:17em}
table.prov tbody:target td{background:#fff8c5}
.unknown{color:#8c959f}
img.plot{max-width:100%;border:1px solid #d0d7de}
"""

_HTML_JS = """
(function(){
  function num(td){var v=td?td.getAttribute('data-v'):null;return v===null||v===''?null:parseFloat(v);}
  function sortTable(table,col,dir){
    var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    var numeric=rows.some(function(r){return r.cells[col]&&r.cells[col].hasAttribute('data-v');});
    rows.sort(function(a,b){
      if(numeric){var x=num(a.cells[col]),y=num(b.cells[col]);
        if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
        return dir==='ascending'?x-y:y-x;}
      var s=a.cells[col].textContent.trim().toLowerCase(),t=b.cells[col].textContent.trim().toLowerCase();
      return dir==='ascending'?s.localeCompare(t):t.localeCompare(s);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      var a=th.querySelector('.arrow');
      if(i===col){th.setAttribute('aria-sort',dir);a.textContent=dir==='ascending'?'\\u25B2':'\\u25BC';}
      else{th.removeAttribute('aria-sort');a.textContent='';}});
  }
  var tables=document.querySelectorAll('table.lb');
  Array.prototype.forEach.call(tables,function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      th.title='click to sort';
      th.addEventListener('click',function(){
        var numeric=Array.prototype.some.call(table.tBodies[0].rows,function(r){
          return r.cells[i]&&r.cells[i].hasAttribute('data-v');});
        var cur=th.getAttribute('aria-sort');
        var dir=cur?(cur==='ascending'?'descending':'ascending'):(numeric?'descending':'ascending');
        sortTable(table,i,dir);});});});
  var q=new URLSearchParams(window.location.search).get('sort');
  if(q){var p=q.split('.'),t=tables[parseInt(p[0],10)];
    if(t&&!isNaN(parseInt(p[1],10)))sortTable(t,parseInt(p[1],10),p[2]==='asc'?'ascending':'descending');}
  function openTarget(){
    var id=decodeURIComponent(window.location.hash.slice(1)),el=id&&document.getElementById(id);
    if(!el)return;var d=el.closest('details');if(d)d.open=true;el.scrollIntoView({block:'center'});}
  window.addEventListener('hashchange',openTarget);openTarget();
  document.body.setAttribute('data-ready','1');
})();
"""


def _href(path: str, base: Path | None, is_dir: bool = False) -> str:
    """Link to ``path`` (as recorded): relative to ``base`` (the html file's folder) when given."""
    target = path
    if base is not None:
        try:
            target = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
        except ValueError:  # another drive (Windows): keep it absolute
            target = os.path.abspath(path)
    target = target.replace(os.sep, "/")
    if is_dir and not target.endswith("/"):
        target += "/"
    return urllib.parse.quote(target)


def _link(label: str, path: str | None, base: Path | None, is_dir: bool = False) -> str:
    if path is None:
        return f'<span class="unknown">{html.escape(label)}: {UNKNOWN}</span>'
    if not Path(path).exists():
        return f'<span class="unknown" title="{html.escape(path)}">{html.escape(label)}: missing</span>'
    return f'<a href="{html.escape(_href(path, base, is_dir))}" title="{html.escape(path)}">{html.escape(label)}</a>'


def _known(v: object) -> str:
    return html.escape(str(v)) if v is not None else f'<span class="unknown">{UNKNOWN}</span>'


def _checkpoint_info(prov: Provenance) -> tuple[str, str]:
    """(checkpoint path text, sha256 text) for tooltips; 'none' when the run kept no checkpoint."""
    if prov.checkpoint is None:
        return ("none", "n/a") if prov.checkpoint_recorded else (UNKNOWN, UNKNOWN)
    digest, origin = checkpoint_digest(prov)
    return prov.checkpoint, (f"{digest} ({'recorded' if origin == 'recorded' else 'computed here'})"
                             if digest else UNKNOWN)


def _run_summary(run: RunValue, metrics: tuple[str, ...]) -> str:
    vals = ", ".join(f"{METRIC_LABEL[m]} {_fmt_value(run.metrics.get(m), False)}" for m in metrics)
    seed = f"seed {run.seed}" if run.seed is not None else "seed unknown"
    return f"{run.run_name} ({seed}): {vals}"


def _cell_title(table: Table, row: Row, key: str, cell: Cell, metrics: tuple[str, ...], refs: dict[str, int]) -> str:
    head = f"{row.label}, {_column_label(key)}"
    if row.origin == "published":
        text = f"{head}: source [{refs[row.source]}] {row.source}" if row.source in refs else head
        if cell.computed:
            text += "\nAverage computed here from the four columns (the source printed none)."
        return text
    if row.origin == "diff":
        return f"{head}: reproduced mean minus the published value"
    stats = ", ".join(
        f"{METRIC_LABEL[m]} {_fmt_value(cell.values.get(m), False)}"
        + (f"±{_fmt_value(cell.std[m], False)}" if m in cell.std else "") for m in metrics)
    lines = [f"{head}: {stats} over n={cell.n} run(s)" if cell.n else f"{head}: {stats}"]
    if cell.computed:
        lines.append("Average computed here from the four columns"
                     + (" (per-seed averages below)." if cell.runs else "."))
    for run in cell.runs:
        line = "- " + _run_summary(run, metrics)
        prov = run.provenance
        if prov is not None:
            ckpt, sha = _checkpoint_info(prov)
            line += (f"\n  folder {prov.run_dir or UNKNOWN}; commit {prov.git_commit or UNKNOWN}; "
                     f"config hash {prov.config_hash or UNKNOWN}; checkpoint {ckpt}, sha256 {sha}; "
                     f"{_fmt_duration(prov.wall_time_s)} on {prov.device or UNKNOWN}")
        lines.append(line)
    if any(r.provenance is not None for r in cell.runs):
        lines.append("Click for the full provenance.")
    return "\n".join(lines)


def _html_cell(table: Table, ti: int, ri: int, ci: int, row: Row, key: str, metrics: tuple[str, ...],
               refs: dict[str, int]) -> str:
    cell = row.cells.get(key)
    if cell is None:
        return "<td></td>"
    v = cell.values.get(metrics[0])
    data_v = f' data-v="{v:.4f}"' if v is not None else ""
    text = _cell_text(row, key, metrics, _HTML)
    if row.origin == "ours" and any(r.provenance is not None for r in cell.runs):
        text = f'<a href="#p{ti}-{ri}-{ci}">{text}</a>'
    title = html.escape(_cell_title(table, row, key, cell, metrics, refs))
    return f'<td class="cell"{data_v} title="{title}">{text}</td>'


def _html_row(table: Table, ti: int, ri: int, row: Row, metrics: tuple[str, ...], refs: dict[str, int],
              letters: dict[tuple[str, str], str]) -> str:
    label = _label_text(row, letters, _HTML)
    if row.flags:
        label = label.replace("<sup>", '<sup title="' + html.escape("; ".join(flag_text(*f) for f in row.flags))
                              + '">', 1)
    if row.origin == "ours":
        src = "this repo"
    else:
        src = " ".join(f'<a href="#src-{refs[s]}" title="{html.escape(s)}">[{refs[s]}]</a>'
                       for s in row.sources() if s in refs)
    tds = [f'<td class="name">{label}</td>', f'<td class="src">{src}</td>']
    if _has_ours(table):
        runs = row.runs()
        tds.append(f'<td data-v="{runs[1]}">{_runs_text(row)}</td>' if runs else "<td></td>")
    tds += [_html_cell(table, ti, ri, ci, row, key, metrics, refs) for ci, key in enumerate(table.columns)]
    return f'<tr class="{row.origin}">' + "".join(tds) + "</tr>"


def _html_provenance(table: Table, ti: int, metrics: tuple[str, ...], base: Path | None) -> str:
    groups = []
    n_runs = 0
    for ri, row in enumerate(table.rows):
        if row.origin != "ours":
            continue
        for ci, key in enumerate(table.columns):
            cell = row.cells.get(key)
            runs = [r for r in cell.runs if r.provenance is not None] if cell else []
            if not runs:
                continue
            lines = []
            for run in runs:
                prov = run.provenance
                n_runs += 1
                files = " · ".join([
                    _link("run folder", prov.run_dir, base, is_dir=True),
                    _link("config.yaml", prov.config_yaml, base),
                    _link("train.log", prov.train_log, base),
                    ("checkpoint: none" if prov.checkpoint is None and prov.checkpoint_recorded
                     else _link("checkpoint", prov.checkpoint, base)),
                ])
                digest, origin = checkpoint_digest(prov)
                sha = (f'<code>{digest}</code> ({"recorded" if origin == "recorded" else "computed here"})'
                       if digest else _known(None))
                vals = "".join(f"<td>{_fmt_value(run.metrics.get(m), False)}</td>" for m in metrics)
                init = _known(prov.init) + (f"<br><code>{prov.init_sha256}</code>" if prov.init_sha256 else "")
                lines.append(
                    f"<tr><td>{html.escape(row.label)}</td><td>{html.escape(_column_label(key))}</td>"
                    f"<td>{html.escape(run.run_name)}</td><td>{_known(run.seed)}</td>{vals}<td>{files}</td>"
                    f"<td>{_known(prov.config_hash)}</td><td>{_known(prov.git_commit)}</td>"
                    f'<td class="hash">{sha}</td><td class="hash">{init}</td>'
                    f"<td>{html.escape(_fmt_duration(prov.wall_time_s))}</td>"
                    f"<td>{_known(prov.device)}</td>"
                    f'<td class="cmd">{f"<code>{html.escape(prov.command)}</code>" if prov.command else _known(None)}'
                    f"</td></tr>")
            groups.append(f'<tbody id="p{ti}-{ri}-{ci}">' + "".join(lines) + "</tbody>")
    if not groups:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ["Row", "Column", "Run", "Seed", *(METRIC_LABEL[m] for m in metrics),
                                             "Files", "Config hash", "Git commit", "Checkpoint sha256",
                                             "Init (weights sha256)", "Wall time", "Device", "Command"])
    return (f'<details class="prov" id="prov-{ti}"><summary>Provenance of the reproduced cells ({n_runs} '
            f"run(s)): files, config, command, commit, checkpoint</summary>\n"
            f'<div class="scroll"><table class="prov"><thead><tr>{head}</tr></thead>\n'
            + "\n".join(groups) + "\n</table></div></details>")


def _plot_html(tables: list[Table]) -> str:
    try:
        png = plot_png(tables)
    except ImportError:
        logger.warning("matplotlib is not installed: the html page has no plot")
        return '<p class="notes">Plot omitted: matplotlib is not installed.</p>'
    data = base64.b64encode(png).decode("ascii")
    return (f'<img class="plot" alt="Grouped bar chart of every row of the tables above (mAP left, R1 right)" '
            f'src="data:image/png;base64,{data}">')


def render_html(tables: list[Table], metric: str = "both", output: str | Path | None = None,
                embed_plot: bool = True) -> str:
    """A self-contained HTML page (inline CSS and JS, no network).

    Per table: a sortable table (click a header; numbers sort by the first metric shown),
    markers (best bold, second italic, ``†`` computed average, lettered flags) explained under
    it, tooltips with each cell's source or provenance, and a collapsible provenance table with
    links to each reproduced run's folder, ``config.yaml``, ``train.log`` and checkpoint. Then the
    bar plot as an embedded PNG (when matplotlib is installed and ``embed_plot``) and the sources.
    ``?sort=T.C.asc|desc`` in the page's URL sorts table ``T`` by column ``C`` on load.

    Args:
        tables: from :func:`build_tables`.
        metric: ``both``, ``mAP`` or ``rank1``.
        output: where the page will be written; links are made relative to its folder. ``None``
            (stdout): paths as recorded.
        embed_plot: embed the bar plot.
    """
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    letters = _flag_letters(tables)
    base = Path(output).parent if output is not None else None
    cells = "/".join(METRIC_LABEL[m] for m in metrics)
    out = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>DG person re-ID leaderboard</title>", f"<style>{_HTML_CSS}</style>", "</head>", "<body>",
           "<h1>Domain-generalisable person re-ID leaderboard</h1>",
           f'<p class="legend"><b>Legend.</b> Cells: {cells} in %. <b>bold</b> = best, <i>italic</i> = second best '
           "per column and metric, over all published and reproduced rows (never the 'ours - X' difference rows). "
           "Reproduced cells (blue): mean±std over runs (sample std, ddof=1); hover a cell for its source or "
           "provenance, click a reproduced value for its files. <sup>†</sup> = Average computed here from the "
           "four columns. <sup>a</sup>, <sup>b</sup>, ... = protocol flags, explained under each table. Click a "
           "column header to sort (numbers by the first metric).</p>"]
    for ti, t in enumerate(tables):
        heads = ['<th class="name">Method<span class="arrow"></span></th>',
                 '<th class="src">Source<span class="arrow"></span></th>']
        if _has_ours(t):
            heads.append("<th>Runs<span class=\"arrow\"></span></th>")
        heads += [f'<th>{html.escape(_column_label(k))}<span class="arrow"></span></th>' for k in t.columns]
        main = [_html_row(t, ti, ri, r, metrics, refs, letters) for ri, r in enumerate(t.rows) if r.origin != "diff"]
        diff = [_html_row(t, ti, ri, r, metrics, refs, letters) for ri, r in enumerate(t.rows) if r.origin == "diff"]
        out.append(f'<h2 id="table-{ti}">{html.escape(t.title)}</h2>')
        out.append(f'<div class="scroll"><table class="lb" id="lb-{ti}">')
        out.append("<thead><tr>" + "".join(heads) + "</tr></thead>")
        out.append("<tbody>\n" + "\n".join(main) + "\n</tbody>")
        if diff:
            out.append('<tbody class="diff">\n' + "\n".join(diff) + "\n</tbody>")
        out.append("</table></div>")
        out.append(f'<p class="notes">{_notes(t, metrics, _HTML, letters)}</p>')
        prov = _html_provenance(t, ti, metrics, base)
        if prov:
            out.append(prov)
    if embed_plot and tables:
        out.append("<h2>Plot</h2>")
        out.append(_plot_html(tables))
    if refs:
        out.append("<h2>Sources of the published cells</h2>")
        out.append('<ol class="sources">')
        for s, n in refs.items():
            rows = list(dict.fromkeys(r.label for t in tables for r in t.rows
                                      if r.origin == "published" and s in r.sources()))
            out.append(f'<li id="src-{n}" value="{n}">{html.escape(s)} <span class="unknown">(rows: '
                       f"{html.escape(', '.join(rows))})</span></li>")
        out.append("</ol>")
    out.append(f"<script>{_HTML_JS}</script>")
    out.append("</body>")
    out.append("</html>")
    return "\n".join(out) + "\n"


# ---- csv

CSV_FIELDS = ("benchmark", "protocol", "method", "row", "origin", "column", "mAP", "rank1", "mAP_std",
              "rank1_std", "mAP_mark", "rank1_mark", "runs", "seeds", "computed", "flags", "source")


def _csv_number(v: float | None) -> str:
    if v is None:
        return ""
    return "0.00" if round(v, 2) == 0 else f"{v:.2f}"


def render_csv(tables: list[Table], metric: str = "both") -> str:
    """Tidy CSV: one line per (row, column) cell with both metrics (``metric`` is ignored).

    ``mAP``/``rank1`` hold the mean for reproduced cells, ``*_std`` the sample std (ddof=1, empty
    below two runs), ``runs`` the number of runs, ``seeds`` their seeds (``;``-separated).
    """
    _metrics(metric)
    letters = _flag_letters(tables)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for t in tables:
        for row in t.rows:
            flags = "; ".join(f"{letters[f]}: {flag_text(*f)}" for f in row.flags)
            for key in t.columns:
                cell = row.cells.get(key)
                if cell is None:
                    continue
                writer.writerow([
                    t.benchmark, t.kind, row.method, row.label, row.origin, _column_label(key),
                    *(_csv_number(cell.values.get(m)) for m in PAIR),
                    *(_csv_number(cell.std.get(m)) for m in PAIR),
                    cell.marks.get("mAP", ""), cell.marks.get("rank1", ""),
                    cell.n or "", ";".join(str(r.seed) for r in cell.runs if r.seed is not None),
                    "yes" if cell.computed else "", flags, cell.source or "",
                ])
    return buf.getvalue()


# ---- json


def _json_value(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def provenance_dict(prov: Provenance | None) -> dict | None:
    """Plain-data provenance; the checkpoint's sha256 is computed here when the record lacks it."""
    if prov is None:
        return None
    d = dataclasses.asdict(prov)
    digest, origin = checkpoint_digest(prov)
    d["checkpoint_sha256"] = digest
    d["checkpoint_sha256_from"] = origin
    return d


def _json_run(run: RunValue) -> dict:
    d: dict = {"run": run.run_name, "seed": run.seed}
    d.update({m: _json_value(v) for m, v in run.metrics.items()})
    if run.provenance is not None:
        d["provenance"] = provenance_dict(run.provenance)
    return d


def tables_to_dict(tables: list[Table]) -> dict:
    """Plain-data form of the tables (what ``--format json`` prints).

    Reproduced cells carry ``mean``, ``std`` (sample, ddof=1; ``null`` below two runs), ``n`` and
    ``runs`` (each run's values, seed and provenance); published and difference cells carry
    ``values`` (published cells also their ``source`` reference); every cell carries ``mark``.
    """
    refs = _source_refs(tables)
    letters = _flag_letters(tables)
    out_tables = []
    for t in tables:
        rows = []
        for row in t.rows:
            cells = {}
            for key, c in row.cells.items():
                d: dict = {}
                if row.origin == "ours":
                    d["mean"] = {m: _json_value(v) for m, v in c.values.items()}
                    d["std"] = {m: _json_value(c.std.get(m)) for m in c.values}
                    d["n"] = c.n
                    d["runs"] = [_json_run(r) for r in c.runs]
                else:
                    d["values"] = {m: _json_value(v) for m, v in c.values.items()}
                d["mark"] = {m: c.marks.get(m) for m in PAIR}
                if c.source and c.source in refs:
                    d["source"] = refs[c.source]
                if c.computed:
                    d["computed"] = True
                cells[_column_label(key)] = d
            runs = row.runs()
            entry: dict = {"label": row.label, "method": row.method, "origin": row.origin,
                           "runs": list(runs) if runs else None, "cells": cells}
            if row.origin != "ours":
                entry["source"] = refs.get(row.source) if row.source else None
                entry["tag"] = row.tag
            if row.flags:
                entry["flags"] = [{"marker": letters[f], "name": f[0], "value": f[1], "text": flag_text(*f)}
                                  for f in row.flags]
            rows.append(entry)
        out_tables.append({"title": t.title, "benchmark": t.benchmark, "kind": t.kind, "protocol": t.protocol,
                           "generated_benchmark": t.benchmark == "synthetic",
                           "columns": [_column_label(k) for k in t.columns], "rows": rows})
    return {"schema": JSON_SCHEMA, "std": "sample standard deviation (ddof=1) over the runs of a cell",
            "tables": out_tables, "sources": [{"ref": n, "text": s} for s, n in refs.items()]}


def render_json(tables: list[Table], metric: str = "both") -> str:
    """JSON document (see :func:`tables_to_dict`); ``metric`` is ignored (both are carried)."""
    _metrics(metric)
    return json.dumps(tables_to_dict(tables), indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"github": render_github, "latex": render_latex, "csv": render_csv, "html": render_html,
             "json": render_json}


def render(tables: list[Table], fmt: str = "github", metric: str = "both", *, output: str | Path | None = None,
           embed_plot: bool = True) -> str:
    """Render tables in ``fmt`` (one of :data:`FORMATS`).

    ``output`` (the file the text will be written to) and ``embed_plot`` only matter for html
    (relative links, the embedded plot); see :func:`render_html`.
    """
    if fmt not in RENDERERS:
        raise LeaderboardError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if fmt == "html":
        return render_html(tables, metric, output=output, embed_plot=embed_plot)
    return RENDERERS[fmt](tables, metric)


# ----------------------------------------------------------------------------------------------
# plot


def _figure(tables: list[Table]):
    """The grouped bar chart as a matplotlib ``Figure`` (Agg canvas attached)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tables:
        raise LeaderboardError("nothing to plot: no results matched the filters")
    width = min(16.0, max(8.0, 0.9 * max(len(t.columns) for t in tables) + 5.0))
    fig = Figure(figsize=(width, 3.0 * 2 * len(tables)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * len(tables), 1, squeeze=False)
    for ti, t in enumerate(tables):
        rows = [r for r in t.rows if r.origin != "diff"]
        bar_w = 0.8 / max(1, len(rows))
        cmap = colormaps["tab20" if len(rows) > 10 else "tab10"]
        for mi, m in enumerate(PAIR):
            ax = axes[2 * ti + mi][0]
            for ri, row in enumerate(rows):
                xs, ys, errs = [], [], []
                for ci, key in enumerate(t.columns):
                    cell = row.cells.get(key)
                    v = cell.values.get(m) if cell is not None else None
                    if v is not None:
                        xs.append(ci - 0.4 + bar_w * (ri + 0.5))
                        ys.append(v)
                        errs.append(cell.std.get(m, 0.0))
                ax.bar(xs, ys, width=bar_w, label=row.label, color=cmap(ri % cmap.N),
                       yerr=errs if any(errs) else None, error_kw={"linewidth": 0.6},
                       hatch="//" if row.origin == "ours" else None, edgecolor="black", linewidth=0.3)
            ax.set_xticks(range(len(t.columns)))
            ax.set_xticklabels([_column_label(k) for k in t.columns], fontsize=8)
            ax.set_ylabel(f"{METRIC_LABEL[m]} (%)", fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            short = "generated benchmark" if t.benchmark == "synthetic" else "real datasets"
            kind = "Single-source" if t.kind == "single_source" else "Multi-source (leave-one-out)"
            ax.set_title(f"{kind}, {short}: {METRIC_LABEL[m]}", fontsize=10)
            ax.grid(axis="y", linewidth=0.3, alpha=0.6)
            ax.set_axisbelow(True)
        axes[2 * ti][0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                               ncol=2 if len(rows) > 14 else 1)
    return fig


def plot_png(tables: list[Table]) -> bytes:
    """The grouped bar chart (see :func:`plot_tables`) as PNG bytes.

    Raises:
        ImportError: matplotlib is not installed.
        LeaderboardError: no tables to plot.
    """
    buf = io.BytesIO()
    _figure(tables).savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def plot_tables(tables: list[Table], path: str | Path) -> Path:
    """Grouped bar chart: two panels per table, mAP above R1, the legend beside the mAP panel.

    Every published and reproduced row is one bar series (reproduced bars hatched, with the
    std over runs as error bars); columns are the table's protocol keys. Drawn with the Agg
    canvas directly (no pyplot, no global backend change).

    Raises:
        LeaderboardError: no tables to plot.
    """
    from dcac_plugin.utils.io import atomic_open

    png = plot_png(tables)
    path = Path(path)
    with atomic_open(path, "wb") as f:  # a failed write: WriteError, the old plot kept
        f.write(png)
    logger.info("wrote leaderboard plot %s", path)
    return path
