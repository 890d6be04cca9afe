"""The html format: one self-contained page (inline CSS and JS, the plot embedded, no network).

The page is assembled from parts: the head (with ``resources/leaderboard/leaderboard.css`` inlined),
the legend, one section per table (title, sortable table, notes, provenance), the plot, the sources
and the script (``resources/leaderboard/leaderboard.js`` inlined).
"""

from __future__ import annotations

import base64
import functools
import html
import logging
from importlib import resources
from pathlib import Path

from dcac_plugin.benchmark.leaderboard.html_provenance import provenance_block
from dcac_plugin.benchmark.leaderboard.html_table import HTML, PageContext, table_lines
from dcac_plugin.benchmark.leaderboard.markup import flag_letters, metrics_for, notes, source_refs
from dcac_plugin.benchmark.leaderboard.model import METRIC_LABEL, Table
from dcac_plugin.benchmark.leaderboard.plots import plot_png

logger = logging.getLogger(__name__)

#: Package resource folder (inside ``dcac_plugin``) of the page's stylesheet and script.
ASSETS = ("resources", "leaderboard")
CSS_FILE = "leaderboard.css"
JS_FILE = "leaderboard.js"


@functools.cache
def asset(name: str) -> str:
    """The text of one of the page's resource files (``leaderboard.css`` or ``leaderboard.js``)."""
    folder = resources.files("dcac_plugin")
    for part in ASSETS:
        folder = folder.joinpath(part)
    return folder.joinpath(name).read_text(encoding="utf-8")


def _head(metrics: tuple[str, ...]) -> list[str]:
    """From the doctype to the legend paragraph (the stylesheet inlined)."""
    cells = "/".join(METRIC_LABEL[m] for m in metrics)
    return ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>DG person re-ID leaderboard</title>", f"<style>\n{asset(CSS_FILE)}</style>", "</head>",
            "<body>", "<h1>Domain-generalisable person re-ID leaderboard</h1>",
            f'<p class="legend"><b>Legend.</b> Cells: {cells} in %. <b>bold</b> = best, <i>italic</i> = second best '
            "per column and metric, over all published and reproduced rows (never the 'ours - X' difference rows). "
            "Reproduced cells (blue): mean±std over runs (sample std, ddof=1); hover a cell for its source or "
            "provenance, click a reproduced value for its files. <sup>†</sup> = Average computed here from the "
            "four columns. <sup>a</sup>, <sup>b</sup>, ... = protocol flags, explained under each table. Click a "
            "column header to sort (numbers by the first metric).</p>"]


def _table_section(table: Table, ti: int, ctx: PageContext, base: Path | None) -> list[str]:
    """Table ``ti``: its title, the sortable table, the notes and the provenance block."""
    out = [f'<h2 id="table-{ti}">{html.escape(table.title)}</h2>', *table_lines(table, ti, ctx),
           f'<p class="notes">{notes(table, ctx.metrics, HTML, ctx.letters)}</p>']
    prov = provenance_block(table, ti, ctx.metrics, base)
    if prov:
        out.append(prov)
    return out


def _plot_section(tables: list[Table]) -> list[str]:
    """The bar plot as an embedded PNG, or a note that matplotlib is missing."""
    try:
        png = plot_png(tables)
    except ImportError:
        logger.warning("matplotlib is not installed: the html page has no plot")
        return ["<h2>Plot</h2>", '<p class="notes">Plot omitted: matplotlib is not installed.</p>']
    data = base64.b64encode(png).decode("ascii")
    return ["<h2>Plot</h2>",
            f'<img class="plot" alt="Grouped bar chart of every row of the tables above (mAP left, R1 right)" '
            f'src="data:image/png;base64,{data}">']


def _sources_section(tables: list[Table], refs: dict[str, int]) -> list[str]:
    """The numbered list of published sources, each with the rows it gives (empty without any)."""
    if not refs:
        return []
    out = ["<h2>Sources of the published cells</h2>", '<ol class="sources">']
    for s, n in refs.items():
        rows = list(dict.fromkeys(r.label for t in tables for r in t.rows
                                  if r.origin == "published" and s in r.sources()))
        out.append(f'<li id="src-{n}" value="{n}">{html.escape(s)} <span class="unknown">(rows: '
                   f"{html.escape(', '.join(rows))})</span></li>")
    out.append("</ol>")
    return out


def _tail() -> list[str]:
    """The script (inlined) and the closing tags."""
    return [f"<script>\n{asset(JS_FILE)}</script>", "</body>", "</html>"]


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
        tables: from :func:`~dcac_plugin.benchmark.leaderboard.build_tables`.
        metric: ``both``, ``mAP`` or ``rank1``.
        output: where the page will be written; links are made relative to its folder. ``None``
            (stdout): paths as recorded.
        embed_plot: embed the bar plot.
    """
    ctx = PageContext(metrics_for(metric), source_refs(tables), flag_letters(tables))
    base = Path(output).parent if output is not None else None
    out = _head(ctx.metrics)
    for ti, table in enumerate(tables):
        out += _table_section(table, ti, ctx, base)
    if embed_plot and tables:
        out += _plot_section(tables)
    out += _sources_section(tables, ctx.refs)
    out += _tail()
    return "\n".join(out) + "\n"
