"""What every renderer shares: the option check, source and flag numbering, value formatting,
cell and row text in a format's markup (:class:`Style`), and the notes under a table.

Marks in each format: github ``**best**`` / ``_second_``; latex ``\\textbf`` / ``\\underline``;
html ``<b>`` / ``<i>``; csv ``mAP_mark`` / ``rank1_mark`` columns; json ``mark`` per cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dcac_plugin.benchmark.leaderboard.model import (
    AVERAGE,
    METRIC_CHOICES,
    METRIC_LABEL,
    PAIR,
    Cell,
    LeaderboardError,
    Row,
    Table,
)
from dcac_plugin.benchmark.leaderboard.ranking import round1

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
UNKNOWN = "unknown"
#: What a published row's ``tag`` stands for, in the "ours - <tag>" note.
TAG_TEXT: dict[str, str] = {
    "paper": "the method's published row",
    "torchreid": "torchreid's model-zoo row of the same model",
}

#: A flag, ``(name, value)``, and the letter it is shown with.
FlagLetters = dict[tuple[str, str], str]


def metrics_for(metric: str) -> tuple[str, ...]:
    """The metrics a cell shows for the ``metric`` option (``both``, ``mAP`` or ``rank1``).

    Raises:
        LeaderboardError: an unknown ``metric``.
    """
    if metric not in METRIC_CHOICES:
        raise LeaderboardError(f"unknown metric {metric!r}; choose one of {list(METRIC_CHOICES)}")
    return PAIR if metric == "both" else (metric,)


def source_refs(tables: list[Table]) -> dict[str, int]:
    """Footnote number of every published source, in order of first appearance."""
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


def flag_letters(tables: list[Table]) -> FlagLetters:
    """One letter per distinct flag, in order of first appearance (``a``, ``b``, ...)."""
    letters: FlagLetters = {}
    for t in tables:
        for r in t.rows:
            for f in r.flags:
                if f not in letters:
                    i = len(letters)
                    letters[f] = chr(ord("a") + i) if i < 26 else f"f{i + 1}"
    return letters


def fmt_value(v: float | None, signed: bool) -> str:
    """A value rounded half-up to one decimal (``-`` when unknown; signed for differences)."""
    if v is None:
        return "-"
    r = round1(v)
    if signed:
        return "0.0" if r == 0 else f"{r:+.1f}"
    return f"{r:.1f}"


def fmt_duration(seconds: float | None) -> str:
    """A wall time for people: ``12.3 s``, ``4 min 05 s``, ``2 h 07 min``."""
    if seconds is None:
        return UNKNOWN
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


@dataclass(frozen=True)
class Style:
    """Markup of one output format."""

    best: str  # format string for a best value
    second: str
    pm: str  # the plus-minus sign
    computed: str  # marker of a computed average
    sup: str  # format string for flag letters
    esc: Callable[[str], str] = lambda s: s
    best_word: str = "bold"
    second_word: str = "italic"


def _metric_text(cell: Cell, m: str, signed: bool, style: Style) -> str:
    txt = fmt_value(cell.values.get(m), signed)
    if m in cell.std and cell.values.get(m) is not None:
        txt += style.pm + fmt_value(cell.std[m], signed=False)
    mark = cell.marks.get(m)
    return style.best.format(txt) if mark == "best" else style.second.format(txt) if mark == "second" else txt


def cell_text(row: Row, key: str, metrics: tuple[str, ...], style: Style) -> str:
    """The text of ``row``'s cell in column ``key`` (empty when it has none), marks included."""
    cell = row.cells.get(key)
    if cell is None:
        return ""
    text = "/".join(_metric_text(cell, m, row.origin == "diff", style) for m in metrics)
    return text + (style.computed if cell.computed else "")


def runs_text(row: Row) -> str:
    """The ``Runs`` column: ``3``, or ``1-3`` when the row's columns differ; empty for other rows."""
    runs = row.runs()
    if runs is None:
        return ""
    return str(runs[0]) if runs[0] == runs[1] else f"{runs[0]}-{runs[1]}"


def source_text(row: Row, refs: dict[str, int]) -> str:
    """The ``Source`` column: ``this repo`` for reproduced rows, else the footnotes ``[n]``."""
    if row.origin == "ours":
        return "this repo"
    return " ".join(f"[{refs[s]}]" for s in row.sources() if s in refs)


def label_text(row: Row, letters: FlagLetters, style: Style) -> str:
    """The row's label with its flag letters."""
    text = style.esc(row.label)
    if row.flags:
        text += style.sup.format(",".join(letters[f] for f in row.flags))
    return text


def column_label(key: str) -> str:
    """A column key as shown (``average`` -> ``Average``)."""
    return "Average" if key == AVERAGE else key


def has_ours(table: Table) -> bool:
    """Whether the table has a reproduced row (then it gets a ``Runs`` column)."""
    return any(r.origin == "ours" for r in table.rows)


def text_grid(table: Table, metrics: tuple[str, ...], style: Style, refs: dict[str, int],
              letters: FlagLetters) -> tuple[list[str], list[list[str]]]:
    """(header, body lines) of a table as text cells in ``style``'s markup."""
    esc = style.esc
    header = ["Method", "Source"] + (["Runs"] if has_ours(table) else [])
    header += [esc(column_label(k)) for k in table.columns]
    body = []
    for row in table.rows:
        line = [label_text(row, letters, style), esc(source_text(row, refs))]
        if has_ours(table):
            line.append(runs_text(row))
        line += [cell_text(row, k, metrics, style) for k in table.columns]
        body.append(line)
    return header, body


def notes(table: Table, metrics: tuple[str, ...], style: Style, letters: FlagLetters) -> str:
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
