"""``dcac-make-synthetic --root DIR --scale tiny|small --seed N`` (``python tools/make_synthetic.py``):
write the benchmark."""

from __future__ import annotations

import argparse
import logging
import sys

from dcac_plugin.data.synthetic import DEFAULT_DOMAINS, SCALES, make_synthetic
from dcac_plugin.utils.files import write_error

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Write the synthetic 4-domain re-ID benchmark in the real datasets' layouts "
        "(Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP). Cached: an existing root with the same "
        "scale and seed is left as it is.",
    )
    p.add_argument("--root", required=True, help="data root to write into (torchreid's data.root)")
    p.add_argument("--scale", default="small", choices=sorted(SCALES), help="tiny (tests) or small (demo)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (same seed -> identical files)")
    p.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS), choices=list(DEFAULT_DOMAINS),
                   help="domains to write")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the generator; logs one summary line per domain. Returns the exit status (0)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = make_synthetic(args.root, scale=args.scale, seed=args.seed, domains=tuple(args.domains))
    logger.info("synthetic benchmark in %s (scale=%s, seed=%d):", args.root, args.scale, args.seed)
    logger.info("%-14s %5s %9s %9s %9s %9s %9s %9s", "domain", "cams", "train_ids", "train_img",
                "query_ids", "query_img", "gal_ids", "gal_img")
    for name, c in counts.items():
        logger.info("%-14s %5d %9d %9d %9d %9d %9d %9d", name, c["cams"], c["train_ids"], c["train_images"],
                    c["query_ids"], c["query_images"], c["gallery_ids"], c["gallery_images"])
    return 0


def cli() -> None:
    """Console entry point: bad input or a failed write exits 2 with one ``error:`` line (no traceback).

    A run stopped half-way (full disk) leaves the root marked unfinished; the next run rewrites it.
    """
    try:
        code = main(sys.argv[1:])
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    except OSError as e:
        err = write_error(e.filename or "the synthetic benchmark", e)
        if err is None:
            sys.stderr.write(f"error: {e}\n")
        else:
            sys.stderr.write(f"error: {err}; the root is marked unfinished and the next run rewrites it\n")
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
