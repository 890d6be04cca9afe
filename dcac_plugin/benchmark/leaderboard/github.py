"""GitHub markdown: per table a ``###`` title, a pipe table and its notes; the sources at the end."""

from __future__ import annotations

from tabulate import tabulate

from dcac_plugin.benchmark.leaderboard.markup import (
    COMPUTED_MARK,
    Style,
    flag_letters,
    metrics_for,
    notes,
    source_refs,
    text_grid,
)
from dcac_plugin.benchmark.leaderboard.model import Table

GITHUB = Style(best="**{}**", second="_{}_", pm="±", computed=COMPUTED_MARK, sup="<sup>{}</sup>")


def render_github(tables: list[Table], metric: str = "both") -> str:
    """GitHub markdown: a ``###`` title, a pipe table and notes per table; sources at the end."""
    metrics = metrics_for(metric)
    refs = source_refs(tables)
    letters = flag_letters(tables)
    out = []
    for t in tables:
        header, body = text_grid(t, metrics, GITHUB, refs, letters)
        out.append(f"### {t.title}\n")
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
        out.append("\n" + notes(t, metrics, GITHUB, letters) + "\n")
    if refs:
        out.append("Sources:\n")
        out.extend(f"- [{n}] {s}" for s, n in refs.items())
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
