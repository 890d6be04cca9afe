"""Benchmark: feature-extraction throughput, and ONNX Runtime vs PyTorch for the real-size encoder.

Rows:

* ``extract`` — :class:`dcac_plugin.FeatureExtractor` end to end on JPEG files (decode, the
  evaluation's resize + normalise, forward, L2), batch ``--batch-size`` (64), images/s over
  ``--images`` generated files (256), and the model alone on already-transformed tensors.
  Models: ``dcac_tiny`` (128x64; its evaluation encoder is the tiny CLIP-ReID ViT) and the real-size
  ``dcac_vit_b16`` encoder (CLIP ViT-B/16 at 256x128, random weights: speed does not depend on them).
* ``onnx`` — the real-size encoder's evaluation path exported with ``tools/export.py``'s code
  (opset 17, dynamic batch) and run by onnxruntime (CPU provider) against PyTorch on the same inputs:
  latency at batch 1 (median of ``--repeats``), throughput at batch 64, and the max |difference|.
  PyTorch is timed before the onnxruntime session is created (its idle threads spin after a run).

Both engines run with ``--threads`` intra-op threads (default: all cores). The machine's load average
is printed before and after: figures taken on a shared machine are noisy.

    python benchmarks/bench_extract.py                       # everything (a few minutes on 2 cores)
    python benchmarks/bench_extract.py --rows extract --models dcac_tiny
    python benchmarks/bench_extract.py --markdown docs/bench_extract_run.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcac_plugin.config import get_default_config, merge_config  # noqa: E402

SIZES = {"dcac_tiny": (128, 64), "dcac_vit_b16": (256, 128)}


def _make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEG files of Market-1501's size (64x128), smooth random content."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((64, 128), Image.BILINEAR)
        p = folder / f"{i:04d}.jpg"
        img.save(p, quality=90)
        paths.append(str(p))
    return paths


def _extractor(name: str, folder: Path, batch: int):
    """A FeatureExtractor of ``name``'s evaluation encoder with random weights (saved as a checkpoint)."""
    from dcac_plugin.engine.build import build_plugin_model
    from dcac_plugin.inference import FeatureExtractor

    h, w = SIZES[name]
    cfg = merge_config(get_default_config(), None, ["model.name", name, "data.height", str(h), "data.width", str(w)])
    torch.manual_seed(0)
    model = build_plugin_model(cfg, 751, 0, encoder_only=True, load_clip=False)
    torch.save({"model": model.trainable_state_dict()}, folder / f"{name}.pth")
    (folder / f"{name}.yaml").write_text(cfg.dump())
    return FeatureExtractor.from_config(folder / f"{name}.yaml", folder / f"{name}.pth", device="cpu",
                                        batch_size=batch)


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_extract(name: str, paths: list[str], folder: Path, batch: int, repeats: int) -> list[dict]:
    fx = _extractor(name, folder, batch)
    n = len(paths)
    fx(paths[:batch])  # warm-up
    t_files = _timed(lambda: fx(paths), repeats)
    x = fx.preprocess(paths[:batch])
    t_model = _timed(lambda: fx._forward(x), repeats)
    return [
        {"model": name, "what": f"files -> features ({n} JPEGs, batch {batch})", "input": f"{fx.image_size}",
         "median_s": statistics.median(t_files), "images_per_s": n / statistics.median(t_files)},
        {"model": name, "what": f"model only (batch {batch}, transformed tensors)", "input": f"{fx.image_size}",
         "median_s": statistics.median(t_model), "images_per_s": batch / statistics.median(t_model)},
    ]


def bench_onnx(folder: Path, batch: int, repeats: int, threads: int) -> list[dict]:
    from dcac_plugin.inference.export import EvalPath, export_onnx, onnx_session

    fx = _extractor("dcac_vit_b16", folder, batch)
    path = export_onnx(fx, folder / "vit.onnx", dynamic_batch=True)
    module = EvalPath(fx.model, fx.normalize).eval()
    gen = torch.Generator().manual_seed(0)
    cases = [(1, "latency, batch 1", repeats), (batch, f"throughput, batch {batch}", max(2, repeats // 4))]
    inputs = {b: torch.randn(b, 3, *fx.image_size, generator=gen) for b, _, _ in cases}
    # PyTorch first, before the ONNX Runtime session exists: its idle worker threads spin for a while
    # after each run and would otherwise take the CPU from PyTorch on a small machine.
    ref, t_pt = {}, {}
    with torch.no_grad():
        for b, _, reps in cases:
            ref[b] = module(inputs[b]).numpy()  # also the warm-up
            t_pt[b] = _timed(lambda x=inputs[b]: module(x), reps)
    sess = onnx_session(path, threads=threads)
    rows = []
    for b, what, reps in cases:
        xn = inputs[b].numpy()
        got = sess.run(["features"], {"images": xn})[0]  # also the warm-up
        diff = float(np.abs(got - ref[b]).max())
        t_ort = _timed(lambda xn=xn: sess.run(["features"], {"images": xn}), reps)
        for engine, t in (("PyTorch", t_pt[b]), ("ONNX Runtime", t_ort)):
            rows.append({"model": "dcac_vit_b16 encoder", "what": f"{engine}: {what}", "input": str(fx.image_size),
                         "median_s": statistics.median(t), "images_per_s": b / statistics.median(t),
                         "max_abs_diff": diff})
    return rows


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| model | measurement | input (H, W) | median time (s) | images/s | max abs diff |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        d = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else ""
        lines.append(f"| {r['model']} | {r['what']} | {r['input']} | {r['median_s']:.4f} | {r['images_per_s']:.1f} | "
                     f"{d} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="extract,onnx", help="comma list of: extract, onnx")
    p.add_argument("--models", default="dcac_tiny,dcac_vit_b16", help="models of the extract rows")
    p.add_argument("--images", type=int, default=256, help="generated JPEG files for the extract rows")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (batch-64 ONNX rows: a quarter)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (torch and ORT)")
    p.add_argument("--markdown", default="", help="also write the table to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rows_wanted = set(args.rows.split(","))
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "extract" in rows_wanted:
            (folder / "img").mkdir()
            paths = _make_images(folder / "img", args.images)
            for name in args.models.split(","):
                rows += bench_extract(name, paths, folder, args.batch_size, args.repeats)
        if "onnx" in rows_wanted:
            rows += bench_onnx(folder, args.batch_size, args.repeats, args.threads)
    load_after = os.getloadavg()
    import onnxruntime

    header = (f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {platform.machine()}, "
              f"{os.cpu_count()} cores, {args.threads} threads; load average (1/5/15 min) before "
              f"{'/'.join(f'{v:.2f}' for v in load_before)}, after {'/'.join(f'{v:.2f}' for v in load_after)}")
    md = to_markdown(rows, header)
    sys.stdout.write(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    return rows


if __name__ == "__main__":
    main()
