"""``python tools/pretrain_priors.py --output DIR``: make the tiny CLIP and SD priors (:mod:`dcac_plugin.priors`)."""

from __future__ import annotations

import argparse
import logging
import time

import torch

from dcac_plugin.data.corpus import CorpusSpec
from dcac_plugin.priors import PRIORS_DIR, PretrainConfig, pretrain_priors

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    d = PretrainConfig()
    c = CorpusSpec()
    p = argparse.ArgumentParser(
        prog="pretrain_priors",
        description="Generate the captioned pretraining corpus (a domain the benchmark never contains) and "
        "train the tiny CLIP (both towers) and the tiny SD (VAE, text-conditioned UNet) on it. Writes "
        "clip_tiny.safetensors (OpenAI CLIP key layout), sd_tiny.safetensors (CompVis single-file layout) "
        "and priors.json (sanity figures, wall times, sha256). Seeded; resumable (checkpoints in "
        "<output>/work).",
    )
    p.add_argument("--output", default=str(PRIORS_DIR), help="output folder (default: the shipped priors' folder)")
    p.add_argument("--work", default="output/priors-work",
                   help="corpus cache and checkpoints (default output/priors-work; kept out of the package)")
    p.add_argument("--grid", default=None, help="sample-grid PNG (default <output>/samples.png)")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed")
    p.add_argument("--corpus-seed", type=int, default=c.seed, help="corpus generation seed")
    p.add_argument("--train-ids", type=int, default=c.train_ids, help="corpus training identities (8 images each)")
    p.add_argument("--heldout-ids", type=int, default=c.heldout_ids, help="held-out identities (sanity figures)")
    for name in ("clip_steps", "vae_steps", "unet_steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name),
                       help=f"training steps (default {getattr(d, name)})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a loaded machine more threads are slower, and one "
                   "thread makes the files reproducible bit for bit)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the three stages; log the figures and the wall time. Returns the exit status (0)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = PretrainConfig(seed=args.seed, clip_steps=args.clip_steps, vae_steps=args.vae_steps,
                         unet_steps=args.unet_steps)
    spec = CorpusSpec(seed=args.corpus_seed, train_ids=args.train_ids, heldout_ids=args.heldout_ids)
    report = pretrain_priors(args.output, cfg, spec, grid=args.grid, work=args.work)
    for name, f in report["files"].items():
        logger.info("%s: %d bytes, sha256 %s", name, f["bytes"], f["sha256"])
    logger.info("wall time: %s; this call %.0f s", report["wall_time_s"], time.perf_counter() - t0)
    return 0
