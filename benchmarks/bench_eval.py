"""Benchmark: dcac_plugin.evaluation vs torchreid's evaluator and re-ranking.

One run generates synthetic features with realistic identity / camera structure (Market-1501:
751 test ids + 2,793 distractors (pid 0), 6 cameras, 3,368 x 15,913; MSMT17: 3,060 ids, 15 cameras,
11,659 x 82,161; 512-d, clustered by identity with a camera offset so the metrics are non-trivial),
then times each method in its own subprocess on the same saved inputs. Peak memory is the
peak-RSS increase of that subprocess during the call (VmHWM reset through /proc/self/clear_refs
after the inputs are loaded).

    python benchmarks/bench_eval.py                      # Market full + MSMT ours + torchreid scaling
    python benchmarks/bench_eval.py --sizes market --skip-torchreid
    python benchmarks/bench_eval.py --rerank-k 50,15      # re-ranking rows at one (k1, k2) only
    python benchmarks/bench_eval.py --sizes msmt --force-torchreid-msmt   # needs more RAM than 24 GB

Re-ranking rows are measured for every ``--rerank-k K1,K2`` given (default: torchreid's 20,6 and
the original DCAC code's 50,15, which ``test.rerank True`` uses), with lambda ``--rerank-lambda``.

torchreid's Python ``evaluate_rank`` does not fit in memory at MSMT17 size next to its inputs on a
24 GB machine, so by default it is timed on MSMT17-like subsets (``--torchreid-scaling``: fractions
of the MSMT17 query and gallery counts) and a least-squares line in Q x G (time and peak memory)
is extrapolated to the full size; the table labels that figure as an extrapolation.

Writes a markdown table to docs/bench_eval.md (``--out`` to change), with the 1-min load average
at the start and end of every measurement. torch uses its default number of threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "market": dict(num_q=3368, num_g=15913, num_ids=751, num_cams=6, distractors=2793),
    "msmt": dict(num_q=11659, num_g=82161, num_ids=3060, num_cams=15, distractors=0),
}
DIM = 512
METHOD_NOTES = [
    "## What is measured and how ours works",
    "",
    "* `evaluate_rank` / `evaluate_features` (dcac_plugin.evaluation.ranking): per query chunk the positives "
    "and same-camera junk come from a per-pid gallery index; the kept position of each positive is "
    "`#{negatives closer} + k`, a histogram of the row bucketed by the sorted positive distances "
    "(batched `searchsorted` + `bincount`), so no row is sorted and no Q x G matrix is held "
    "(`evaluate_features` computes distances chunk by chunk with `addmm`). Exact ties between a "
    "negative and a positive are resolved as a stable sort (lower gallery index first).",
    "* re-ranking (dcac_plugin.evaluation.rerank): symmetric-block GEMMs over the joint Q+G set give "
    "the top-(k1+1) neighbours and column maxima; k-reciprocal sets, expansion, Gaussian weights, k2 "
    "query expansion (sparse `S @ V / k2`) and the Jaccard term (inverted index, sum of min over shared "
    "support) are sparse; the final Q x G distance is produced per query block.",
    "* With numba installed (CPU default), compiled kernels (numba `parallel=True`, `cache=True`) do the "
    "per-row counting (a vectorised count of the sorted positives below each item, same exact tie rule, "
    "bit-identical results to the torch path) and, for re-ranking, the streaming top-k of each GEMM block "
    "and its transpose, the k-reciprocal expansion, the exact O entries and the Jaccard/final mix. The "
    "remaining floor is the Q x G (or N x N / 2) GEMM.",
    "",
]


def scaled_size(size: str, fraction: float) -> dict:
    """``SIZES[size]`` with query, gallery, identity and distractor counts scaled by ``fraction``."""
    cfg = dict(SIZES[size])
    for key in ("num_q", "num_g", "num_ids", "distractors"):
        cfg[key] = int(round(cfg[key] * fraction))
    return cfg


def make_data(size: str | dict, out: Path, seed: int = 0) -> None:
    """Write qf/gf/q_pids/g_pids/q_camids/g_camids .npy files for one dataset size (name or dict)."""
    cfg = SIZES[size] if isinstance(size, str) else size
    rng = np.random.default_rng(seed)
    ids = np.arange(1, cfg["num_ids"] + 1)
    centers = rng.normal(size=(cfg["num_ids"] + 1, DIM)).astype(np.float32) * 0.65
    cam_off = rng.normal(size=(cfg["num_cams"], DIM)).astype(np.float32) * 0.2
    num_real = cfg["num_g"] - cfg["distractors"]
    q_pids = rng.choice(ids, cfg["num_q"])
    g_pids = np.concatenate([rng.choice(ids, num_real), np.zeros(cfg["distractors"], dtype=np.int64)])
    q_cams = rng.integers(0, cfg["num_cams"], cfg["num_q"])
    g_cams = rng.integers(0, cfg["num_cams"], cfg["num_g"])

    def feats(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
        scale = np.exp(0.15 * rng.normal(size=(len(pids), 1))).astype(np.float32)  # hard and easy images
        f = centers[pids] + cam_off[cams] + scale * rng.normal(size=(len(pids), DIM)).astype(np.float32)
        distract = pids == 0
        f[distract] = rng.normal(size=(int(distract.sum()), DIM)).astype(np.float32) * 1.1
        return f.astype(np.float32)

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "qf.npy", feats(q_pids, q_cams))
    np.save(out / "gf.npy", feats(g_pids, g_cams))
    for name, arr in (("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_cams), ("g_camids", g_cams)):
        np.save(out / f"{name}.npy", arr)


# ------------------------------------------------------------------------------------------------
# worker side (one measurement per process)
# ------------------------------------------------------------------------------------------------


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def worker(task: str, data: Path, save: str | None, k1: int = 20, k2: int = 6, lam: float = 0.3) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from dcac_plugin._torchreid import tr
    from dcac_plugin.evaluation import evaluate_features, evaluate_rank, re_ranking_features

    arr = {k: np.load(data / f"{k}.npy") for k in ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")}
    ids = (arr["q_pids"], arr["g_pids"], arr["q_camids"], arr["g_camids"])
    qf, gf = torch.from_numpy(arr["qf"]), torch.from_numpy(arr["gf"])
    distmat = np.load(data / "distmat.npy") if task in ("ours_eval_rank", "tr_eval_rank") else None
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
        reset = True
    except OSError:
        reset = False
    base = _status("VmRSS")
    result: dict = {}
    t0 = time.perf_counter()
    if task == "ours_eval_rank":
        cmc, mAP, mINP = evaluate_rank(distmat, *ids)
        result = dict(mAP=100 * mAP, rank1=100 * float(cmc[0]), mINP=100 * mINP)
    elif task == "tr_eval_rank":
        cmc, mAP = tr.metrics.evaluate_rank(distmat, *ids, use_cython=False)
        result = dict(mAP=100 * float(mAP), rank1=100 * float(cmc[0]))
    elif task == "ours_eval_features":
        out = evaluate_features(qf, gf, *ids)
        result = {k: out[k] for k in ("mAP", "rank1", "mINP")}
    elif task == "ours_eval_features_rerank":
        out = evaluate_features(qf, gf, *ids, rerank=True, k1=k1, k2=k2, lambda_value=lam)
        result = {k: out[k] for k in ("mAP", "rank1", "mINP")}
    elif task in ("ours_rerank", "tr_rerank"):
        with torch.no_grad():
            if task == "ours_rerank":
                final = re_ranking_features(qf, gf, k1, k2, lam)
            else:  # torchreid engine path: three distance matrices, then re_ranking
                cd = tr.metrics.compute_distance_matrix
                final = tr.utils.re_ranking(cd(qf, gf).numpy(), cd(qf, qf).numpy(), cd(gf, gf).numpy(),
                                            k1=k1, k2=k2, lambda_value=lam)
        elapsed = time.perf_counter() - t0
        peak = _status("VmHWM") - base
        cmc, mAP, mINP = evaluate_rank(final, *ids)
        if save:
            np.save(save, final)
        print(json.dumps(dict(time=elapsed, peak_mb=peak, reset=reset, mAP=100 * mAP,
                              rank1=100 * float(cmc[0]), mINP=100 * mINP)))
        return
    else:
        raise ValueError(f"unknown task {task!r}")
    elapsed = time.perf_counter() - t0
    result.update(time=elapsed, peak_mb=_status("VmHWM") - base, reset=reset)
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def run_task(task: str, data: Path, save: Path | None = None, rr: tuple[int, int, float] | None = None) -> dict:
    """Run one measurement in a fresh subprocess; adds the 1-min load average before and after."""
    cmd = [sys.executable, __file__, "--worker", task, "--data", str(data)]
    if save is not None:
        cmd += ["--save", str(save)]
    if rr is not None:
        cmd += ["--k1", str(rr[0]), "--k2", str(rr[1]), "--lam", str(rr[2])]
    tag = task if rr is None else f"{task} k1={rr[0]} k2={rr[1]}"
    print(f"  running {tag} ...", flush=True)
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark task {tag} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load"] = (load0, os.getloadavg()[0])
    print(f"    {tag}: {res['time']:.2f} s, peak +{res['peak_mb']:.0f} MiB, "
          f"mAP {res.get('mAP', float('nan')):.2f}, load {res['load'][0]:.2f} -> {res['load'][1]:.2f}", flush=True)
    return res


def save_distmat(data: Path) -> None:
    """Full squared-euclidean Q x G matrix of the saved features (the input of ``evaluate_rank``)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from dcac_plugin.evaluation import compute_distance_chunk

    qf = torch.from_numpy(np.load(data / "qf.npy"))
    gf = torch.from_numpy(np.load(data / "gf.npy"))
    np.save(data / "distmat.npy", compute_distance_chunk(qf, gf).numpy())


def parse_rerank_k(values: list[str] | None) -> list[tuple[int, int]]:
    """``['20,6', '50,15']`` -> ``[(20, 6), (50, 15)]``."""
    out = []
    for v in values or ["20,6", "50,15"]:
        try:
            k1, k2 = (int(x) for x in v.split(","))
        except ValueError:
            raise SystemExit(f"--rerank-k expects K1,K2 (two integers), got {v!r}") from None
        out.append((k1, k2))
    return out


def _load(*results: dict | None) -> str:
    """'a-b': lowest and highest 1-min load average seen at the start/end of the given measurements."""
    loads = [x for r in results if r for x in r["load"]]
    return f"{min(loads):.1f}-{max(loads):.1f}"


def _fmt_size(cfg: dict) -> str:
    return f"{cfg['num_q']:,} x {cfg['num_g']:,}"


def torchreid_scaling(fractions: list[float], tmp: Path) -> tuple[list[tuple], list[str]]:
    """Time torchreid's evaluate_rank on MSMT17-like subsets and extrapolate to the full size.

    Returns table rows and notes. The fit is least squares of time (s) and peak (MiB) against Q x G.
    """
    rows, points, results = [], [], []
    full = SIZES["msmt"]
    for f in fractions:
        cfg = scaled_size("msmt", f)
        data = tmp / f"msmt_x{f:g}"
        print(f"[msmt x {f:g}: {_fmt_size(cfg)}] generating data", flush=True)
        make_data(cfg, data)
        save_distmat(data)
        r = run_task("tr_eval_rank", data)
        qg = cfg["num_q"] * cfg["num_g"]
        points.append((qg, r["time"], r["peak_mb"]))
        results.append(r)
        rows.append((f"msmt x {f:g} ({_fmt_size(cfg)})", "evaluate_rank(distmat), torchreid only", "", "",
                     f"{r['time']:.2f}", f"{r['peak_mb']:.0f}", "", "", "", f"torchreid {r['mAP']:.2f} / "
                     f"{r['rank1']:.2f} / -", _load(r)))
        shutil.rmtree(data, ignore_errors=True)
    notes = []
    if len(points) >= 2:
        x = np.array([p[0] for p in points], dtype=np.float64)
        full_qg = full["num_q"] * full["num_g"]
        fits = {}
        for idx, name in ((1, "time"), (2, "peak")):
            y = np.array([p[idx] for p in points], dtype=np.float64)
            a, b = np.polyfit(x, y, 1)
            fits[name] = (a, b, a * full_qg + b)
        t_min, peak_gib = fits["time"][2] / 60, fits["peak"][2] / 1024
        rows.append((f"msmt ({_fmt_size(full)})", "evaluate_rank(distmat), torchreid only", "", "",
                     f"~{t_min:.0f} min (extrapolated)", f"~{peak_gib:.0f} GiB (extrapolated)", "", "", "", "",
                     _load(*results)))
        notes.append(
            f"msmt: torchreid's evaluate_rank extrapolated from {len(points)} sizes (least-squares line in "
            f"Q x G over {', '.join(f'{p[0] / 1e6:.1f}M' for p in points)} entries, full size "
            f"{full_qg / 1e6:.0f}M): time = {fits['time'][0] * 1e6:.3f} s per million entries "
            f"{fits['time'][1]:+.2f} s -> {fits['time'][2]:.0f} s; peak = {fits['peak'][0] * 1e6:.1f} MiB per "
            f"million entries {fits['peak'][1]:+.0f} MiB -> {fits['peak'][2]:.0f} MiB, on top of the "
            f"{full_qg * 4 / 2**30:.1f} GiB float32 distance matrix it is given")
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="market,msmt", help="comma list of: market, msmt")
    ap.add_argument("--skip-torchreid", action="store_true", help="only time dcac_plugin")
    ap.add_argument("--force-torchreid-msmt", action="store_true",
                    help="also run torchreid's evaluate_rank at full MSMT17 size (needs more than 24 GB RAM)")
    ap.add_argument("--torchreid-scaling", default="0.125,0.177,0.25",
                    help="fractions of the MSMT17 query/gallery counts at which torchreid's evaluate_rank is "
                         "timed to extrapolate its full-size cost ('' to skip)")
    ap.add_argument("--skip-rerank", action="store_true")
    ap.add_argument("--rerank-k", action="append", metavar="K1,K2",
                    help="re-ranking (k1, k2); repeat for several (default: 20,6 and 50,15)")
    ap.add_argument("--rerank-lambda", type=float, default=0.3, help="re-ranking lambda (default 0.3)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_eval.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    ap.add_argument("--k1", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--k2", type=int, default=6, help=argparse.SUPPRESS)
    ap.add_argument("--lam", type=float, default=0.3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.data), args.save, args.k1, args.k2, args.lam)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r}; choose from {sorted(SIZES)}")
    rerank_params = [(k1, k2, args.rerank_lambda) for k1, k2 in parse_rerank_k(args.rerank_k)]
    try:
        fractions = [float(f) for f in args.torchreid_scaling.split(",") if f.strip()]
    except ValueError:
        raise SystemExit(
            f"--torchreid-scaling expects comma-separated fractions, got {args.torchreid_scaling!r}") from None
    rows: list[tuple] = []
    notes: list[str] = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp_name:
        tmp = Path(tmp_name)
        for size in sizes:
            data = tmp / size
            print(f"[{size}] generating data", flush=True)
            make_data(size, data)
            run_tr = not args.skip_torchreid and (size != "msmt" or args.force_torchreid_msmt)
            res: dict = {}
            if size == "market" or run_tr:  # a saved full distance matrix (3.8 GB at MSMT size)
                save_distmat(data)
                res["ours_eval_rank"] = run_task("ours_eval_rank", data)
                if run_tr:
                    res["tr_eval_rank"] = run_task("tr_eval_rank", data)
            res["ours_eval_features"] = run_task("ours_eval_features", data)
            for rr in [] if args.skip_rerank else rerank_params:
                k = f"k1={rr[0]}, k2={rr[1]}, lambda={rr[2]:g}"
                if size == "market":  # the dense Q x G output is only sensible at Market size
                    res[f"ours_rerank {k}"] = run_task("ours_rerank", data, data / "ours_rr.npy", rr)
                    if run_tr:
                        res[f"tr_rerank {k}"] = run_task("tr_rerank", data, data / "tr_rr.npy", rr)
                        diff = np.abs(np.load(data / "ours_rr.npy") - np.load(data / "tr_rr.npy")).max()
                        notes.append(f"{size}, {k}: re-ranked distance, max |ours - torchreid| = {diff:.2e}")
                res[f"ours_eval_features_rerank {k}"] = run_task("ours_eval_features_rerank", data, rr=rr)
            if size == "msmt" and not run_tr:
                notes.append("msmt: torchreid's re_ranking is not run: it holds several dense 93,820^2 float32 "
                             "matrices (~35 GB each), more than this machine's RAM")
            label = {"ours_eval_rank": "evaluate_rank(distmat)",
                     "ours_eval_features": "evaluate_features (incl. distances)",
                     "ours_rerank": "re-ranking -> Q x G matrix",
                     "ours_eval_features_rerank": "evaluate_features(rerank=True) (incl. distances)"}
            for key in [k for k in res if k.startswith("ours_")]:
                task, _, k = key.partition(" ")
                theirs = key.replace("ours_", "tr_", 1)
                o, t = res[key], res.get(theirs)
                if t:
                    tr_cells = (f"{t['time']:.2f}", f"{t['peak_mb']:.0f}", f"{t['time'] / o['time']:.1f}x",
                                f"{t['peak_mb'] / max(o['peak_mb'], 1):.1f}x",
                                f"{o['mAP'] - t['mAP']:+.4f} / {o['rank1'] - t['rank1']:+.4f}")
                elif task == "ours_eval_features_rerank" and size == "msmt":
                    tr_cells = ("cannot fit (dense 93,820^2 matrices, 35 GB+)", "", "", "", "")
                elif task in ("ours_eval_rank", "ours_rerank"):
                    tr_cells = ("skipped", "", "", "", "")
                else:
                    tr_cells = ("", "", "", "", "")
                rows.append((size, label[task] + (f" [{k}]" if k else ""), f"{o['time']:.2f}",
                             f"{o['peak_mb']:.0f}", *tr_cells,
                             f"{o['mAP']:.2f} / {o['rank1']:.2f} / {o.get('mINP', float('nan')):.2f}", _load(o, t)))
            shutil.rmtree(data, ignore_errors=True)
        if "msmt" in sizes and fractions and not args.skip_torchreid and not args.force_torchreid_msmt:
            scale_rows, scale_notes = torchreid_scaling(fractions, tmp)
            rows += scale_rows
            notes += scale_notes
    header = ("| size | task | ours s | ours peak MiB | torchreid s | torchreid peak MiB | speed-up "
              "| memory ratio | dmAP / drank1 (pts) | ours mAP / R1 / mINP (%) | load avg |")
    sep = "|" + "---|" * 11
    lines = [header, sep] + ["| " + " | ".join(r) + " |" for r in rows]
    import torch

    cmd = " ".join(["python", "benchmarks/bench_eval.py", *sys.argv[1:]])
    md = ["# Evaluation benchmark (`benchmarks/bench_eval.py`)", "",
          f"Command: `{cmd}`", "",
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, numpy {np.__version__}. "
          f"Finished on {time.strftime('%Y-%m-%d %H:%M')}; 1-min load average {load_start:.1f} at the start and "
          f"{os.getloadavg()[0]:.1f} at the end. The last column gives the lowest and highest 1-min load "
          "average seen around each row's measurements (above the CPU count, other jobs shared the CPU: "
          "absolute times are then inflated; both sides of a ratio ran in the same period).", "",
          "Each cell is one subprocess on the same synthetic inputs; peak = increase of peak RSS during the "
          "call. torchreid = PyPI 0.2.5 Python evaluator (no Cython build is shipped) and "
          "`utils.re_ranking` fed by "
          "`metrics.compute_distance_matrix` (its engine path, distance time included).", "",
          *lines, "", *[f"* {n}" for n in notes], "", *METHOD_NOTES]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
