"""Benchmark CLI: run a suite of training runs, then print the suite's leaderboard.

``python tools/benchmark.py --suite configs/suites/paper_single_source.yaml [--only 'dcac_*']
[--dry-run] [--output DIR]``

Runs are resumable (a run whose ``results.json`` exists is skipped) and a failing run is recorded
in its ``failed.json`` while the suite continues. Exit status: 0 when no run failed, 1 otherwise.
See :mod:`dcac_plugin.benchmark.suite` for the suite format.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dcac_plugin.benchmark.leaderboard import build_tables, render
from dcac_plugin.benchmark.records import RecordError, expand_per_target, load_records
from dcac_plugin.benchmark.suite import RESULTS_FILE, SuiteError, load_suite, run_suite

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a benchmark suite (protocols x models) and print its leaderboard.")
    p.add_argument("--suite", required=True, help="suite yaml, e.g. configs/suites/paper_single_source.yaml")
    p.add_argument("--only", action="append", default=None, metavar="PATTERN",
                   help="run only names matching this fnmatch pattern (repeatable), e.g. 'dcac_*'")
    p.add_argument("--dry-run", action="store_true", help="print the plan (argv per run), execute nothing")
    p.add_argument("--output", default=None, help="output root (overrides the suite's output_root)")
    return p.parse_args(argv)


def _quote(arg: str) -> str:
    """Shell-quote ``arg``, preferring double quotes for list literals like ``['market1501']``."""
    quoted = shlex.quote(arg)
    if quoted != arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return quoted


def main(argv: Sequence[str] | None = None, runner: Callable[[list[str]], Any] | None = None) -> int:
    """Run the suite; returns 0 when no run failed, 1 otherwise.

    Args:
        argv: command-line arguments.
        runner: the per-run entry point; default :func:`dcac_plugin.cli.train.main`.
    """
    args = parse_args(argv)
    suite = load_suite(args.suite)
    if runner is None and not args.dry_run:
        from dcac_plugin.cli.train import main as train_main

        runner = train_main
    summary = run_suite(suite, runner=runner or (lambda argv: None), only=args.only, dry_run=args.dry_run,
                        output_root=args.output)
    out = sys.stdout
    if args.dry_run:
        out.write(f"# suite '{suite.name}': {len(summary.planned)} run(s), "
                  f"output root {summary.output_root}\n")
        for e in summary.planned:
            state = "skip (results exist)" if e.run_name in summary.skipped else "run"
            out.write(f"# {e.run_name}: {state}\n")
            out.write("python tools/train.py " + " ".join(_quote(a) for a in e.argv()) + "\n")
        return 0
    out.write(summary.text() + "\n\n")
    if summary.output_root.is_dir():
        tables = build_tables(expand_per_target(load_records(summary.output_root)))
        empty = f"(no {RESULTS_FILE} in {summary.output_root} yet)\n"
        out.write(render(tables, "github") if tables else empty)
    return 1 if summary.failed else 0


def cli() -> None:
    """Console entry point: exit status of :func:`main`; a bad suite file exits 2 with a message."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    try:
        code = main(sys.argv[1:])
    except (FileNotFoundError, SuiteError, RecordError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
