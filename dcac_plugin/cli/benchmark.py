"""Benchmark CLI: run a suite of trainings (in this process, as local subprocesses or as Slurm jobs),
then print the suite's leaderboard.

::

    python tools/benchmark.py --suite configs/suites/paper_single_source.yaml --dry-run --imgs-per-sec 300
    python tools/benchmark.py --suite S [--only 'dcac_*'] [--seeds 1234,1235] [--retry-failed]
    python tools/benchmark.py --suite S --launcher local --max-parallel 4 --gpus-per-run 2
    python tools/benchmark.py --suite S --launcher slurm --slurm-partition gpu --slurm-time 12:00:00 --no-wait
    python tools/benchmark.py --suite S --status

Runs are resumable and claimed (a finished run is never rerun; two runners never train one run
twice); a failing run is recorded in its ``failed.json`` while the suite continues and is retried
only with ``--retry-failed``. Exit status: 0 when no run failed, 1 otherwise, 2 on bad input (one
``error:`` message, no traceback). See :mod:`dcac_plugin.benchmark.suite` for the suite format.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dcac_plugin.benchmark import claims
from dcac_plugin.benchmark.cost import cost_table, parse_throughput
from dcac_plugin.benchmark.launchers import (
    LAUNCHERS,
    InlineLauncher,
    Launcher,
    LauncherError,
    LocalLauncher,
    SlurmLauncher,
    parse_gpus,
    parse_slurm_time,
)
from dcac_plugin.benchmark.leaderboard import build_tables, render
from dcac_plugin.benchmark.records import RecordError, expand_per_target, load_records
from dcac_plugin.benchmark.suite import (
    Suite,
    SuiteError,
    check_random_init,
    load_suite,
    parse_seeds,
    plan_costs,
    run_status,
    run_suite,
    select,
)
from dcac_plugin.runfolder import RESULTS_FILE
from dcac_plugin.utils.files import WriteError

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a benchmark suite (protocols x models x seeds) and print its leaderboard.")
    p.add_argument("--suite", required=True,
                   help="suite name (demo, paper_single_source, paper_multi_source) or a suite yaml file")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="run only names matching this fnmatch pattern (repeatable), e.g. 'dcac_*'")
    p.add_argument("--output", default=None, help="output root (overrides the suite's output_root)")
    p.add_argument("--seeds", default=None, help="comma list of seeds, e.g. 1234,1235,1236 (overrides the suite's); "
                                                 "several seeds name runs <model>_<protocol>_s<seed>")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs that failed before (failed.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the plan (trainings -> targets, commands, estimated GPU-hours), run nothing")
    mode.add_argument("--status", action="store_true",
                      help="print done / failed / running / queued per run and exit")
    p.add_argument("--imgs-per-sec", default=None, metavar="N|PATTERN=N,...",
                   help="training throughput per GPU for --dry-run's GPU-hour estimate: one figure, or per "
                        "suite model name pattern, e.g. 'dcac=250,clip_baseline=700,*=1500'")
    p.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="inline (this process, one run at a time; default), local (subprocesses on this "
                        "machine) or slurm (one Slurm job per run, via submitit)")
    p.add_argument("--max-parallel", type=int, default=None,
                   help="local: trainings at once (default 1); slurm: jobs submitted at once (default all)")
    p.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs per training (default 1; >1 runs torchrun --nproc_per_node inside the run; "
                        "0 = CPU jobs)")
    p.add_argument("--gpus", default=None, help="local: GPU indices to use, e.g. 0,1,2,3 (default: all CUDA devices)")
    p.add_argument("--check-data", action=argparse.BooleanOptionalAction, default=True,
                   help="before a run starts, check the datasets the runs need under data.root (layout, counts "
                        "against the real releases or the generated ones, unreadable images) and refuse to start "
                        "when one is missing or incomplete (default); --no-check-data starts anyway")
    p.add_argument("--claim-timeout", type=float, default=claims.DEFAULT_STALE_AFTER_S,
                   help="seconds without heartbeat after which another runner's claim counts as abandoned "
                        f"(default {claims.DEFAULT_STALE_AFTER_S:.0f})")
    s = p.add_argument_group("slurm (override the suite's slurm: block)")
    s.add_argument("--slurm-partition", default=None)
    s.add_argument("--slurm-time", default=None, help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS")
    s.add_argument("--slurm-cpus", type=int, default=None, help="--cpus-per-task of each job")
    s.add_argument("--slurm-mem", default=None, help="--mem of each job, e.g. 64G")
    s.add_argument("--slurm-account", default=None)
    s.add_argument("--slurm-qos", default=None)
    s.add_argument("--slurm-constraint", default=None)
    s.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any further sbatch option (repeatable), e.g. --slurm-option exclusive=true")
    s.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and return; follow the jobs with --status")
    return p.parse_args(argv)


def _quote(arg: str) -> str:
    """Shell-quote ``arg``, preferring double quotes for list literals like ``['market1501']``."""
    quoted = shlex.quote(arg)
    if quoted != arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return quoted


def _sbatch_options(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"--slurm-option '{item}': give KEY=VALUE, e.g. --slurm-option exclusive=true")
        out[key.strip().lstrip("-").replace("-", "_")] = True if value.lower() == "true" else value
    return out


def build_launcher(args: argparse.Namespace, suite: Suite,
                   runner: Callable[[list[str]], Any] | None = None) -> Launcher:
    """The launcher the flags (then the suite) ask for.

    Raises:
        LauncherError: the launcher cannot work here (names the fix).
    """
    name = args.launcher or suite.launcher
    gpus_per_run = args.gpus_per_run if args.gpus_per_run is not None else (
        suite.gpus_per_run if suite.gpus_per_run is not None else 1)
    max_parallel = args.max_parallel or suite.max_parallel
    if name == "inline":
        if runner is None:
            from dcac_plugin.cli.train import main as train_main  # local: torch; only the inline launcher trains here

            runner = train_main
        return InlineLauncher(runner)
    if name == "local":
        return LocalLauncher(max_parallel or 1, gpus_per_run, parse_gpus(args.gpus))
    try:
        time_min = parse_slurm_time(args.slurm_time)
    except ValueError as e:
        raise LauncherError(f"--slurm-time: {e}") from None
    settings = suite.slurm.merged(partition=args.slurm_partition, time=time_min, cpus_per_task=args.slurm_cpus,
                                  mem=args.slurm_mem, account=args.slurm_account, qos=args.slurm_qos,
                                  constraint=args.slurm_constraint, sbatch=_sbatch_options(args.slurm_option))
    return SlurmLauncher(settings, gpus_per_run, wait=not args.no_wait, max_parallel=max_parallel)


def _train_prog() -> str:
    """How to start one training from here: ``python tools/train.py`` in a checkout, else ``dcac-train``
    (the launchers make the same choice)."""
    return "python tools/train.py" if Path("tools/train.py").is_file() else "dcac-train"


def _dry_run(args: argparse.Namespace, suite: Suite, seeds, out) -> int:
    summary = run_suite(suite, only=args.only, dry_run=True, output_root=args.output, seeds=seeds,
                        retry_failed=args.retry_failed)
    gpus_per_run = args.gpus_per_run if args.gpus_per_run is not None else (
        suite.gpus_per_run if suite.gpus_per_run is not None else 1)
    n_eval = sum(len(e.targets) for e in summary.planned)
    out.write(f"# suite '{suite.name}': {len(summary.planned)} training(s) -> {n_eval} evaluation(s), output root "
              f"{summary.output_root}, launcher {args.launcher or suite.launcher}, {gpus_per_run} GPU(s) per run\n")
    for e in summary.planned:
        if e.run_name in summary.skipped:
            state = "skip (results exist)"
        elif e.run_name in summary.skipped_failed:
            state = "skip (failed before; --retry-failed reruns it)"
        else:
            state = "run"
        seed = f" | seed {e.seed}" if e.seed is not None else ""
        targets = f" | targets {', '.join(e.targets)}" if e.targets else ""
        out.write(f"# {e.run_name}: {state}{targets}{seed}\n")
        out.write(f"{_train_prog()} " + " ".join(_quote(a) for a in e.argv()) + "\n")
    if summary.planned:
        out.write("\n" + cost_table(plan_costs(summary.planned, gpus_per_run, parse_throughput(args.imgs_per_sec)),
                                    gpus_per_run) + "\n")
    problem = None if suite.allow_random_init else check_random_init(summary.planned)
    if problem:
        out.write("\nREFUSED when run: " + problem + "\n")
    if args.check_data:
        from dcac_plugin.data.check import check_entries  # local: torch and torchreid, only for --check-data

        data_problem = check_entries([e for e in summary.planned if e.run_name not in summary.skipped],
                                     images="none", suite_path=args.suite)
        if data_problem:
            out.write("\nREFUSED when run (data check; layout and counts, images are read when run): "
                      + data_problem + "\n")
    return 0


def _status(args: argparse.Namespace, suite: Suite, seeds, out) -> int:
    entries = select(suite.entries(args.output, seeds), args.only)
    rows = [run_status(e, args.claim_timeout) for e in entries]
    widths = {k: max([len(k)] + [len(r[k]) for r in rows]) for k in ("run", "seed", "targets", "state")}
    head = " | ".join(k.ljust(widths[k]) for k in widths) + " | detail"
    out.write(f"# suite '{suite.name}' ({suite.root(args.output)}): {len(rows)} run(s)\n{head}\n")
    for r in rows:
        out.write(" | ".join(r[k].ljust(widths[k]) for k in widths) + f" | {r['detail']}\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out.write("# " + ", ".join(f"{n} {state}" for state, n in counts.items()) + "\n")
    return 0


def main(argv: Sequence[str] | None = None, runner: Callable[[list[str]], Any] | None = None) -> int:
    """Run (or plan, or report) the suite; returns 0 when no run failed, 1 otherwise.

    Args:
        argv: command-line arguments.
        runner: the per-run entry point of the inline launcher; default :func:`dcac_plugin.cli.train.main`.

    Raises:
        SuiteError, LauncherError, FileNotFoundError: bad input (:func:`cli` prints them and exits 2).
    """
    args = parse_args(argv)
    suite = load_suite(args.suite)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    out = sys.stdout
    if args.dry_run:
        return _dry_run(args, suite, seeds, out)
    if args.status:
        return _status(args, suite, seeds, out)
    launcher = build_launcher(args, suite, runner)
    summary = run_suite(suite, only=args.only, output_root=args.output, launcher=launcher, seeds=seeds,
                        retry_failed=args.retry_failed, stale_after=args.claim_timeout,
                        check_data="quick" if args.check_data else None)
    out.write(summary.text() + "\n\n")
    if summary.submitted:
        out.write(f"follow the jobs with: python tools/benchmark.py --suite {args.suite} --status\n")
    elif summary.output_root.is_dir():
        tables = build_tables(expand_per_target(load_records(summary.output_root)))
        empty = f"(no {RESULTS_FILE} in {summary.output_root} yet)\n"
        out.write(render(tables, "github") if tables else empty)
    return 1 if summary.failed else 0


def cli() -> None:
    """Console entry point: exit status of :func:`main`; bad input exits 2 with one message."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    try:
        code = main(sys.argv[1:])
    except (FileNotFoundError, SuiteError, RecordError, ValueError, WriteError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
