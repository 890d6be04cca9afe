"""``python tools/visrank.py --run-dir RUN --target NAME --topk K --num-queries Q --order worst --output DIR``.

Ranked lists of a trained run on one of the targets it evaluated, as pictures (torchreid visrank
style: the query, then its top-k gallery images with a green border for a match and a red one
otherwise; same-identity same-camera gallery images left out as the protocol does) and an
``index.html`` that opens offline. ``--order worst`` shows the lowest-AP queries first, ``best``
the highest, ``random`` a seeded sample. Distances are the run's evaluation settings
(``test.dist_metric``, ``test.normalize_feature``, ``test.rerank``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dcac_plugin.cli.extract import add_model_args, extractor_from_args, run_cli
from dcac_plugin.data.manager import test_split
from dcac_plugin.inference.visrank import ranked_lists, select_queries, write_visrank
from dcac_plugin.protocols import RerankParams
from dcac_plugin.utils.files import read_results

logger = logging.getLogger("dcac_plugin")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Ranked-list pictures (+ index.html) of a trained run on one target.")
    add_model_args(p)
    p.add_argument("--target", required=True, help="a dataset the run evaluated (a key of its results.json)")
    p.add_argument("--topk", type=int, default=10, help="gallery images per ranked list (default 10)")
    p.add_argument("--num-queries", type=int, default=20, help="queries to draw (default 20)")
    p.add_argument("--order", default="worst", choices=("worst", "best", "random", "dataset"),
                   help="worst: lowest AP first (default); best: highest first; random: seeded sample; "
                        "dataset: dataset order")
    p.add_argument("--seed", type=int, default=0, help="seed of --order random")
    p.add_argument("--output", default="", help="output folder (default RUN/visrank/<target>-<order>)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the pictures and index.html; returns ``{index, queries, mAP}``."""
    args = parse_args(argv)
    if not args.run_dir:
        raise ValueError("tools/visrank.py needs --run-dir (the targets come from its results.json)")
    if args.topk < 1 or args.num_queries < 1:
        raise ValueError("--topk and --num-queries must be >= 1")
    results_file = Path(args.run_dir) / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} not found: evaluate the run first (tools/train.py --eval-only)")
    record = read_results(args.run_dir)
    results = (record.get("results") if isinstance(record, dict) else None) or {}
    if args.target not in results:
        raise ValueError(f"target '{args.target}' was not evaluated by this run; it evaluated: "
                         f"{', '.join(sorted(results)) or 'nothing'} (evaluate it first: tools/train.py "
                         f"--config-file {args.run_dir}/config.yaml --eval-only data.save_dir {args.run_dir} "
                         f"data.targets {args.target})")
    fx = extractor_from_args(args)
    query, gallery = test_split(fx.cfg, args.target)
    cams = (lambda items: [it[2] for it in items]) if fx.uses_sie else (lambda items: None)
    logger.info("%s: %d query and %d gallery images", args.target, len(query), len(gallery))
    qf, _, _ = fx.extract([it[0] for it in query], cam_ids=cams(query), progress=True)
    gf, _, _ = fx.extract([it[0] for it in gallery], cam_ids=cams(gallery), progress=True)
    t = fx.cfg.test
    kw: dict[str, Any] = dict(metric=fx.metric, normalize=False, rerank=bool(t.rerank))
    if t.rerank:
        kw.update(RerankParams.from_config(t).kwargs())
    ranked = ranked_lists(qf, gf, [it[1] for it in query], [it[1] for it in gallery], [it[2] for it in query],
                          [it[2] for it in gallery], args.topk, **kw)
    m_ap = float(np.nanmean(ranked.ap)) if np.isfinite(ranked.ap).any() else float("nan")
    recorded = results[args.target].get("mAP")
    rec_text = f"{recorded:.2f}" if isinstance(recorded, (int, float)) else "n/a"
    logger.info("mAP over all queries: %.2f (results.json: %s)", m_ap, rec_text)
    chosen = select_queries(ranked, args.num_queries, args.order, args.seed)
    out = Path(args.output or Path(args.run_dir) / "visrank" / f"{args.target}-{args.order}")
    summary = {"run": str(args.run_dir), "model": fx.model_name, "weights": fx.weights.name, "target": args.target,
               "queries": f"{len(chosen)} of {len(query)} ({args.order} first)" if args.order in ("worst", "best")
               else f"{len(chosen)} of {len(query)} ({args.order})",
               "mAP (recomputed)": f"{m_ap:.2f}", "mAP (results.json)": rec_text,
               "distance": f"{fx.metric}{', L2-normalised features' if fx.normalize else ''}"
                           f"{', re-ranked' if t.rerank else ''}"}
    index = write_visrank(out, ranked, query, gallery, chosen, title=f"{Path(args.run_dir).name}: {args.target}",
                          summary=summary)
    sys.stdout.write(f"wrote {len(chosen)} ranked lists to {out} (open {index})\n")
    return {"index": str(index), "queries": chosen, "mAP": m_ap}


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
