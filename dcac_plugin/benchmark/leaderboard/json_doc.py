"""JSON: everything in the tables, each reproduced run's values and provenance per cell."""

from __future__ import annotations

import dataclasses
import json

from dcac_plugin.benchmark.leaderboard.markup import (
    FlagLetters,
    column_label,
    flag_letters,
    flag_text,
    metrics_for,
    source_refs,
)
from dcac_plugin.benchmark.leaderboard.model import PAIR, Cell, Row, RunValue, Table
from dcac_plugin.benchmark.records import Provenance, checkpoint_digest

JSON_SCHEMA = "dcac_plugin.leaderboard/2"


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


def _json_cell(row: Row, c: Cell, refs: dict[str, int]) -> dict:
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
    return d


def _json_row(row: Row, refs: dict[str, int], letters: FlagLetters) -> dict:
    cells = {column_label(key): _json_cell(row, c, refs) for key, c in row.cells.items()}
    runs = row.runs()
    entry: dict = {"label": row.label, "method": row.method, "origin": row.origin,
                   "runs": list(runs) if runs else None, "cells": cells}
    if row.origin != "ours":
        entry["source"] = refs.get(row.source) if row.source else None
        entry["tag"] = row.tag
    if row.flags:
        entry["flags"] = [{"marker": letters[f], "name": f[0], "value": f[1], "text": flag_text(*f)}
                          for f in row.flags]
    return entry


def tables_to_dict(tables: list[Table]) -> dict:
    """Plain-data form of the tables (what ``--format json`` prints).

    Reproduced cells carry ``mean``, ``std`` (sample, ddof=1; ``null`` below two runs), ``n`` and
    ``runs`` (each run's values, seed and provenance); published and difference cells carry
    ``values`` (published cells also their ``source`` reference); every cell carries ``mark``.
    """
    refs = source_refs(tables)
    letters = flag_letters(tables)
    out_tables = [{"title": t.title, "benchmark": t.benchmark, "kind": t.kind, "protocol": t.protocol,
                   "generated_benchmark": t.benchmark == "synthetic",
                   "columns": [column_label(k) for k in t.columns],
                   "rows": [_json_row(row, refs, letters) for row in t.rows]} for t in tables]
    return {"schema": JSON_SCHEMA, "std": "sample standard deviation (ddof=1) over the runs of a cell",
            "tables": out_tables, "sources": [{"ref": n, "text": s} for s, n in refs.items()]}


def render_json(tables: list[Table], metric: str = "both") -> str:
    """JSON document (see :func:`tables_to_dict`); ``metric`` is ignored (both are carried)."""
    metrics_for(metric)
    return json.dumps(tables_to_dict(tables), indent=2, ensure_ascii=False) + "\n"
