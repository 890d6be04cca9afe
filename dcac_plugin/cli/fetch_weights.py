"""``python tools/fetch_weights.py [--only NAME ...] [--list | --check] [--mirror DIR_OR_URL] [--convert]``.

Downloads the weight files of the paper and baseline configs into ``pretrained/`` (resumable,
sha256-verified; see :mod:`dcac_plugin.weights_fetch`). Exit status: 0 when every selected file is
in place and verified, 1 when one is missing, failed or does not match, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dcac_plugin.weights_fetch import (
    FetchError,
    ManifestError,
    Outcome,
    check_one,
    fetch_one,
    load_manifest,
    select,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="fetch_weights",
        description="Download the weight files the paper configs (configs/dcac_*.yaml, configs/clip_baseline_*.yaml) "
                    "and the baseline configs (configs/baselines/*.yaml) read, into pretrained/, resumable and "
                    "sha256-verified. Without --only: every file but the optional official DCAC checkpoints.")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="file names, fnmatch patterns ('osnet_*') or groups (paper, baselines, dcac-release)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="print the manifest (source, size, sha256) and exit")
    mode.add_argument("--check", action="store_true",
                      help="verify the files already in --dest (size, sha256); no network, changes nothing")
    p.add_argument("--dest", default="pretrained", help="destination folder (default: pretrained)")
    p.add_argument("--mirror", default=None, metavar="DIR_OR_URL",
                   help="take every file from this folder (or file:// / http(s):// URL) holding them under their "
                        "manifest names, instead of the official sources (compute nodes without internet)")
    p.add_argument("--convert", action="store_true",
                   help="also write OpenAI's TorchScript ViT-B-16.pt as pretrained/ViT-B-16.safetensors (a plain "
                        "state dict: nothing then needs torch.jit.load)")
    p.add_argument("--retries", type=int, default=3, help="reconnections per file after a dropped transfer (3)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a transfer counts as "
                                                                "dropped (60)")
    p.add_argument("--manifest", default=None, help=argparse.SUPPRESS)  # tests and internal manifests
    return p


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _list(entries, dest: str, out) -> int:
    for e in entries:
        here = "present" if (Path(dest) / e.name).is_file() else "absent"
        opt = " (optional)" if e.optional else ""
        out.write(f"{e.name}  [{e.group}{opt}; {here} in {dest}]\n")
        out.write(f"  what:    {e.what}\n")
        out.write(f"  used by: {'; '.join(e.used_by)}\n")
        srcs = ", ".join(e.urls) if e.urls else "none published"
        out.write(f"  source:  {srcs}" + (" (via gdown)" if e.backend == "gdown" and e.urls else "") + "\n")
        size = f"{_size(e.size)} ({e.size:,} B)" if e.size else "? (none published)"
        out.write(f"  size:    {size}\n")
        out.write(f"  sha256:  {e.digest_label}\n")
        out.write(f"  digest:  {e.digest_source}\n")
        if e.note:
            out.write(f"  note:    {e.note}\n")
    return 0


def _report(outcomes: list[Outcome], out) -> int:
    width = max(len(o.name) for o in outcomes)
    bad = 0
    for o in outcomes:
        out.write(f"{o.name.ljust(width)}  {o.status.upper():10s} {o.detail}\n")
        for line in o.extra:
            out.write(f"{' ' * width}  {'':10s} {line}\n")
        bad += o.status in ("missing", "failed", "mismatch")
    out.write(f"# {len(outcomes) - bad} of {len(outcomes)} file(s) in place and verified"
              + (f", {bad} not" if bad else "") + "\n")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 a file missing / failed / mismatching).

    Raises:
        FetchError, ManifestError: bad input (:func:`cli` prints them and exits 2).
    """
    args = build_parser().parse_args(argv)
    entries = load_manifest(args.manifest)
    chosen = select(entries, args.only)
    out = sys.stdout
    if args.list:
        return _list(chosen if args.only else entries, args.dest, out)
    if args.check:
        return _report([check_one(e, args.dest) for e in chosen], out)
    outcomes = []
    for e in chosen:
        try:
            outcomes.append(fetch_one(e, args.dest, mirror=args.mirror, retries=args.retries, timeout=args.timeout,
                                      convert=args.convert))
        except FetchError as exc:
            logger.error("%s", exc)
            outcomes.append(Outcome(e.name, "failed", str(exc)))
    return _report(outcomes, out)


def cli() -> None:
    """Console entry point (``dcac-fetch-weights``): exit status of :func:`main`; bad input exits 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        code = main(sys.argv[1:])
    except (FetchError, ManifestError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
