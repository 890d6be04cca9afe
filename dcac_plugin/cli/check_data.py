"""``python tools/check_data.py [--root DIR] [--datasets ...] [--config-file X [key value ...]] [--suite S]``.

Checks the datasets a config, a suite or the paper needs under ``data.root`` before any GPU hour
(:mod:`dcac_plugin.data.check`): found or missing, the layout expected, image / identity / camera
counts against the real release (or the generator's counts on a generated root), unreadable images;
one line per problem with its fix. Exit status: 0 when nothing is wrong, 1 when a problem was found,
2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os.path as osp
import sys
import time
from collections.abc import Sequence

from dcac_plugin.benchmark.suite import load_suite
from dcac_plugin.config import ConfigError, get_default_config, merge_config
from dcac_plugin.data.check import (
    IMAGE_MODES,
    PAPER_DATASETS,
    Need,
    check_needs,
    format_reports,
    needs_of_config,
    needs_of_entries,
)
from dcac_plugin.registry import register

logger = logging.getLogger(__name__)

_CODES = {"ma": "market1501", "d": "dukemtmcreid", "ms": "msmt17", "c3": "cuhk03_np",
          "msmt17_trainval": "msmt17"}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="check_data",
        description="Check the re-ID datasets under a data root: layout, counts against the real releases (or the "
                    "generator's, on a generated root), unreadable images. Default: the four datasets of the paper "
                    "(Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP detected; labeled too when present).")
    p.add_argument("--root", default=None, help="data root (default: the config's data.root, else reid-data)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="datasets to check: market1501 dukemtmcreid msmt17 cuhk03_np (or ma d ms c3)")
    p.add_argument("--config-file", default=None, help="check the sources and targets of this config")
    p.add_argument("--suite", default=None, help="check every dataset the runs of this suite need")
    p.add_argument("--images", choices=IMAGE_MODES, default="quick",
                   help="quick: signature + end marker of every image (default); full: decode every image; none")
    p.add_argument("--cuhk03-labeled", action="store_true", help="check CUHK03-NP labeled/ instead of detected/")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (with --config-file): key value ...")
    return p


def _needs(args: argparse.Namespace) -> list[Need]:
    if args.suite:
        return needs_of_entries(load_suite(args.suite).entries(), root=args.root)
    if args.config_file:
        opts = list(args.opts) + (["data.root", args.root] if args.root else [])
        return needs_of_config(merge_config(get_default_config(), args.config_file, opts))
    root = osp.abspath(osp.expanduser(args.root or "reid-data"))
    names = [_CODES.get(n.lower(), n.lower()) for n in args.datasets] if args.datasets else list(PAPER_DATASETS)
    unknown = [n for n in names if n not in PAPER_DATASETS]
    if unknown:
        raise ValueError(f"--datasets: unknown {unknown}; use {list(PAPER_DATASETS)} (or ma d ms c3)")
    needs = [Need(n, root, args.cuhk03_labeled) for n in dict.fromkeys(names)]
    if "cuhk03_np" in names and not args.datasets and not args.cuhk03_labeled \
            and osp.isdir(osp.join(root, "cuhk03-np", "labeled")):
        needs.append(Need("cuhk03_np", root, True))
    return needs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns 0 when every dataset is fine, 1 otherwise.

    Raises:
        ValueError, FileNotFoundError: bad input (:func:`cli` prints them and exits 2).
    """
    args = build_parser().parse_args(argv)
    if args.opts and not args.config_file:
        raise ValueError(f"unexpected arguments {args.opts}: key value overrides need --config-file")
    register()
    needs = _needs(args)
    t0 = time.perf_counter()
    reports = check_needs(needs, images=args.images)
    roots = sorted({n.root for n in needs})
    sys.stdout.write(f"# data root(s): {', '.join(roots)}\n")
    sys.stdout.write(format_reports(reports) + f" in {time.perf_counter() - t0:.1f} s\n")
    return 0 if all(r.ok for r in reports) else 1


def cli() -> None:
    """Console entry point (``dcac-check-data``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code = main(sys.argv[1:])
    except (ValueError, FileNotFoundError, ConfigError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
