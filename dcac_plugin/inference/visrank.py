"""Ranked lists as pictures, torchreid ``visrank`` style, drawn with PIL.

Each picture is one query (black border) followed by its top-k gallery images, nearest first,
with a green border for a match (same identity) and a red border otherwise. Gallery images of
the query's identity taken by the query's camera are left out, as the evaluation protocol does
(Market-1501 protocol). A caption under each image gives the rank and the distance. An
``index.html`` beside the pictures lists the queries with their AP and opens offline (relative
``img`` paths, inline style, no script).
"""

from __future__ import annotations

import html
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from dcac_plugin.data.reader import read_image
from dcac_plugin.evaluation.hooks import TargetEvaluation
from dcac_plugin.evaluation.ranking import _chunk_stats, _GalleryIndex
from dcac_plugin.inference.search import distance_blocks
from dcac_plugin.utils.files import write_error
from dcac_plugin.utils.io import atomic_open, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["RankedLists", "VisrankHook", "draw_ranked_list", "ranked_lists", "select_queries", "write_visrank"]

GREEN = (0, 200, 0)
RED = (220, 0, 0)
BLACK = (0, 0, 0)
BORDER = 5  # px, as torchreid's visrank
GRID_SPACING = 10
QUERY_EXTRA_SPACING = 90
CAPTION = 16


@dataclass
class RankedLists:
    """Top-k ranked gallery lists of every query, after the same-identity same-camera filter.

    Attributes:
        index: ``[Q, k]`` gallery indices, nearest first (``-1`` pads a list shorter than ``k``).
        distance: ``[Q, k]`` distances (NaN where padded).
        match: ``[Q, k]`` gallery identity equals the query's.
        ap: ``[Q]`` average precision of each query in percent as the evaluator computes it (NaN
            for a query without a cross-camera match, which the evaluation skips).
        first_match: ``[Q]`` 1-based rank of the first match (0 when the query has none).
    """

    index: np.ndarray
    distance: np.ndarray
    match: np.ndarray
    ap: np.ndarray
    first_match: np.ndarray


def ranked_lists(qf: torch.Tensor, gf: torch.Tensor, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                 topk: int, **dist_kwargs: Any) -> RankedLists:
    """Per-query top-k lists and AP, from features.

    Args:
        qf, gf: ``[Q, D]`` / ``[G, D]`` features.
        q_pids, g_pids, q_camids, g_camids: integer ids ``[Q]`` / ``[G]``.
        topk: list length.
        **dist_kwargs: :func:`dcac_plugin.inference.search.distance_blocks` options (metric,
            normalize, rerank, k1, k2, lambda_value, chunk_size): pass the run's evaluation settings.
    """
    qp = torch.as_tensor(np.asarray(q_pids), dtype=torch.long)
    gp = torch.as_tensor(np.asarray(g_pids), dtype=torch.long)
    qc = torch.as_tensor(np.asarray(q_camids), dtype=torch.long)
    gc = torch.as_tensor(np.asarray(g_camids), dtype=torch.long)
    num_q, num_g = qp.numel(), gp.numel()
    if qf.shape[0] != num_q or gf.shape[0] != num_g:
        raise ValueError(f"{qf.shape[0]} query features for {num_q} ids or {gf.shape[0]} gallery features for "
                         f"{num_g} ids")
    gindex = _GalleryIndex(gp, gc)
    index = np.full((num_q, topk), -1, dtype=np.int64)
    distance = np.full((num_q, topk), np.nan, dtype=np.float32)
    match = np.zeros((num_q, topk), dtype=bool)
    ap = np.full(num_q, np.nan, dtype=np.float64)
    first = np.zeros(num_q, dtype=np.int64)
    for a, b, d in distance_blocks(qf, gf, **dist_kwargs):
        d = d.contiguous()
        res = _chunk_stats(d, qp[a:b], qc[a:b], gindex)
        valid = res.valid.numpy()
        ap[a:b] = np.where(valid, res.ap.numpy() * 100.0, np.nan)
        first[a:b] = np.where(valid, res.first.numpy() + 1, 0)
        order = torch.sort(d, dim=1, stable=True).indices
        junk = (gp[order] == qp[a:b, None]) & (gc[order] == qc[a:b, None])
        for r in range(b - a):
            kept = order[r][~junk[r]][:topk]
            n = kept.numel()
            index[a + r, :n] = kept.numpy()
            distance[a + r, :n] = d[r, kept].numpy()
            match[a + r, :n] = (gp[kept] == qp[a + r]).numpy()
    return RankedLists(index, distance, match, ap, first)


def select_queries(ranked: RankedLists, num: int, order: str = "worst", seed: int = 0) -> list[int]:
    """Pick ``num`` queries: ``worst`` (lowest AP first), ``best`` (highest first), ``random``
    (seeded) or ``dataset`` (dataset order). Queries the evaluation skips (no cross-camera match)
    come last in ``worst``/``best`` and are left out by ``random``."""
    q = len(ranked.ap)
    valid = [i for i in range(q) if not np.isnan(ranked.ap[i])]
    if order == "dataset":
        chosen = list(range(q))
    elif order == "random":
        chosen = random.Random(seed).sample(valid, min(num, len(valid)))
    elif order in ("worst", "best"):
        sign = 1.0 if order == "worst" else -1.0
        chosen = sorted(valid, key=lambda i: (sign * ranked.ap[i], i))
        chosen += [i for i in range(q) if np.isnan(ranked.ap[i])]
    else:
        raise ValueError(f"order must be worst, best, random or dataset; got {order!r}")
    return chosen[:num]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _cell(path: str, size: tuple[int, int], colour: tuple[int, int, int], caption: str) -> Image.Image:
    h, w = size
    img = read_image(path).resize((w, h), Image.BILINEAR)
    cell = Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER + CAPTION), (255, 255, 255))
    ImageDraw.Draw(cell).rectangle([0, 0, w + 2 * BORDER - 1, h + 2 * BORDER - 1], fill=colour)
    cell.paste(img, (BORDER, BORDER))
    draw = ImageDraw.Draw(cell)
    draw.text((2, h + 2 * BORDER + 2), caption, fill=BLACK, font=_font())
    return cell


def draw_ranked_list(query_path: str, gallery_paths: Sequence[str], matches: Sequence[bool],
                     distances: Sequence[float], size: tuple[int, int] = (256, 128)) -> Image.Image:
    """One row: the query then its ranked gallery images (green = match, red = not).

    Args:
        query_path: query image file.
        gallery_paths: ranked gallery image files (nearest first).
        matches: same identity as the query, per gallery image.
        distances: distance of each gallery image (shown in the caption).
        size: ``(height, width)`` each image is drawn at.

    Returns:
        An RGB PIL image.
    """
    cells = [_cell(query_path, size, BLACK, "query")]
    for r, (p, m, dist) in enumerate(zip(gallery_paths, matches, distances, strict=True), 1):
        cells.append(_cell(p, size, GREEN if m else RED, f"{r}  d={dist:.3f}"))
    cw, ch = cells[0].size
    n = len(cells) - 1
    width = cw * (n + 1) + GRID_SPACING * max(n - 1, 0) + (QUERY_EXTRA_SPACING if n else 0)
    grid = Image.new("RGB", (width, ch), (255, 255, 255))
    grid.paste(cells[0], (0, 0))
    x = cw + QUERY_EXTRA_SPACING
    for c in cells[1:]:
        grid.paste(c, (x, 0))
        x += cw + GRID_SPACING
    return grid


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def write_visrank(out_dir: str | os.PathLike, ranked: RankedLists, query: Sequence[tuple], gallery: Sequence[tuple],
                  queries: Sequence[int], *, title: str = "", summary: dict[str, Any] | None = None,
                  size: tuple[int, int] = (256, 128)) -> Path:
    """Write one PNG per selected query and an ``index.html`` listing them.

    Args:
        out_dir: output folder (created).
        ranked: from :func:`ranked_lists`.
        query, gallery: dataset items ``(path, pid, camid, ...)``.
        queries: query indices to draw, in the order the page lists them.
        title: page title.
        summary: extra ``key: value`` lines for the page header (metrics, settings).
        size: ``(height, width)`` each image is drawn at.

    Returns:
        The ``index.html`` path.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_error(out / "index.html", exc, "create the folder of") or exc) from None
    rows = []
    for n, qi in enumerate(queries, 1):
        qpath, qpid, qcam = query[qi][0], query[qi][1], query[qi][2]
        k = int((ranked.index[qi] >= 0).sum())
        gi = ranked.index[qi, :k]
        img = draw_ranked_list(qpath, [gallery[g][0] for g in gi], ranked.match[qi, :k].tolist(),
                               ranked.distance[qi, :k].tolist(), size)
        name = f"{n:04d}_q{qi:05d}_{Path(qpath).stem}.png"
        _save_png(img, out / name)
        ap = ranked.ap[qi]
        fm = int(ranked.first_match[qi])
        rows.append(
            f"<tr><td>{n}</td><td>{html.escape(Path(qpath).name)}<br>pid {qpid}, camid {qcam}</td>"
            f"<td>{'n/a' if np.isnan(ap) else f'{ap:.1f}'}</td><td class={'ok' if fm == 1 else 'no'}>"
            f"{fm if fm else 'none'}</td><td><img src=\"{html.escape(name)}\" alt=\"{html.escape(name)}\" "
            f"loading=\"lazy\"></td></tr>")
    head = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in (summary or {}).items())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:16px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:middle;text-align:left}}
td.ok{{color:#080}} td.no{{color:#c00}} img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<ul>{head}</ul>
<p>Each row: the query (black border), then its nearest gallery images; green border = same identity,
red = different identity. Gallery images of the query's identity from the query's camera are left out, as
the evaluation protocol does. AP in percent as the evaluator computes it.</p>
<table><tr><th>#</th><th>query</th><th>AP</th><th>first match at rank</th><th>ranked list</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    index = out / "index.html"
    atomic_write_text(page, index)
    logger.info("ranked lists of %d queries written to %s", len(rows), out)
    return index


@dataclass(frozen=True)
class VisrankHook:
    """Evaluation hook (:class:`dcac_plugin.evaluation.hooks.EvalHook`): every query's ranked list
    (``topk`` gallery images) as a picture, and an ``index.html``, under
    ``<save_dir>/visrank/<target>/``, with the distances the evaluator ranked (``test.visrank``).

    ``engine.setup(..., eval_hooks=[VisrankHook(10)])``.
    """

    topk: int

    def __call__(self, evaluation: TargetEvaluation) -> Path:
        """Draw the target's ranked lists; returns the ``index.html`` path."""
        ev = evaluation
        dist_kw = ev.distance_kwargs()
        ranked = ranked_lists(ev.qf, ev.gf, ev.q_pids, ev.g_pids, ev.q_camids, ev.g_camids, self.topk, **dist_kw)
        summary = {"target": ev.target, "epoch": ev.epoch, **{k: f"{v:.1f}" for k, v in ev.metrics.items()},
                   **dist_kw}
        return write_visrank(ev.save_dir / "visrank" / ev.target, ranked, ev.query, ev.gallery,
                             range(len(ev.query)), title=f"ranked lists: {ev.target}", summary=summary)
