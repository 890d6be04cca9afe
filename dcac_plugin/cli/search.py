"""``python tools/search.py (--run-dir RUN | --config-file X --weights W) --query Q --gallery G --topk K``.

For every query image, the ``K`` nearest gallery images under the run's evaluation distance
(:func:`dcac_plugin.evaluation.compute_distance_chunk` with ``test.dist_metric`` on the
evaluation's features), or with ``--rerank`` the k-reciprocal re-ranked distance
(``test.rerank_k1/k2/lambda`` of the run). ``--query`` / ``--gallery`` are image folders, list
files, or feature files written by ``tools/extract.py`` with the same model. Printed as a table,
or written as JSON with ``--json``. No identity or camera filter is applied: the images carry no
labels.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from dcac_plugin.cli.extract import add_model_args, extractor_from_args, run_cli
from dcac_plugin.inference import list_images, load_features
from dcac_plugin.inference.search import search_topk
from dcac_plugin.protocols import RerankParams
from dcac_plugin.utils.io import atomic_write_json

logger = logging.getLogger("dcac_plugin")

FEATURE_FILES = (".npz", ".safetensors")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Top-k gallery matches of query images with a trained re-ID model.")
    add_model_args(p)
    p.add_argument("--query", required=True, help="query images: folder, list file, or a tools/extract.py file")
    p.add_argument("--gallery", required=True, help="gallery images: folder, list file, or a tools/extract.py file")
    p.add_argument("--topk", type=int, default=10, help="matches per query (default 10)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking with the run's k1, k2, lambda")
    p.add_argument("--json", default="", help="write the matches to this JSON file instead of printing a table")
    return p.parse_args(argv)


def _features(fx, source: str) -> tuple[torch.Tensor, list[str]]:
    if Path(source).suffix in FEATURE_FILES and Path(source).is_file():
        feats, paths, meta, _ = load_features(source)
        mine = fx.metadata()
        keys = ("model", "weights", "input_size", "interpolation", "pixel_mean", "pixel_std", "l2_normalized")
        differ = [k for k in keys if meta.get(k) != mine[k]]
        if differ:
            raise ValueError(f"{source} holds features of another model or preprocessing ({', '.join(differ)}: "
                             f"{[meta.get(k) for k in differ]} vs {[mine[k] for k in differ]}); extract them again "
                             "with this model")
        return torch.from_numpy(np.ascontiguousarray(feats)), paths
    paths = list_images(source)
    feats, _, _ = fx.extract(paths, progress=True)
    return feats, paths


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Search; returns the JSON-able result (also printed or written)."""
    args = parse_args(argv)
    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    fx = extractor_from_args(args)
    qf, qpaths = _features(fx, args.query)
    gf, gpaths = _features(fx, args.gallery)
    kw: dict[str, Any] = dict(metric=fx.metric, normalize=fx.normalize, rerank=args.rerank)
    if args.rerank:
        kw.update(RerankParams.from_config(fx.cfg.test).kwargs())
    idx, dist = search_topk(qf, gf, args.topk, **kw)
    result = {
        "model": fx.model_name, "weights": str(fx.weights), "metric": fx.metric, "l2_normalized": fx.normalize,
        "rerank": {k: kw[k] for k in ("k1", "k2", "lambda_value")} if args.rerank else False,
        "num_query": len(qpaths), "num_gallery": len(gpaths),
        "queries": [{"query": q, "matches": [{"rank": r + 1, "gallery": gpaths[int(g)], "distance": float(d)}
                                             for r, (g, d) in enumerate(zip(idx[i], dist[i], strict=True))]}
                    for i, q in enumerate(qpaths)],
    }
    if args.json:
        atomic_write_json(result, args.json)
        sys.stdout.write(f"wrote top-{idx.shape[1]} matches of {len(qpaths)} queries to {args.json}\n")
    else:
        rows = [[q["query"] if m["rank"] == 1 else "", m["rank"], f"{m['distance']:.4f}", m["gallery"]]
                for q in result["queries"] for m in q["matches"]]
        what = "re-ranked distance" if args.rerank else f"{fx.metric} distance"
        sys.stdout.write(tabulate(rows, headers=["query", "rank", what, "gallery"]) + "\n")
    return result


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
