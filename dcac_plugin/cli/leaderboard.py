"""Leaderboard CLI: paper-style tables (and a plot) from a folder of ``results.json`` records.

``python tools/leaderboard.py [--results output/] [--published] [--format github|latex|csv|html|json]
[--protocol single|multi|all] [--benchmark real|synthetic|all] [--metric both|mAP|rank1]
[--plot out.png] [--output FILE]``

``--published`` alone prints the published tables; ``--results`` alone the reproduced ones; both
merge them. ``--format html --output page.html`` writes a self-contained page whose links to each
run's files are relative to the page.

See :mod:`dcac_plugin.benchmark.leaderboard` for the table layout, marks and aggregation rules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dcac_plugin.benchmark.leaderboard import (
    BENCHMARK_CHOICES,
    FORMATS,
    METRIC_CHOICES,
    PROTOCOL_CHOICES,
    build_tables,
    plot_tables,
    render,
)
from dcac_plugin.benchmark.records import RecordError, expand_per_target, load_published, load_records
from dcac_plugin.utils.files import WriteError

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Leaderboard tables from results.json records (DG re-ID).")
    p.add_argument("--results", default=None,
                   help="folder searched recursively for results.json files (optional with --published)")
    p.add_argument("--format", default="github", choices=FORMATS, help="output format (default github)")
    p.add_argument("--protocol", default="all", choices=list(PROTOCOL_CHOICES), help="which tables")
    p.add_argument("--benchmark", default="all", choices=list(BENCHMARK_CHOICES),
                   help="real datasets, the generated (synthetic) benchmark, or both (separate tables)")
    p.add_argument("--published", action="store_true",
                   help="merge the packaged published numbers into the real-dataset tables")
    p.add_argument("--published-file", default=None,
                   help="use this published-numbers yaml instead of the packaged one (implies --published)")
    p.add_argument("--metric", default="both", choices=METRIC_CHOICES,
                   help="cell content for github/latex/html: 'mAP/R1' (both), mAP or rank1")
    p.add_argument("--plot", default=None, help="also write a grouped-bar PNG plot here")
    p.add_argument("--output", default=None,
                   help="write the tables to this file instead of stdout (html: links become relative to it)")
    args = p.parse_args(argv)
    if args.results is None and not (args.published or args.published_file):
        p.error("nothing to show: pass --results FOLDER (reproduced runs), --published (published numbers), "
                "or both")
    return args


def make_tables(args: argparse.Namespace) -> list:
    """Load records (and published numbers) and build the tables the arguments ask for."""
    results = expand_per_target(load_records(args.results)) if args.results is not None else []
    published = None
    if args.published or args.published_file:
        published = load_published(args.published_file)
    return build_tables(results, published, protocol=args.protocol, benchmark=args.benchmark)


def main(argv: Sequence[str] | None = None) -> int:
    """Print (or write) the leaderboard; returns 0, or 1 when no result matched the filters.

    Raises:
        FileNotFoundError: the results folder (or published file) does not exist.
        RecordError: a results.json or the published yaml is malformed (the message names the file and key).
        SystemExit: usage error (exit status 2), e.g. neither --results nor --published.
    """
    args = parse_args(argv)
    tables = make_tables(args)
    if not tables:
        where = f"no results in {args.results}" if args.results is not None else "no published numbers"
        sys.stderr.write(f"{where} match --protocol {args.protocol} --benchmark {args.benchmark}"
                         + ("" if args.published or args.published_file else
                            " (add --published to show published numbers)") + "\n")
        return 1
    text = render(tables, args.format, args.metric, output=args.output)
    if args.output:
        # local: the leaderboard stays torch-free until it writes (utils.io imports torch)
        from dcac_plugin.utils.io import atomic_write_text

        atomic_write_text(text, args.output)
        logger.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
    if args.plot:
        plot_tables(tables, Path(args.plot))
    return 0


def cli() -> None:
    """Console entry point: exit status of :func:`main`; bad input exits 2 with a one-line message."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = main(sys.argv[1:])
    except (FileNotFoundError, RecordError, ValueError, WriteError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
