"""``python tools/export.py --run-dir RUN --format onnx --output model.onnx [--opset N] [--dynamic-batch]``.

Exports the evaluation path (``images`` float32 ``[B, 3, H, W]`` already resized and normalised
-> ``features`` float32 ``[B, D]``, after the BNNeck for the plugin's models, L2-normalised when
the run's evaluation normalises; see :mod:`dcac_plugin.inference.export`) and checks it right away
with onnxruntime against PyTorch on random inputs and on real images, printing the largest
absolute difference. Input size, mean/std, interpolation and feature dimension are stored in the
ONNX ``metadata_props``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dcac_plugin.cli.extract import add_model_args, extractor_from_args, run_cli
from dcac_plugin.data.datasets import DatasetLayoutError
from dcac_plugin.data.manager import test_split
from dcac_plugin.inference import list_images
from dcac_plugin.inference.export import DEFAULT_OPSET, check_onnx, export_onnx, read_metadata

logger = logging.getLogger("dcac_plugin")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a trained re-ID model's evaluation path to ONNX and check it.")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    p.add_argument("--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (default: batch fixed to 1)")
    p.add_argument("--check-images", default="",
                   help="images for the check (folder or list file; default: the first query images of the "
                        "run's first target, when its data is on disk)")
    p.add_argument("--num-check", type=int, default=8, help="real images to check (default 8)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted |onnxruntime - PyTorch| (default 1e-4); above it the command fails")
    return p.parse_args(argv)


def _check_images(fx, args: argparse.Namespace) -> list[str]:
    if args.check_images:
        return list_images(args.check_images)[: args.num_check]
    for target in fx.cfg.data.targets:
        try:
            query, _ = test_split(fx.cfg, target)
        except (DatasetLayoutError, FileNotFoundError, ValueError) as exc:
            logger.info("no real images for the check from '%s' (%s)", target, str(exc).splitlines()[0])
            continue
        return [it[0] for it in query[: args.num_check]]
    return []


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Export and check; returns ``{output, max_abs_diff_random, max_abs_diff_images, metadata}``."""
    args = parse_args(argv)
    if Path(args.output).suffix != ".onnx":
        raise ValueError(f"--output {args.output} must end in .onnx")
    fx = extractor_from_args(args)
    out = export_onnx(fx, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    fixed = None if args.dynamic_batch else 1
    gen = torch.Generator().manual_seed(0)
    diff_random = check_onnx(fx, out, torch.randn(4, 3, *fx.image_size, generator=gen), fixed_batch=fixed)
    paths = _check_images(fx, args)
    diff_images = check_onnx(fx, out, fx.preprocess(paths), fixed_batch=fixed) if paths else None
    lines = [f"exported {fx.model_name} to {out} (opset {args.opset}, "
             f"{'dynamic batch' if args.dynamic_batch else 'batch 1'}, input [B, 3, {fx.image_size[0]}, "
             f"{fx.image_size[1]}], feature {fx.feature_dim}{', L2-normalised' if fx.normalize else ''})",
             f"onnxruntime vs PyTorch, max abs difference: {diff_random:.3g} on 4 random inputs"
             + (f", {diff_images:.3g} on {len(paths)} real images" if paths else
                " (no real images found: pass --check-images DIR)")]
    sys.stdout.write("\n".join(lines) + "\n")
    worst = max(diff_random, diff_images or 0.0)
    if worst > args.tolerance:
        raise ValueError(f"the exported model differs from PyTorch by {worst:.3g} > --tolerance {args.tolerance}")
    return {"output": str(out), "max_abs_diff_random": diff_random, "max_abs_diff_images": diff_images,
            "num_check_images": len(paths), "metadata": read_metadata(out)}


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
