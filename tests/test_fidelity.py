"""Fidelity to the original code: the memory pass's resize, mixed precision."""

import logging
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from helpers.tiny import TINY

from dcac_plugin.config import get_default_config, merge_config
from dcac_plugin.data.manager import build_datamanager
from dcac_plugin.engine.build import build_engine

ROOT = Path(__file__).resolve().parents[1]


def _cfg(config: str, root: Path, tmp_path: Path, *opts: str):
    cfg = merge_config(get_default_config(), str(ROOT / config),
                       ["data.root", str(root), "data.save_dir", str(tmp_path), *TINY, *opts])
    cfg.freeze()
    return cfg


def _steps(transform: T.Compose) -> tuple[T.Resize, T.Normalize]:
    resize = next(t for t in transform.transforms if isinstance(t, T.Resize))
    norm = next(t for t in transform.transforms if isinstance(t, T.Normalize))
    return resize, norm


@pytest.mark.parametrize("test_interp", ["bilinear", "bicubic"])
def test_memory_pass_resizes_bicubic_whatever_the_test_interpolation(synthetic_tiny_root, tmp_path, test_interp):
    """The original's cluster loader (memory rebuild) always resizes bicubic (interpolation=3); only
    its single-source *test* loader is bilinear."""
    cfg = _cfg("configs/demo/clip_tiny.yaml", synthetic_tiny_root, tmp_path, "data.test_interpolation", test_interp)
    dm = build_datamanager(cfg, use_gpu=False, plugin_views=True, vae_view=False)
    engine = build_engine(cfg, dm, torch.device("cpu"), is_plugin=True)
    mem_resize, mem_norm = _steps(engine.memory_loader.dataset.transform)
    test_loader = dm.test_loader["msmt17"]["query"]
    test_resize, test_norm = _steps(test_loader.dataset.transform)
    assert mem_resize.interpolation == T.InterpolationMode.BICUBIC
    assert test_resize.interpolation == T.InterpolationMode[test_interp.upper()]
    assert tuple(mem_resize.size) == tuple(test_resize.size) == (128, 64)
    assert list(mem_norm.mean) == list(test_norm.mean) == [0.5, 0.5, 0.5]
    assert list(mem_norm.std) == list(test_norm.std) == [0.5, 0.5, 0.5]
    # no augmentation in the memory pass
    assert [type(t).__name__ for t in engine.memory_loader.dataset.transform.transforms] == \
        ["Resize", "ToTensor", "Normalize"]
    # the loader covers the training set in order
    assert len(engine.memory_loader.dataset) == dm.num_train_pids * 6


# ------------------------------------------------------------------------------ mixed precision


def test_amp_auto_resolves_to_fp16_with_a_scaler_on_cuda_and_off_on_cpu(caplog):
    """The original trains under fp16 autocast with a GradScaler; ``auto`` does so whenever the run's
    device is CUDA (the device is the function's input: no GPU needed to test the CUDA branch)."""
    from dcac_plugin.engine.dcac_engine import resolve_amp

    with caplog.at_level(logging.INFO, logger="dcac_plugin"):  # resolve_amp logs from utils.precision
        assert resolve_amp("auto", torch.device("cpu")) == ("off", False)
        assert resolve_amp("auto", torch.device("cuda")) == ("fp16", True)
        assert resolve_amp("auto", torch.device("cuda", 1)) == ("fp16", True)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("train.amp auto -> off") for m in msgs)
    assert any(m.startswith("train.amp auto -> fp16") and "GradScaler" in m for m in msgs)
    for dev in ("cpu", "cuda"):
        assert resolve_amp("off", torch.device(dev)) == ("off", False)
        assert resolve_amp("bf16", torch.device(dev)) == ("bf16", False)
    assert resolve_amp("fp16", torch.device("cuda")) == ("fp16", True)
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="auto, off, fp16 or bf16"):
        resolve_amp("half", torch.device("cpu"))


def test_amp_auto_engine_on_cpu_trains_in_fp32_and_logs_the_choice(synthetic_tiny_root, tmp_path, caplog):
    cfg = _cfg("configs/demo/clip_tiny.yaml", synthetic_tiny_root, tmp_path, "train.amp", "auto")
    dm = build_datamanager(cfg, use_gpu=False, plugin_views=True, vae_view=False)
    with caplog.at_level(logging.INFO, logger="dcac_plugin"):  # resolve_amp logs from utils.precision
        engine = build_engine(cfg, dm, torch.device("cpu"), is_plugin=True)
    assert engine.amp == "off" and not engine.scaler.is_enabled()
    assert any(r.getMessage().startswith("train.amp auto -> off") for r in caplog.records)


def test_amp_value_is_checked_when_the_config_is_loaded():
    from dcac_plugin.config import ConfigError
    from dcac_plugin.runner import load_config

    with pytest.raises(ConfigError, match="train.amp must be auto, off, fp16 or bf16; got 'half'"):
        load_config(None, ["train.amp", "half"])


def test_paper_configs_train_with_amp_auto():
    from dcac_plugin.runner import load_config

    paper = sorted(ROOT.glob("configs/dcac_*.yaml")) + sorted(ROOT.glob("configs/clip_baseline_*.yaml"))
    assert len(paper) == 32
    for path in paper:
        assert load_config(path).train.amp == "auto", path.name
    assert get_default_config().train.amp == "auto"
