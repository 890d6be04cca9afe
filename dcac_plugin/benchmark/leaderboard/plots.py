"""The grouped bar chart of the tables (PNG), drawn with matplotlib's Agg canvas.

matplotlib is imported inside :func:`_figure` only: it is a heavy optional dependency (slow to
import, and the tables and every text format work without it; the html page then says the plot
was omitted).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from dcac_plugin.benchmark.leaderboard.markup import column_label
from dcac_plugin.benchmark.leaderboard.model import METRIC_LABEL, PAIR, LeaderboardError, Table

logger = logging.getLogger(__name__)


def _panel(ax, table: Table, m: str, cmap) -> None:
    """One panel: every non-difference row of ``table`` as a bar series of metric ``m``."""
    rows = [r for r in table.rows if r.origin != "diff"]
    bar_w = 0.8 / max(1, len(rows))
    for ri, row in enumerate(rows):
        xs, ys, errs = [], [], []
        for ci, key in enumerate(table.columns):
            cell = row.cells.get(key)
            v = cell.values.get(m) if cell is not None else None
            if v is not None:
                xs.append(ci - 0.4 + bar_w * (ri + 0.5))
                ys.append(v)
                errs.append(cell.std.get(m, 0.0))
        ax.bar(xs, ys, width=bar_w, label=row.label, color=cmap(ri % cmap.N),
               yerr=errs if any(errs) else None, error_kw={"linewidth": 0.6},
               hatch="//" if row.origin == "ours" else None, edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(table.columns)))
    ax.set_xticklabels([column_label(k) for k in table.columns], fontsize=8)
    ax.set_ylabel(f"{METRIC_LABEL[m]} (%)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    # the table's own title, so two tables of one kind (e.g. a different training protocol) read apart
    ax.set_title(f"{table.title}: {METRIC_LABEL[m]}", fontsize=9, wrap=True)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    ax.set_axisbelow(True)


def _figure(tables: list[Table]):
    """The grouped bar chart as a matplotlib ``Figure`` (Agg canvas attached)."""
    # matplotlib: a heavy optional dependency, imported only when a plot is drawn
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
        n_rows = sum(r.origin != "diff" for r in t.rows)
        cmap = colormaps["tab20" if n_rows > 10 else "tab10"]
        for mi, m in enumerate(PAIR):
            _panel(axes[2 * ti + mi][0], t, m, cmap)
        axes[2 * ti][0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                               ncol=2 if n_rows > 14 else 1)
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
    # local: the leaderboard stays torch-free until it writes (utils.io imports torch)
    from dcac_plugin.utils.io import atomic_open

    png = plot_png(tables)
    path = Path(path)
    with atomic_open(path, "wb") as f:  # a failed write: WriteError, the old plot kept
        f.write(png)
    logger.info("wrote leaderboard plot %s", path)
    return path
