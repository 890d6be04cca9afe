"""benchmarks/gpu_check.py on the CPU (dry run), and the CUDA paths it measures (marked ``cuda``:
collected only where CUDA exists, see conftest.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

TINY = tiny.TINY + ["train.print_freq", "1"]


@pytest.mark.slow
def test_dry_run_on_cpu_runs_every_check_and_writes_the_table(tmp_path):
    out = tmp_path / "gpu.md"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu", "--dry-run",
                        "--only", "steps,demo,eval,ddp,onnx", "--steps", "1", "--warmup", "1",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    by_check: dict[str, list[str]] = {}
    for line in rows:
        check, setting, status, _ = [c.strip() for c in line.strip("|").split("|", 3)]
        by_check.setdefault(check, []).append(setting)
        assert status in ("ok", "n/a"), line
        assert status == "ok" or check == "onnx", line
    # every step row of both models (8) plus one build row per model
    assert len(by_check["steps"]) == len(gpu_check.STEP_ROWS) + 2
    assert any("train.amp auto (off)" in s for s in by_check["steps"])  # auto resolves to fp32 on the CPU
    assert any("train.amp bf16 (bf16)" in s for s in by_check["steps"])
    assert len(by_check["demo"]) == 2 and len(by_check["eval"]) == 2
    assert by_check["ddp"] == ["torchrun --nproc_per_node 1 (gloo)"]
    text = out.read_text()
    assert "dry run: toy sizes" in text and "| steps | DCAC, train.amp auto + VAE-moment cache" in text


def test_cuda_requested_without_cuda_is_one_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--device", "cuda"])
    assert str(e.value).startswith("error: --device cuda but torch.cuda.is_available() is False")


def test_unknown_check_is_refused():
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--device", "cpu", "--only", "steps,warp"])
    assert "choose from steps,demo,eval,ddp,onnx" in str(e.value)


# --------------------------------------------------------------------------------------------- CUDA
def _tiny_engine(root: Path, tmp_path: Path, amp: str):
    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.build import build_engine
    from dcac_plugin.runner import load_config

    cfg = load_config(ROOT / "configs/demo/dcac_tiny.yaml",
                      ["data.root", str(root), "data.save_dir", str(tmp_path), "train.amp", amp, *TINY])
    dev = torch.device("cuda")
    dm = build_datamanager(cfg, use_gpu=True, plugin_views=True, vae_view=True)
    engine = build_engine(cfg, dm, dev, is_plugin=True)
    engine.setup(device=dev, save_dir=str(tmp_path), eval_kwargs={})
    return engine, dm


@pytest.mark.cuda
@pytest.mark.parametrize("amp,dtype,scaler", [("auto", torch.float16, True), ("bf16", torch.bfloat16, False)])
def test_engine_step_on_cuda_runs_in_the_requested_precision(synthetic_tiny_root, tmp_path, amp, dtype, scaler):
    engine, dm = _tiny_engine(synthetic_tiny_root, tmp_path, amp)
    seen = []
    # an MLP layer of the ViT (attention's out_proj is not called through forward)
    linear = next(m for n, m in engine.model.encoder.named_modules() if isinstance(m, torch.nn.Linear) and "mlp" in n)
    linear.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert engine.scaler.is_enabled() is scaler
    before = {k: v.detach().clone() for k, v in engine.model.encoder.named_parameters() if v.requires_grad}
    engine.on_epoch_start()
    batch = next(iter(dm.train_loader))
    moved: list[str] = []
    for step in range(30):  # fp16: the GradScaler skips the first steps while it lowers its scale
        out = engine.forward_backward(batch)
        engine.global_step += 1
        moved = [k for k, v in engine.model.encoder.named_parameters()
                 if v.requires_grad and not torch.equal(v, before[k])]
        if moved and step >= 2:
            break
    assert seen and set(seen) == {dtype}  # autocast really ran in that precision
    assert all(np.isfinite(v) for v in out.values())
    assert moved, "no encoder parameter changed after 30 steps"
    assert all(p.device.type == "cuda" for p in engine.model.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("rerank", [False, True])
def test_evaluation_on_cuda_equals_cpu(rerank):
    from dcac_plugin.evaluation import evaluate_features

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(40, 64, generator=g)
    q_pids, g_pids = np.arange(40).repeat(2), np.arange(40).repeat(6)
    qf = centers[q_pids] + 1.5 * torch.randn(80, 64, generator=g)
    gf = centers[g_pids] + 1.5 * torch.randn(240, 64, generator=g)
    q_cams, g_cams = np.zeros(80, dtype=np.int64), np.ones(240, dtype=np.int64)
    kw = dict(rerank=True, k1=20, k2=6) if rerank else {}
    cpu = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, **kw)
    gpu = evaluate_features(qf.cuda(), gf.cuda(), q_pids, g_pids, q_cams, g_cams, **kw)
    assert 5 < cpu["mAP"] < 95
    assert gpu["mAP"] == pytest.approx(cpu["mAP"], abs=1e-3)
    assert gpu["cmc"] == pytest.approx(cpu["cmc"], abs=1e-3)


@pytest.mark.cuda
def test_train_cli_on_cuda_records_the_device(synthetic_tiny_root, tmp_path):
    from dcac_plugin.cli.train import main

    rec = main(["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), "data.root", str(synthetic_tiny_root),
                "data.save_dir", str(tmp_path / "run"), "train.max_epoch", "1", *TINY])
    assert rec["status"] == "ok" and rec["device"].startswith("cuda:")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["device"] == rec["device"]
