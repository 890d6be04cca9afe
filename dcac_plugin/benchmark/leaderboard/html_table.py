"""The html page's leaderboard tables: header, rows and cells, each cell with a tooltip (its
source, or its runs and their provenance) and, for reproduced cells, a link to its provenance lines.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from dcac_plugin.benchmark.leaderboard.html_provenance import checkpoint_info
from dcac_plugin.benchmark.leaderboard.markup import (
    UNKNOWN,
    FlagLetters,
    Style,
    cell_text,
    column_label,
    flag_text,
    fmt_duration,
    fmt_value,
    has_ours,
    label_text,
    runs_text,
)
from dcac_plugin.benchmark.leaderboard.model import METRIC_LABEL, Cell, Row, RunValue, Table

HTML = Style(best="<b>{}</b>", second="<i>{}</i>", pm="±", computed="<sup>†</sup>", sup="<sup>{}</sup>",
             esc=html.escape)


@dataclass(frozen=True)
class PageContext:
    """What every table of one page shares: the metrics shown, source numbers and flag letters."""

    metrics: tuple[str, ...]
    refs: dict[str, int]
    letters: FlagLetters


def _run_summary(run: RunValue, metrics: tuple[str, ...]) -> str:
    vals = ", ".join(f"{METRIC_LABEL[m]} {fmt_value(run.metrics.get(m), False)}" for m in metrics)
    seed = f"seed {run.seed}" if run.seed is not None else "seed unknown"
    return f"{run.run_name} ({seed}): {vals}"


def _run_tooltip(run: RunValue, metrics: tuple[str, ...]) -> str:
    line = "- " + _run_summary(run, metrics)
    prov = run.provenance
    if prov is not None:
        ckpt, sha = checkpoint_info(prov)
        line += (f"\n  folder {prov.run_dir or UNKNOWN}; commit {prov.git_commit or UNKNOWN}; "
                 f"config hash {prov.config_hash or UNKNOWN}; checkpoint {ckpt}, sha256 {sha}; "
                 f"{fmt_duration(prov.wall_time_s)} on {prov.device or UNKNOWN}")
    return line


def _cell_title(row: Row, key: str, cell: Cell, metrics: tuple[str, ...], refs: dict[str, int]) -> str:
    """A cell's tooltip: its source (published), what it is (difference) or its runs (reproduced)."""
    head = f"{row.label}, {column_label(key)}"
    if row.origin == "published":
        text = f"{head}: source [{refs[row.source]}] {row.source}" if row.source in refs else head
        if cell.computed:
            text += "\nAverage computed here from the four columns (the source printed none)."
        return text
    if row.origin == "diff":
        return f"{head}: reproduced mean minus the published value"
    stats = ", ".join(
        f"{METRIC_LABEL[m]} {fmt_value(cell.values.get(m), False)}"
        + (f"±{fmt_value(cell.std[m], False)}" if m in cell.std else "") for m in metrics)
    lines = [f"{head}: {stats} over n={cell.n} run(s)" if cell.n else f"{head}: {stats}"]
    if cell.computed:
        lines.append("Average computed here from the four columns"
                     + (" (per-seed averages below)." if cell.runs else "."))
    lines += [_run_tooltip(run, metrics) for run in cell.runs]
    if any(r.provenance is not None for r in cell.runs):
        lines.append("Click for the full provenance.")
    return "\n".join(lines)


def _html_cell(ti: int, ri: int, ci: int, row: Row, key: str, ctx: PageContext) -> str:
    cell = row.cells.get(key)
    if cell is None:
        return "<td></td>"
    v = cell.values.get(ctx.metrics[0])
    data_v = f' data-v="{v:.4f}"' if v is not None else ""
    text = cell_text(row, key, ctx.metrics, HTML)
    if row.origin == "ours" and any(r.provenance is not None for r in cell.runs):
        text = f'<a href="#p{ti}-{ri}-{ci}">{text}</a>'
    title = html.escape(_cell_title(row, key, cell, ctx.metrics, ctx.refs))
    return f'<td class="cell"{data_v} title="{title}">{text}</td>'


def _html_row(table: Table, ti: int, ri: int, row: Row, ctx: PageContext) -> str:
    label = label_text(row, ctx.letters, HTML)
    if row.flags:
        label = label.replace("<sup>", '<sup title="' + html.escape("; ".join(flag_text(*f) for f in row.flags))
                              + '">', 1)
    if row.origin == "ours":
        src = "this repo"
    else:
        src = " ".join(f'<a href="#src-{ctx.refs[s]}" title="{html.escape(s)}">[{ctx.refs[s]}]</a>'
                       for s in row.sources() if s in ctx.refs)
    tds = [f'<td class="name">{label}</td>', f'<td class="src">{src}</td>']
    if has_ours(table):
        runs = row.runs()
        tds.append(f'<td data-v="{runs[1]}">{runs_text(row)}</td>' if runs else "<td></td>")
    tds += [_html_cell(ti, ri, ci, row, key, ctx) for ci, key in enumerate(table.columns)]
    return f'<tr class="{row.origin}">' + "".join(tds) + "</tr>"


def _header(table: Table) -> str:
    heads = ['<th class="name">Method<span class="arrow"></span></th>',
             '<th class="src">Source<span class="arrow"></span></th>']
    if has_ours(table):
        heads.append("<th>Runs<span class=\"arrow\"></span></th>")
    heads += [f'<th>{html.escape(column_label(k))}<span class="arrow"></span></th>' for k in table.columns]
    return "<thead><tr>" + "".join(heads) + "</tr></thead>"


def table_lines(table: Table, ti: int, ctx: PageContext) -> list[str]:
    """The lines of table ``ti``'s sortable ``<table class="lb">``: published and reproduced rows
    in one body, the difference rows in a second one."""
    main = [_html_row(table, ti, ri, r, ctx) for ri, r in enumerate(table.rows) if r.origin != "diff"]
    diff = [_html_row(table, ti, ri, r, ctx) for ri, r in enumerate(table.rows) if r.origin == "diff"]
    out = [f'<div class="scroll"><table class="lb" id="lb-{ti}">', _header(table),
           "<tbody>\n" + "\n".join(main) + "\n</tbody>"]
    if diff:
        out.append('<tbody class="diff">\n' + "\n".join(diff) + "\n</tbody>")
    out.append("</table></div>")
    return out
