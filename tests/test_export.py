"""ONNX export: onnxruntime equals PyTorch (< 1e-4 fp32), metadata, fixed/dynamic batch, clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from components import require_import

from dcac_plugin.cli import export as export_cli
from dcac_plugin.config import get_default_config, merge_config
from dcac_plugin.inference import FeatureExtractor, list_images
from dcac_plugin.inference.export import ExportError, check_onnx, export_onnx, onnx_session, read_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _onnxruntime():
    """Every test here needs onnxruntime: skipped without it, failed under CI (no collection error)."""
    require_import("onnxruntime")


def _config_file(tmp_path: Path, name: str, *opts: str, base: str = "") -> Path:
    cfg = merge_config(get_default_config(), str(ROOT / base) if base else None, list(opts))
    path = tmp_path / f"{name}.yaml"
    path.write_text(cfg.dump())
    return path


@pytest.fixture(scope="module")
def osnet_weights(tmp_path_factory):
    """A torchreid osnet_x0_25 checkpoint (random weights, 7 identities) and its config."""
    from dcac_plugin._torchreid import tr

    d = tmp_path_factory.mktemp("osnet")
    torch.manual_seed(0)
    model = tr.models.build_model("osnet_x0_25", 7, loss="softmax", pretrained=False)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        model(torch.randn(8, 3, 128, 64))
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, d / "osnet.pth.tar")
    return _config_file(d, "osnet", base="configs/demo/osnet.yaml"), d / "osnet.pth.tar"


def _real_images(root: Path, n: int = 5) -> list[str]:
    return list_images(root / "market1501" / "Market-1501-v15.09.15" / "query")[:n]


def test_osnet_export_matches_pytorch(osnet_weights, synthetic_tiny_root, tmp_path):
    config, weights = osnet_weights
    fx = FeatureExtractor.from_config(config, weights, device="cpu")
    out = export_onnx(fx, tmp_path / "osnet.onnx", dynamic_batch=True)
    images = _real_images(synthetic_tiny_root)
    x = fx.preprocess(images)
    assert check_onnx(fx, out, torch.randn(3, 3, 128, 64)) < 1e-4
    assert check_onnx(fx, out, x) < 1e-4
    # the ONNX output is exactly the extractor's feature (L2-normalised, as the run evaluates)
    got = onnx_session(out).run(["features"], {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, fx(images).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    meta = read_metadata(out)
    assert meta["input_height"] == "128" and meta["input_width"] == "64" and meta["feature_dim"] == "512"
    assert meta["resize_interpolation"] == "bilinear" and meta["l2_normalized"] == "true"
    assert meta["pixel_mean"] == "[0.485, 0.456, 0.406]" and meta["pixel_std"] == "[0.229, 0.224, 0.225]"
    assert meta["model_name"] == "osnet_x0_25" and meta["dynamic_batch"] == "true" and meta["opset"] == "17"


def test_export_cli_on_a_run_folder_fixed_batch(osnet_weights, synthetic_tiny_root, tmp_path, capsys):
    config, weights = osnet_weights
    res = export_cli.main(["--config-file", str(config), "--weights", str(weights), "--format", "onnx", "--output",
                           str(tmp_path / "m.onnx"), "--opts", "data.root", str(synthetic_tiny_root),
                           "data.targets", "market1501"])
    assert res["max_abs_diff_random"] < 1e-4 and res["max_abs_diff_images"] < 1e-4 and res["num_check_images"] == 8
    out = capsys.readouterr().out
    assert "max abs difference" in out and "8 real images" in out
    sess = onnx_session(tmp_path / "m.onnx")
    assert sess.get_inputs()[0].shape == [1, 3, 128, 64]
    assert res["metadata"]["dynamic_batch"] == "false"


def test_tiny_plugin_model_export(tmp_path, synthetic_tiny_root):
    from dcac_plugin.engine.build import build_plugin_model

    config = _config_file(tmp_path, "clip", base="configs/demo/clip_tiny.yaml")
    cfg = merge_config(get_default_config(), str(config))
    model = build_plugin_model(cfg, 5, 0, encoder_only=True, load_clip=False)
    torch.save({"model": model.trainable_state_dict()}, tmp_path / "ckpt.pth")
    res = export_cli.main(["--config-file", str(config), "--weights", str(tmp_path / "ckpt.pth"), "--output",
                           str(tmp_path / "c.onnx"), "--dynamic-batch", "--check-images",
                           str(synthetic_tiny_root / "market1501" / "Market-1501-v15.09.15" / "query")])
    assert res["max_abs_diff_random"] < 1e-4 and res["max_abs_diff_images"] < 1e-4
    meta = res["metadata"]
    assert meta["resize_interpolation"] == "bicubic" and meta["pixel_mean"] == "[0.5, 0.5, 0.5]"
    assert meta["feature_dim"] == "32" and meta["model_name"] == "clip_reid_tiny"


def test_export_errors_name_the_operator(osnet_weights, tmp_path, monkeypatch):
    config, weights = osnet_weights
    fx = FeatureExtractor.from_config(config, weights, device="cpu")

    def fail(*a, **k):
        raise RuntimeError("Exporting the operator 'aten::fancy_op' to ONNX opset version 9 is not supported.")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(ExportError, match=r"aten::fancy_op.*--opset.*dynamo=False"):
        export_onnx(fx, tmp_path / "x.onnx", opset=9)
    assert not (tmp_path / "x.onnx").exists() and not list(tmp_path.glob(".x.onnx*"))
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_cli.main(["--config-file", str(config), "--weights", str(weights), "--output", str(tmp_path / "x.pt")])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcac_vit_b16", "clip_reid_vit_b16"])
def test_real_size_vit_b16_export(name, tmp_path):
    """The paper-size encoder (CLIP ViT-B/16 at 256x128, random weights; no CLIP or SD file)."""
    from dcac_plugin.engine.build import build_plugin_model

    config = _config_file(tmp_path, name, "model.name", name)
    cfg = merge_config(get_default_config(), str(config))
    torch.manual_seed(0)
    model = build_plugin_model(cfg, 751, 0, encoder_only=True, load_clip=False)
    torch.save({"model": model.trainable_state_dict()}, tmp_path / "ckpt.pth")
    fx = FeatureExtractor.from_config(config, tmp_path / "ckpt.pth", device="cpu")
    assert fx.feature_dim == 512 and fx.image_size == (256, 128) and fx.model.diffusion is None
    out = export_onnx(fx, tmp_path / "vit.onnx", dynamic_batch=True)
    assert check_onnx(fx, out, torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))) < 1e-4
    assert read_metadata(out)["feature_dim"] == "512"
