"""The output formats by name, and :func:`render` that picks one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dcac_plugin.benchmark.leaderboard.csv_table import render_csv
from dcac_plugin.benchmark.leaderboard.github import render_github
from dcac_plugin.benchmark.leaderboard.html_page import render_html
from dcac_plugin.benchmark.leaderboard.json_doc import render_json
from dcac_plugin.benchmark.leaderboard.latex import render_latex
from dcac_plugin.benchmark.leaderboard.model import LeaderboardError, Table

FORMATS: tuple[str, ...] = ("github", "latex", "csv", "html", "json")
RENDERERS: dict[str, Callable[..., str]] = {"github": render_github, "latex": render_latex, "csv": render_csv,
                                            "html": render_html, "json": render_json}


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
