"""Paper-style leaderboard tables from result records (pure functions: data in, strings out).

Tables. One table per (benchmark, protocol kind): single-source (columns ``SRC->TGT``) and
multi-source leave-one-out (columns ``MA``, ``D``, ``MS``, ``C3`` and ``Average``). Real and
generated (synthetic) benchmarks always get separate tables; published numbers only ever join
real tables.

Rows.
* Reproduced rows ("``<method> (ours)``"): several runs of one method on one column (e.g. seeds)
  are averaged; a cell holds the mean and the ``Runs`` column gives the count (``3``, or ``1-3``
  when columns differ). The multi-source ``Average`` of a reproduced row is the mean of its four
  targets and is only shown when all four are present.
* Published rows (with ``published``): the packaged numbers exactly as printed, each cell with its
  source (footnote ``[n]``; ``later_work`` entries cite their own source). A published method that
  also has a reproduced row is labelled "``<method> (paper)``". A published ``Average`` is shown
  only where the source printed one.
* Difference rows ("``<method>: ours - paper``"): for every method with both a reproduced and a
  published row (DCAC and the CLIP baseline in practice), reproduced minus published, per metric.

Marks. Per column and per metric (mAP, R1 separately), over published and reproduced rows (not the
difference rows), comparing values rounded to one decimal: the best value (ties all marked) and
the second-best distinct value. Marks are only given in a column with at least two values.
github: ``**best**`` / ``_second_``; latex: ``\\textbf`` / ``\\underline``; html: ``<b>`` /
``<u>``; csv: ``mAP_mark`` / ``rank1_mark`` columns (``best``, ``second``); json: ``mark`` per cell.

Formats. ``github`` (markdown), ``latex`` (booktabs), ``html``, ``csv`` (tidy: one line per
row x column, both metrics) and ``json`` (everything, including all averaged metrics).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from dcac_plugin.benchmark.records import (
    BENCHMARKS,
    KINDS,
    METRICS,
    STANDARD_CODES,
    PublishedResult,
    TargetResult,
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
JSON_SCHEMA = "dcac_plugin.leaderboard/1"


class LeaderboardError(ValueError):
    """Invalid leaderboard option."""


@dataclass
class Cell:
    """One table cell.

    Attributes:
        values: metric -> value in percent (``None`` where unknown). Reproduced cells carry every
            averaged metric; published and difference cells carry ``mAP`` and ``rank1``.
        n: number of runs averaged (reproduced cells; 0 otherwise).
        source: the publication a published cell comes from.
        computed: True for a reproduced ``Average`` (mean of the four targets).
        marks: metric -> ``"best"`` / ``"second"`` (absent when unmarked).
    """

    values: dict[str, float | None]
    n: int = 0
    source: str | None = None
    computed: bool = False
    marks: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    """One table row; ``origin`` is ``"published"``, ``"ours"`` or ``"diff"``."""

    label: str
    method: str
    origin: str
    cells: dict[str, Cell]

    def runs(self) -> tuple[int, int] | None:
        """(min, max) number of runs over the row's reproduced cells, ``None`` for other rows."""
        ns = [c.n for k, c in self.cells.items() if k != AVERAGE and c.n > 0]
        return (min(ns), max(ns)) if ns else None

    def sources(self) -> list[str]:
        """Distinct sources of the row's cells, in column order of first appearance."""
        out: list[str] = []
        for c in self.cells.values():
            if c.source and c.source not in out:
                out.append(c.source)
        return out


@dataclass
class Table:
    """One leaderboard table (one benchmark, one protocol kind)."""

    benchmark: str
    kind: str
    columns: list[str]
    rows: list[Row]

    @property
    def title(self) -> str:
        """Human title; generated-benchmark tables say so explicitly."""
        what = "Single-source DG" if self.kind == "single_source" else "Multi-source DG (leave-one-out)"
        if self.benchmark == "synthetic":
            return (f"{what}: GENERATED benchmark "
                    "(synthetic data; not comparable with real or published results)")
        return f"{what}: real datasets"


# ----------------------------------------------------------------------------------------------
# building


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _ours_rows(results: list[TargetResult]) -> list[Row]:
    grouped: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        grouped[r.method][r.key].append(r.metrics)
    rows = []
    for method in sorted(grouped, key=method_sort_key):
        cells: dict[str, Cell] = {}
        for key, runs in grouped[method].items():
            vals: dict[str, float | None] = {}
            for m in METRICS:
                present = [run[m] for run in runs if m in run]
                if len(present) == len(runs):
                    vals[m] = _mean(present)
            cells[key] = Cell(values=vals, n=len(runs))
        rows.append(Row(label=f"{method} (ours)", method=method, origin="ours", cells=cells))
    return rows


def _published_rows(published: list[PublishedResult], kind: str) -> list[Row]:
    rows: dict[str, Row] = {}
    for p in published:
        if p.kind != kind:
            continue
        row = rows.setdefault(p.method, Row(label=p.method, method=p.method, origin="published", cells={}))
        row.cells[p.key] = Cell(values={"mAP": p.mAP, "rank1": p.rank1}, source=p.source)
    return list(rows.values())


def _add_average(row: Row) -> None:
    if all(c in row.cells for c in STANDARD_CODES):
        vals: dict[str, float | None] = {}
        for m in PAIR:
            xs = [row.cells[c].values.get(m) for c in STANDARD_CODES]
            vals[m] = _mean(xs) if all(x is not None for x in xs) else None
        row.cells[AVERAGE] = Cell(values=vals, computed=True)


def _diff_row(ours: Row, paper: Row) -> Row:
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
    return Row(label=f"{ours.method}: ours - paper", method=ours.method, origin="diff", cells=cells)


def _mark(rows: list[Row], columns: list[str]) -> None:
    for key in columns:
        for m in PAIR:
            scored = [(round(r.cells[key].values[m], 1), r.cells[key]) for r in rows
                      if r.origin != "diff" and key in r.cells and r.cells[key].values.get(m) is not None]
            if len(scored) < 2:
                continue
            distinct = sorted({v for v, _ in scored}, reverse=True)
            for v, cell in scored:
                if v == distinct[0]:
                    cell.marks[m] = "best"
                elif len(distinct) > 1 and v == distinct[1]:
                    cell.marks[m] = "second"


def build_tables(
    results: list[TargetResult],
    published: list[PublishedResult] | None = None,
    protocol: str = "all",
    benchmark: str = "all",
) -> list[Table]:
    """Group per-target results (and optionally published numbers) into leaderboard tables.

    Args:
        results: from :func:`dcac_plugin.benchmark.records.expand_per_target`.
        published: published cells to merge into the real-benchmark tables (``None``: none).
        protocol: ``single``, ``multi`` or ``all``.
        benchmark: ``real``, ``synthetic`` or ``all``.

    Returns:
        Tables ordered real before synthetic, single- before multi-source; a table is produced
        for a (benchmark, kind) with at least one row.

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
            if not ours and not pub:
                continue
            if kind == "multi_source":
                for row in ours:
                    _add_average(row)
            pub_by_method = {r.method: r for r in pub}
            diffs = []
            for row in ours:
                paper = pub_by_method.get(row.method)
                if paper is not None:
                    paper.label = f"{paper.method} (paper)"
                    diffs.append(_diff_row(row, paper))
            rows = pub + ours + diffs
            columns = sorted({k for r in rows for k in r.cells}, key=column_sort_key)
            _mark(rows, columns)
            tables.append(Table(benchmark=bench, kind=kind, columns=columns, rows=rows))
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
            for s in r.sources():
                refs.setdefault(s, len(refs) + 1)
    return refs


def _fmt_value(v: float | None, signed: bool) -> str:
    if v is None:
        return "-"
    if signed:
        return "0.0" if round(v, 1) == 0 else f"{v:+.1f}"
    return f"{v:.1f}"


def _cell_text(row: Row, key: str, metrics: tuple[str, ...], deco: dict[str, str]) -> str:
    cell = row.cells.get(key)
    if cell is None:
        return ""
    parts = []
    for m in metrics:
        txt = _fmt_value(cell.values.get(m), signed=row.origin == "diff")
        mark = cell.marks.get(m)
        parts.append(deco[mark].format(txt) if mark else txt)
    return "/".join(parts)


def _runs_text(row: Row) -> str:
    runs = row.runs()
    if runs is None:
        return ""
    return str(runs[0]) if runs[0] == runs[1] else f"{runs[0]}-{runs[1]}"


def _source_text(row: Row, refs: dict[str, int]) -> str:
    if row.origin == "ours":
        return "this repo"
    return " ".join(f"[{refs[s]}]" for s in row.sources())


def _column_label(key: str) -> str:
    return "Average" if key == AVERAGE else key


def _has_ours(table: Table) -> bool:
    return any(r.origin == "ours" for r in table.rows)


def _text_grid(table: Table, metrics: tuple[str, ...], deco: dict[str, str], refs: dict[str, int],
               esc=lambda s: s) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "Source"] + (["Runs"] if _has_ours(table) else [])
    header += [esc(_column_label(k)) for k in table.columns]
    body = []
    for row in table.rows:
        line = [esc(row.label), esc(_source_text(row, refs))]
        if _has_ours(table):
            line.append(_runs_text(row))
        line += [_cell_text(row, k, metrics, deco) for k in table.columns]
        body.append(line)
    return header, body


def _notes(table: Table, metrics: tuple[str, ...], best: str, second: str) -> str:
    cells = "/".join(METRIC_LABEL[m] for m in metrics)
    origins = {r.origin for r in table.rows}
    text = f"Cells: {cells} in %. {best} = best, {second} = second best per column and metric"
    text += " (published and reproduced rows)." if {"ours", "published"} <= origins else "."
    if "ours" in origins:
        text += " Reproduced cells are means over Runs."
    if "diff" in origins:
        text += " 'ours - paper' rows: reproduced minus published."
    return text


# ----------------------------------------------------------------------------------------------
# formats


def render_github(tables: list[Table], metric: str = "both") -> str:
    """GitHub markdown: a ``###`` title, a pipe table and notes/footnotes per table."""
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    deco = {"best": "**{}**", "second": "_{}_"}
    out = []
    for t in tables:
        header, body = _text_grid(t, metrics, deco, refs)
        out.append(f"### {t.title}\n")
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
        out.append("\n" + _notes(t, metrics, "**bold**", "_italic_") + "\n")
    if refs:
        out.append("Sources:\n")
        out.extend(f"- [{n}] {s}" for s, n in refs.items())
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; ``->`` becomes ``$\\rightarrow$``."""
    parts = ["".join(_LATEX_SPECIAL.get(ch, ch) for ch in part) for part in text.split("->")]
    return r"$\rightarrow$".join(parts)


def render_latex(tables: list[Table], metric: str = "both") -> str:
    """LaTeX (booktabs): one ``table`` environment per table, sources as a footnote block."""
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    deco = {"best": r"\textbf{{{}}}", "second": r"\underline{{{}}}"}
    out = ["% generated by dcac_plugin.benchmark.leaderboard; needs \\usepackage{booktabs}"]
    for t in tables:
        header, body = _text_grid(t, metrics, deco, refs, esc=latex_escape)
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
        note = latex_escape(_notes(t, metrics, "Bold", "underlined"))
        srcs = [f"[{refs[s]}] {latex_escape(s)}" for s in refs if any(s in r.sources() for r in t.rows)]
        out.append(r"\par\footnotesize " + " \\\\\n".join([note] + srcs))
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def render_html(tables: list[Table], metric: str = "both") -> str:
    """HTML fragment: ``<h3>`` title, ``<table>`` and notes per table; sources as a list."""
    metrics = _metrics(metric)
    refs = _source_refs(tables)
    deco = {"best": "<b>{}</b>", "second": "<u>{}</u>"}
    out = []
    for t in tables:
        header, body = _text_grid(t, metrics, deco, refs, esc=html.escape)
        out.append(f"<h3>{html.escape(t.title)}</h3>")
        out.append(tabulate(body, headers=header, tablefmt="unsafehtml", disable_numparse=True))
        out.append(f"<p>{html.escape(_notes(t, metrics, 'bold', 'underlined'))}</p>")
    if refs:
        out.append("<ol>")
        out.extend(f"<li value=\"{n}\">{html.escape(s)}</li>" for s, n in refs.items())
        out.append("</ol>")
    return "\n".join(out) + "\n"


CSV_FIELDS = ("benchmark", "protocol", "method", "row", "origin", "column", "mAP", "rank1",
              "mAP_mark", "rank1_mark", "runs", "source")


def _csv_number(v: float | None) -> str:
    if v is None:
        return ""
    return "0.00" if round(v, 2) == 0 else f"{v:.2f}"


def render_csv(tables: list[Table], metric: str = "both") -> str:
    """Tidy CSV: one line per (row, column) cell with both metrics (``metric`` is ignored)."""
    _metrics(metric)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for t in tables:
        for row in t.rows:
            for key in t.columns:
                cell = row.cells.get(key)
                if cell is None:
                    continue
                vals = [cell.values.get(m) for m in PAIR]
                writer.writerow([
                    t.benchmark, t.kind, row.method, row.label, row.origin, _column_label(key),
                    *(_csv_number(v) for v in vals),
                    cell.marks.get("mAP", ""), cell.marks.get("rank1", ""),
                    cell.n or "", cell.source or "",
                ])
    return buf.getvalue()


def _json_value(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def tables_to_dict(tables: list[Table]) -> dict:
    """Plain-data form of the tables (what ``--format json`` prints)."""
    refs = _source_refs(tables)
    out_tables = []
    for t in tables:
        rows = []
        for row in t.rows:
            cells = {}
            for key, c in row.cells.items():
                d: dict = {"values": {m: _json_value(v) for m, v in c.values.items()},
                           "mark": {m: c.marks.get(m) for m in PAIR}}
                if c.n:
                    d["n"] = c.n
                if c.source:
                    d["source"] = refs[c.source]
                if c.computed:
                    d["computed"] = True
                cells[_column_label(key)] = d
            runs = row.runs()
            rows.append({"label": row.label, "method": row.method, "origin": row.origin,
                         "runs": list(runs) if runs else None, "cells": cells})
        out_tables.append({"title": t.title, "benchmark": t.benchmark, "kind": t.kind,
                           "generated_benchmark": t.benchmark == "synthetic",
                           "columns": [_column_label(k) for k in t.columns], "rows": rows})
    return {"schema": JSON_SCHEMA, "tables": out_tables,
            "sources": [{"ref": n, "text": s} for s, n in refs.items()]}


def render_json(tables: list[Table], metric: str = "both") -> str:
    """JSON document (see :func:`tables_to_dict`); ``metric`` is ignored (both are carried)."""
    _metrics(metric)
    return json.dumps(tables_to_dict(tables), indent=2) + "\n"


RENDERERS = {"github": render_github, "latex": render_latex, "csv": render_csv, "html": render_html,
             "json": render_json}


def render(tables: list[Table], fmt: str = "github", metric: str = "both") -> str:
    """Render tables in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in RENDERERS:
        raise LeaderboardError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    return RENDERERS[fmt](tables, metric)


# ----------------------------------------------------------------------------------------------
# plot


def plot_tables(tables: list[Table], path: str | Path) -> Path:
    """Grouped bar chart: one row of panels per table, mAP (left) and R1 (right).

    Every published and reproduced row is one bar series (reproduced bars hatched); columns are the
    table's protocol keys.
    Drawn with the Agg canvas directly (no pyplot, no global backend change).

    Raises:
        LeaderboardError: no tables to plot.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tables:
        raise LeaderboardError("nothing to plot: no results matched the filters")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max(8.0, 1.2 * max(len(t.columns) for t in tables) * 2)
    fig = Figure(figsize=(width, 3.6 * len(tables)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tables), 2, squeeze=False)
    for ti, t in enumerate(tables):
        rows = [r for r in t.rows if r.origin != "diff"]
        bar_w = 0.8 / max(1, len(rows))
        cmap = colormaps["tab20" if len(rows) > 10 else "tab10"]
        for mi, m in enumerate(PAIR):
            ax = axes[ti][mi]
            for ri, row in enumerate(rows):
                xs, ys = [], []
                for ci, key in enumerate(t.columns):
                    v = row.cells[key].values.get(m) if key in row.cells else None
                    if v is not None:
                        xs.append(ci - 0.4 + bar_w * (ri + 0.5))
                        ys.append(v)
                ax.bar(xs, ys, width=bar_w, label=row.label, color=cmap(ri % cmap.N),
                       hatch="//" if row.origin == "ours" else None, edgecolor="black", linewidth=0.3)
            ax.set_xticks(range(len(t.columns)))
            ax.set_xticklabels([_column_label(k) for k in t.columns], rotation=45, ha="right", fontsize=7)
            ax.set_ylabel(f"{METRIC_LABEL[m]} (%)")
            short = "generated benchmark" if t.benchmark == "synthetic" else "real"
            kind = "single-source" if t.kind == "single_source" else "multi-source"
            ax.set_title(f"{kind}, {short}: {METRIC_LABEL[m]}", fontsize=9)
        axes[ti][1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, format="png", dpi=80)
    logger.info("wrote leaderboard plot %s", path)
    return path
