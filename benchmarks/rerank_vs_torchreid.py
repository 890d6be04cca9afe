"""Where our re-ranked distances differ from torchreid's ``utils.re_ranking``, and why.

    python benchmarks/rerank_vs_torchreid.py                   # Market size, k1=50, k2=15 (~8 GB, minutes)
    python benchmarks/rerank_vs_torchreid.py --fraction 0.5 --k 20,6

On the synthetic features of ``benchmarks/bench_eval.py`` (same generator, seed 0) it compares
torchreid's re-ranking (fed torchreid's three distance matrices, its engine path) with

* ours fed the same three matrices (``dcac_plugin.evaluation.re_ranking``), and
* ours from the features (``re_ranking_features``: its own blocked distance pass),

then, for every query row that differs by more than 1e-5, prints the neighbours of that query in
torchreid's distance matrix around the algorithm's three cut-offs (k1 + 1, round(k1 / 2) + 1 and
k2), where an exact tie makes the neighbour sets depend on the sort's tie order and on the last
bit of the distance computation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import make_data, scaled_size  # noqa: E402

from dcac_plugin._torchreid import tr  # noqa: E402
from dcac_plugin.evaluation import re_ranking, re_ranking_features  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the Market-size set (default 1)")
    ap.add_argument("--k", default="50,15", help="k1,k2 (default 50,15, the original DCAC code's)")
    ap.add_argument("--lambda-value", type=float, default=0.3)
    args = ap.parse_args(argv)
    k1, k2 = (int(v) for v in args.k.split(","))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        make_data(scaled_size("market", args.fraction), Path(tmp), seed=0)
        qf, gf = (torch.from_numpy(np.load(Path(tmp) / f)) for f in ("qf.npy", "gf.npy"))
    nq = qf.shape[0]
    cd = tr.metrics.compute_distance_matrix
    qg, qq, gg = cd(qf, gf).numpy(), cd(qf, qf).numpy(), cd(gf, gf).numpy()
    print(f"Q = {nq}, G = {gf.shape[0]}, k1 = {k1}, k2 = {k2}, lambda = {args.lambda_value}", flush=True)
    t0 = time.perf_counter()
    ref = tr.utils.re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=args.lambda_value)
    print(f"torchreid re_ranking: {time.perf_counter() - t0:.0f} s", flush=True)
    same = re_ranking(qg, qq, gg, k1, k2, args.lambda_value)
    feats = re_ranking_features(qf, gf, k1, k2, args.lambda_value)
    d_same, d_feat = np.abs(same - ref), np.abs(feats - ref)
    print(f"max |ours (torchreid's matrices) - torchreid| = {d_same.max():.3g}")
    rows = np.unique(np.nonzero(d_feat > 1e-5)[0])
    print(f"max |ours (features) - torchreid| = {d_feat.max():.3g}; {(d_feat > 1e-5).sum()} entries above 1e-5, "
          f"in query rows {rows.tolist()}")
    cuts = {"k1 + 1": k1 + 1, "round(k1 / 2) + 1": int(np.around(k1 / 2.0)) + 1, "k2": k2}
    for i in rows.tolist():
        row = np.concatenate([qq[i], qg[i]])  # row i of torchreid's joint (Q+G) distance matrix
        order = np.argsort(np.power(row, 2).astype(np.float32), kind="stable")
        for name, k in cuts.items():
            a, b = row[order[k - 1]], row[order[k]]
            tie = "EXACT TIE" if a == b else f"gap {b - a:.3g}"
            print(f"  query {i}, cut-off {name} = {k}: neighbour {k} (joint index {order[k - 1]}) at {a!r}, "
                  f"neighbour {k + 1} (joint index {order[k]}) at {b!r}: {tie}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
