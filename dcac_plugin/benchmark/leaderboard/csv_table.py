"""Tidy CSV: one line per (row, column) cell, both metrics, their std, marks, runs and seeds."""

from __future__ import annotations

import csv
import io

from dcac_plugin.benchmark.leaderboard.markup import column_label, flag_letters, flag_text, metrics_for
from dcac_plugin.benchmark.leaderboard.model import PAIR, Table

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
    metrics_for(metric)
    letters = flag_letters(tables)
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
                    t.benchmark, t.kind, row.method, row.label, row.origin, column_label(key),
                    *(_csv_number(cell.values.get(m)) for m in PAIR),
                    *(_csv_number(cell.std.get(m)) for m in PAIR),
                    cell.marks.get("mAP", ""), cell.marks.get("rank1", ""),
                    cell.n or "", ";".join(str(r.seed) for r in cell.runs if r.seed is not None),
                    "yes" if cell.computed else "", flags, cell.source or "",
                ])
    return buf.getvalue()
