"""ONNX export of a trained model's evaluation path.

The exported graph maps an image tensor that is ALREADY resized and normalised to the feature the
evaluation ranks::

    input  "images":   float32 [B, 3, H, W], RGB, resized to H x W (data.height x data.width) with the
                       run's interpolation, scaled to [0, 1], then (x - mean) / std per channel
    output "features": float32 [B, D], the model's eval-mode embedding (plugin models: after the
                       BNNeck), L2-normalised when the run's evaluation normalises
                       (test.normalize_feature)

Resizing and normalisation stay outside the graph; their settings are stored in the model's
``metadata_props`` (:func:`export_metadata`). The legacy TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``) is used: it needs nothing beyond ``onnx`` and works
offline; the newer dynamo exporter also needs ``onnxscript``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcac_plugin._version import __version__
from dcac_plugin.utils.files import write_error
from dcac_plugin.utils.io import atomic_open

logger = logging.getLogger(__name__)

__all__ = ["EvalPath", "ExportError", "check_onnx", "export_metadata", "export_onnx"]

DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The ONNX exporter could not convert the model; the message names the operator if it can."""


class EvalPath(torch.nn.Module):
    """The evaluation path as one module: ``images [B, 3, H, W] -> features [B, D]``.

    Args:
        model: the eval-mode model (a plugin ``DCAC`` or a torchreid model).
        normalize: L2-normalise the output (the run's ``test.normalize_feature``).
    """

    def __init__(self, model: torch.nn.Module, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = bool(normalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.model(images).float()
        return F.normalize(f, p=2, dim=1) if self.normalize else f


def _cpu_eval_path(fx: Any) -> EvalPath:
    """:class:`EvalPath` of a CPU copy of the extractor's model (the extractor keeps its device)."""
    model = fx.model if fx.device.type == "cpu" else copy.deepcopy(fx.model).cpu()
    return EvalPath(model, fx.normalize).eval()


def export_metadata(fx: Any, opset: int, dynamic_batch: bool) -> dict[str, str]:
    """``metadata_props`` of the exported model: preprocessing, feature, provenance (strings)."""
    h, w = fx.image_size
    meta = {
        "input_name": "images",
        "input_layout": "NCHW float32 RGB",
        "input_height": str(h),
        "input_width": str(w),
        "resize_interpolation": fx.interpolation,
        "pixel_range": "[0, 1] before normalisation (uint8 / 255)",
        "pixel_mean": json.dumps(fx.pixel_mean),
        "pixel_std": json.dumps(fx.pixel_std),
        "preprocessing": (f"RGB image -> resize to {h}x{w} ({fx.interpolation}) -> /255 -> (x - pixel_mean) / "
                          "pixel_std -> NCHW"),
        "output_name": "features",
        "feature_dim": str(fx.feature_dim),
        "l2_normalized": "true" if fx.normalize else "false",
        "dist_metric": fx.metric,
        "model_name": fx.model_name,
        "weights_file": Path(fx.weights).name,
        "dynamic_batch": "true" if dynamic_batch else "false",
        "opset": str(opset),
    }
    meta["dcac_plugin_version"] = __version__
    return meta


def _op_from(message: str) -> str | None:
    for pat in (r"operator '?([A-Za-z_:.]+)'? to ONNX", r"Exporting the operator '?([A-Za-z_:.]+)'?",
                r"ONNX export of operator ([A-Za-z_:.]+)", r"(aten::[A-Za-z_0-9.]+)"):
        m = re.search(pat, message)
        if m:
            return m.group(1)
    return None


def export_onnx(fx: Any, output: str | os.PathLike, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                batch: int = 1) -> Path:
    """Export ``fx``'s evaluation path to ONNX (atomically) with :func:`export_metadata`.

    Args:
        fx: a :class:`dcac_plugin.FeatureExtractor` (its model, input size, normalisation).
        output: the ``.onnx`` file.
        opset: ONNX opset version.
        dynamic_batch: a free batch dimension; otherwise the batch is fixed to ``batch``.
        batch: example batch size (and the fixed batch without ``dynamic_batch``).

    Raises:
        ExportError: the exporter failed; the message names the operator when the exporter does and
            suggests what to try.
        ValueError: a model with SIE (camera ids as a second input) is not exportable.
    """
    import onnx  # optional dependency (extra "export"): imported only when exporting or reading an .onnx file

    if fx.uses_sie:
        raise ValueError("models trained with SIE (dcac.sie True) take camera ids as a second input; ONNX export "
                         "supports models without SIE (the paper's setting)")
    module = _cpu_eval_path(fx)
    example = torch.randn(batch, 3, *fx.image_size)
    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_error(out, exc, "create the folder of") or exc) from None
    tmp = out.with_name(f".{out.name}.export.tmp")
    axes = {"images": {0: "batch"}, "features": {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the legacy exporter
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["features"],
                              dynamic_axes=axes,
                              do_constant_folding=True, external_data=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with advice
        with contextlib.suppress(OSError):  # (on a read-only disk even a missing file cannot be unlinked)
            tmp.unlink(missing_ok=True)
        err = write_error(out, exc)
        if err is not None:  # full disk, no permission...: not the exporter's fault
            raise err from None
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        op = _op_from(str(exc))
        hint = (f"operator {op} is not supported at opset {opset}: try a higher --opset (e.g. {opset + 1} .. 20)"
                if op else f"try another --opset (now {opset})")
        raise ExportError(f"ONNX export of {fx.model_name} failed: {msg}. {hint}; the legacy TorchScript exporter "
                          "(dynamo=False) is used here, the dynamo exporter (torch.onnx.export(..., dynamo=True)) "
                          "needs the onnxscript package") from exc
    proto = onnx.load(str(tmp))
    tmp.unlink(missing_ok=True)
    for k, v in export_metadata(fx, opset, dynamic_batch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    with atomic_open(out, "wb") as f:
        f.write(proto.SerializeToString())
    logger.info("exported %s to %s (opset %d, %s batch, %.1f MB)", fx.model_name, out, opset,
                "dynamic" if dynamic_batch else f"fixed {batch}", out.stat().st_size / 1e6)
    return out


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` (``threads`` intra-op threads; None = onnxruntime's default)."""
    import onnxruntime as ort  # optional dependency (extra "export"): imported only to run an exported model

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_onnx(fx: Any, path: str | os.PathLike, inputs: torch.Tensor, fixed_batch: int | None = None) -> float:
    """Max ``|onnxruntime - PyTorch|`` of the features of ``inputs`` ``[N, 3, H, W]`` (preprocessed).

    With ``fixed_batch`` the inputs are fed in batches of that size (an export without
    ``--dynamic-batch``; a short last batch is padded and the padding dropped).
    """
    sess = onnx_session(path)
    module = _cpu_eval_path(fx)
    step = fixed_batch or inputs.shape[0]
    worst = 0.0
    for a in range(0, inputs.shape[0], step):
        x = inputs[a:a + step]
        n = x.shape[0]
        if fixed_batch and n < fixed_batch:
            x = torch.cat([x, x[-1:].expand(fixed_batch - n, -1, -1, -1)])
        with torch.no_grad():
            ref = module(x.float()).numpy()[:n]
        got = sess.run(["features"], {"images": x.float().numpy()})[0][:n]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx  # optional dependency (extra "export"): imported only when exporting or reading an .onnx file

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
