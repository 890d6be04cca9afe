"""The html page's provenance block: per table, a collapsible table with one line per reproduced
run (its values, links to its folder, ``config.yaml``, ``train.log`` and checkpoint, config hash,
commit, checkpoint and init sha256, wall time, device and command).

Each group of lines (one reproduced cell) is a ``<tbody id="p<table>-<row>-<column>">`` that the
cell's value links to.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from pathlib import Path

from dcac_plugin.benchmark.leaderboard.markup import UNKNOWN, column_label, fmt_duration, fmt_value
from dcac_plugin.benchmark.leaderboard.model import METRIC_LABEL, Row, RunValue, Table
from dcac_plugin.benchmark.records import Provenance, checkpoint_digest

_COLUMNS_BEFORE_METRICS = ["Row", "Column", "Run", "Seed"]
_COLUMNS_AFTER_METRICS = ["Files", "Config hash", "Git commit", "Checkpoint sha256", "Init (weights sha256)",
                          "Wall time", "Device", "Command"]


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


def checkpoint_info(prov: Provenance) -> tuple[str, str]:
    """(checkpoint path text, sha256 text) for tooltips; 'none' when the run kept no checkpoint."""
    if prov.checkpoint is None:
        return ("none", "n/a") if prov.checkpoint_recorded else (UNKNOWN, UNKNOWN)
    digest, origin = checkpoint_digest(prov)
    return prov.checkpoint, (f"{digest} ({'recorded' if origin == 'recorded' else 'computed here'})"
                             if digest else UNKNOWN)


def _run_files(prov: Provenance, base: Path | None) -> str:
    """Links to the run's folder, config, log and checkpoint (or why there is none)."""
    return " · ".join([
        _link("run folder", prov.run_dir, base, is_dir=True),
        _link("config.yaml", prov.config_yaml, base),
        _link("train.log", prov.train_log, base),
        ("checkpoint: none" if prov.checkpoint is None and prov.checkpoint_recorded
         else _link("checkpoint", prov.checkpoint, base)),
    ])


def _checkpoint_sha(prov: Provenance) -> str:
    digest, origin = checkpoint_digest(prov)
    return (f'<code>{digest}</code> ({"recorded" if origin == "recorded" else "computed here"})'
            if digest else _known(None))


def _run_line(row: Row, key: str, run: RunValue, prov: Provenance, metrics: tuple[str, ...],
              base: Path | None) -> str:
    """One run's line of the provenance table (``prov``: the run's provenance)."""
    vals = "".join(f"<td>{fmt_value(run.metrics.get(m), False)}</td>" for m in metrics)
    init = _known(prov.init) + (f"<br><code>{prov.init_sha256}</code>" if prov.init_sha256 else "")
    command = f"<code>{html.escape(prov.command)}</code>" if prov.command else _known(None)
    return (f"<tr><td>{html.escape(row.label)}</td><td>{html.escape(column_label(key))}</td>"
            f"<td>{html.escape(run.run_name)}</td><td>{_known(run.seed)}</td>{vals}<td>{_run_files(prov, base)}</td>"
            f"<td>{_known(prov.config_hash)}</td><td>{_known(prov.git_commit)}</td>"
            f'<td class="hash">{_checkpoint_sha(prov)}</td><td class="hash">{init}</td>'
            f"<td>{html.escape(fmt_duration(prov.wall_time_s))}</td>"
            f"<td>{_known(prov.device)}</td>"
            f'<td class="cmd">{command}</td></tr>')


def _cells_with_provenance(table: Table) -> list[tuple[int, int, Row, str, list[tuple[RunValue, Provenance]]]]:
    """(row index, column index, row, column key, [(run, its provenance)]) of every reproduced cell with some."""
    out = []
    for ri, row in enumerate(table.rows):
        if row.origin != "ours":
            continue
        for ci, key in enumerate(table.columns):
            cell = row.cells.get(key)
            runs = [(r, r.provenance) for r in cell.runs if r.provenance is not None] if cell else []
            if runs:
                out.append((ri, ci, row, key, runs))
    return out


def provenance_block(table: Table, ti: int, metrics: tuple[str, ...], base: Path | None) -> str:
    """The collapsible provenance table of table ``ti`` (empty when no reproduced run has provenance)."""
    cells = _cells_with_provenance(table)
    if not cells:
        return ""
    groups = [f'<tbody id="p{ti}-{ri}-{ci}">'
              + "".join(_run_line(row, key, run, prov, metrics, base) for run, prov in runs)
              + "</tbody>" for ri, ci, row, key, runs in cells]
    n_runs = len({str(prov.run_dir) for *_, runs in cells for _, prov in runs})  # a run fills one cell per target
    head = "".join(f"<th>{h}</th>" for h in [*_COLUMNS_BEFORE_METRICS, *(METRIC_LABEL[m] for m in metrics),
                                             *_COLUMNS_AFTER_METRICS])
    return (f'<details class="prov" id="prov-{ti}"><summary>Provenance of the reproduced cells ({len(cells)} '
            f"cell(s) from {n_runs} run(s)): files, config, command, commit, checkpoint</summary>\n"
            f'<div class="scroll"><table class="prov"><thead><tr>{head}</tr></thead>\n'
            + "\n".join(groups) + "\n</table></div></details>")
