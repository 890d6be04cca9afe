"""``python tools/extract.py (--run-dir RUN | --config-file X --weights W) --images DIR_OR_LIST --output F``.

Writes the features the run's evaluation uses (see :class:`dcac_plugin.FeatureExtractor`) of every
image of a folder (recursive) or a list file, with the image paths and what produced them, to a
``.npz`` or ``.safetensors`` file (:func:`dcac_plugin.inference.save_features`). A missing or
corrupt image stops the run naming the file, unless ``--skip-bad`` (the skipped files are then
listed in the output file and on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dcac_plugin.config import ConfigError
from dcac_plugin.data.datasets import DatasetLayoutError
from dcac_plugin.inference import FeatureExtractor, list_images, save_features
from dcac_plugin.inference.export import ExportError
from dcac_plugin.models.weights import WeightLoadError
from dcac_plugin.utils.files import WriteError
from dcac_plugin.utils.precision import INFERENCE_AMP_MODES

logger = logging.getLogger("dcac_plugin")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options every inference CLI shares (run folder or config + weights, device...)."""
    src = p.add_argument_group("model (a run folder, or a config file and a weight file)")
    src.add_argument("--run-dir", default="", help="run folder written by tools/train.py (config.yaml + checkpoint)")
    src.add_argument("--config-file", default="",
                     help="config yaml or config name (with --weights, instead of --run-dir)")
    src.add_argument("--weights", default="",
                     help="weight file: our checkpoint_epN.pth, an official DCAC source_*.pth or a torchreid "
                          "checkpoint; with --run-dir it replaces the run's own checkpoint")
    src.add_argument("--device", default="", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    src.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    src.add_argument("--amp", default="off", choices=INFERENCE_AMP_MODES,
                     help="autocast (faster; features then differ slightly from the evaluation's)")
    src.add_argument("--workers", type=int, default=0, help="image-reading worker processes (default 0)")
    src.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                     help="config overrides, e.g. --opts data.root /data/reid")


def check_model_args(args: argparse.Namespace) -> None:
    """Fail fast on a model choice that cannot work (before any image is read)."""
    if args.run_dir and args.config_file:
        raise ConfigError("give either --run-dir or --config-file with --weights, not both")
    if not args.run_dir and (not args.config_file or not args.weights):
        raise ConfigError("say which model: --run-dir RUN, or --config-file X together with --weights W")


def extractor_from_args(args: argparse.Namespace):
    """A :class:`dcac_plugin.FeatureExtractor` from :func:`add_model_args` options."""
    check_model_args(args)
    kw: dict[str, Any] = dict(device=args.device or None, batch_size=args.batch_size, amp=args.amp,
                              workers=args.workers)
    if args.run_dir:
        return FeatureExtractor.from_run(args.run_dir, weights=args.weights or None, opts=args.opts, **kw)
    return FeatureExtractor.from_config(args.config_file, args.weights, opts=args.opts, **kw)


def setup_cli_logging() -> None:
    """INFO to stderr (one line per record), unless logging was configured already."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def run_cli(main: Callable[[Sequence[str]], Any]) -> None:
    """Run ``main(argv)``; bad input exits 2 with one ``error:`` line (no traceback)."""
    setup_cli_logging()
    try:
        main(sys.argv[1:])
    except (ConfigError, DatasetLayoutError, FileNotFoundError, ValueError, WeightLoadError, ExportError,
            WriteError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Re-ID features of images with a trained model (the evaluation's "
                                            "features: same resize, normalisation and L2).")
    add_model_args(p)
    p.add_argument("--images", required=True, help="image folder (searched recursively) or a list file "
                                                   "(one path per line, relative to the list file)")
    p.add_argument("--output", required=True, help="output file, .npz or .safetensors")
    p.add_argument("--skip-bad", action="store_true", help="skip missing/corrupt images (listed in the output) "
                                                           "instead of stopping")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Extract and write features; returns ``{output, num_images, feature_dim, skipped}``."""
    args = parse_args(argv)
    check_model_args(args)
    if Path(args.output).suffix not in (".npz", ".safetensors"):
        raise ValueError(f"--output {args.output} must end in .npz or .safetensors")
    paths = list_images(args.images)
    fx = extractor_from_args(args)
    logger.info("extracting %d images from %s", len(paths), args.images)
    feats, kept, skipped = fx.extract(paths, skip_bad=args.skip_bad, progress=True)
    meta = {**fx.metadata(), "images": str(args.images)}
    out = save_features(args.output, feats, [paths[i] for i in kept], meta, skipped)
    msg = f"wrote {len(kept)} features of dimension {fx.feature_dim} to {out}"
    if skipped:
        msg += f"; skipped {len(skipped)} unreadable images: " + ", ".join(n for n, _ in skipped)
    sys.stdout.write(msg + "\n")
    return {"output": str(out), "num_images": len(kept), "feature_dim": fx.feature_dim,
            "skipped": [n for n, _ in skipped]}


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
