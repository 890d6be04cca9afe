"""Benchmark suites at scale: what training once per source saves, local parallel runs, Slurm.

(a) The paper single-source suite before (one training per source -> target pair: 12 protocols x
    10 models) and after (one training per source, evaluated on its 3 targets: 4 x 10), with the
    dry-run GPU-hour estimate of both at an assumed per-GPU throughput (``--imgs-per-sec``).
(b) Two tiny trainings on the generated benchmark (``clip_reid_tiny`` and ``osnet_x0_25``, 1 epoch,
    ``data.workers 0``) with ``--launcher local``: ``--max-parallel 2`` against ``--max-parallel 1``
    (both as subprocesses, so both pay the same start-up).
(c) The wall time of the Slurm end-to-end test (``tests/test_slurm.py``: a local single-node Slurm,
    two tiny trainings as jobs, the leaderboard from their results).

    python benchmarks/bench_suite.py                       # a, b, c
    python benchmarks/bench_suite.py --skip-local --skip-slurm
    python benchmarks/bench_suite.py --imgs-per-sec 'dcac=250,clip_baseline=700,*=1500'
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_THROUGHPUT = "dcac=250,clip_baseline=700,*=1500"


def part_a(throughput: str) -> None:
    from dcac_plugin.benchmark.cost import parse_throughput
    from dcac_plugin.benchmark.suite import load_suite, parse_suite, plan_costs

    os.chdir(REPO)
    after_suite = load_suite("configs/suites/paper_single_source.yaml")
    after = after_suite.entries()
    # before: the same models over the 12 source -> target pairs, one training each
    codes = {"ma": "market1501", "d": "dukemtmcreid", "ms": "msmt17", "c3": "cuhk03_np"}
    pairs = [(s, t) for s in codes for t in codes if s != t]
    before_suite = parse_suite({
        "name": "paper_single_source_pairs",
        "matrix": {"protocols": [{"name": f"{s}2{t}", "sources": [codes[s]], "targets": [codes[t]]}
                                 for s, t in pairs],
                   "models": [{"name": m["name"], "config": m["config"]} for m in after_suite.models]}})
    before = before_suite.entries()
    table = parse_throughput(throughput)
    hours = {}
    for label, entries in (("before", before), ("after", after)):
        costs = plan_costs(entries, 1, table)
        hours[label] = (sum(c.gpu_hours or 0.0 for c in costs), len(entries), sum(len(c.targets) for c in costs))
    print("(a) paper single-source suite (configs/suites/paper_single_source.yaml)")
    print(f"    throughput assumed (images/s per GPU, not measured): {throughput}")
    for label, (h, n, ev) in hours.items():
        print(f"    {label:6s}: {n:3d} trainings, {ev:3d} evaluations, {h:6.1f} GPU-h (dry-run estimate)")
    print(f"    saved: {hours['before'][1] - hours['after'][1]} trainings, "
          f"{hours['before'][0] - hours['after'][0]:.1f} GPU-h ({hours['after'][0] / hours['before'][0]:.2f}x)")


def part_b() -> None:
    import yaml

    from dcac_plugin.benchmark.launchers import LocalLauncher
    from dcac_plugin.benchmark.suite import load_suite, run_suite
    from dcac_plugin.data.synthetic import make_synthetic

    os.chdir(REPO)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="bench_suite_") as tmp:
        root = Path(tmp) / "tiny"
        make_synthetic(root, scale="tiny", seed=0)
        suite_path = Path(tmp) / "tiny.yaml"
        suite_path.write_text(yaml.safe_dump({
            "name": "tiny", "common_opts": ["data.root", str(root), "train.max_epoch", 1, "data.workers", 0],
            "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["msmt17"]}],
                       "models": [{"name": "clip_reid_tiny", "config": "configs/demo/clip_tiny.yaml"},
                                  {"name": "osnet_x0_25", "config": "configs/demo/osnet.yaml"}]}}))
        suite = load_suite(suite_path)
        walls: dict[int, list[float]] = {1: [], 2: []}
        # a warm-up pass first (byte-code and numba caches), then sequential and parallel alternately
        for i, n in enumerate((1, 1, 2, 1, 2)):
            out = Path(tmp) / f"out{i}"
            t0 = time.perf_counter()
            summary = run_suite(suite, output_root=out, launcher=LocalLauncher(max_parallel=n, gpus=[]), poll_s=0.2)
            wall = time.perf_counter() - t0
            assert len(summary.ran) == 2 and not summary.failed, summary.text()
            per_run = ", ".join(f"{k} {v:.1f} s" for k, v in summary.times.items())
            label = "warm-up" if i == 0 else f"--max-parallel {n}"
            print(f"    {label}: {wall:.1f} s wall ({per_run})")
            if i:
                walls[n].append(wall)
    seq, par = min(walls[1]), min(walls[2])
    print(f"(b) two tiny local runs, best of 2: sequential {seq:.1f} s, parallel {par:.1f} s, "
          f"parallel / sequential = {par / seq:.2f} on {os.cpu_count()} cores")


def part_c() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-rs", "tests/test_slurm.py",
                          "-k", "end_to_end"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = res.stdout + res.stderr
    m = re.search(r"Slurm end-to-end test: ([\d.]+) s", text)
    up = re.search(r"local Slurm up in ([\d.]+) s", text)
    if res.returncode != 0 or not m:
        print(f"(c) Slurm end-to-end test did not pass (exit {res.returncode}):\n{text[-2000:]}")
        return
    print(f"(c) Slurm end-to-end (pytest tests/test_slurm.py): test {float(m.group(1)):.1f} s, cluster start "
          f"{float(up.group(1)) if up else float('nan'):.1f} s, whole pytest call {wall:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgs-per-sec", default=DEFAULT_THROUGHPUT, help="assumed throughput for (a)")
    p.add_argument("--skip-local", action="store_true", help="skip (b)")
    p.add_argument("--skip-slurm", action="store_true", help="skip (c)")
    args = p.parse_args()
    part_a(args.imgs_per_sec)
    if not args.skip_local:
        part_b()
    if not args.skip_slurm:
        part_c()


if __name__ == "__main__":
    main()
