"""DDP on CPU with gloo and 2 processes (torchrun): same update as one process, and a full run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcac_plugin.data.samplers import DistributedIdentitySampler

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "helpers" / "dist_step_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), *args]


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_step_equals_one_process_on_the_concatenated_batch(synthetic_tiny_root, tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _check(subprocess.run([sys.executable, str(WORKER), str(synthetic_tiny_root), str(one)], env=_env(),
                          capture_output=True, text=True, timeout=300))
    _check(subprocess.run(_torchrun(str(WORKER), str(synthetic_tiny_root), str(two)), env=_env(),
                          capture_output=True, text=True, timeout=300))
    a = torch.load(one, weights_only=True)
    b = torch.load(two, weights_only=True)
    torch.testing.assert_close(b["losses"], a["losses"], rtol=1e-5, atol=1e-6)
    # The gradient that reaches Adam is the same (DDP's average over ranks = the batch mean).
    assert a["grads"].keys() == b["grads"].keys()
    assert any("lora_B" in k for k in a["grads"]) and any("prompt_emb" in k for k in a["grads"])
    # (Tensors whose true gradient is zero — attn2 q/k LoRA with one context token, ln_post.bias in
    # front of the BNNeck — carry float noise of ~1e-6, hence the absolute tolerance.)
    for k, g in a["grads"].items():
        torch.testing.assert_close(b["grads"][k], g, rtol=1e-3, atol=1e-5, msg=k)
    # Memory (updated from the all-gathered batch) and BN statistics (global batch) agree too.
    torch.testing.assert_close(b["memory"], a["memory"], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(b["bn_mean"], a["bn_mean"], rtol=1e-4, atol=1e-6)
    # Adam's update: equal wherever the gradient is not float noise (attention key biases have a zero
    # true gradient, and Adam's first step turns noise into +-lr).
    lr = 3e-4
    compared = 0
    for k, v in a["state"].items():
        g = a["grads"].get(k)
        if g is None:
            continue
        real = g.abs() > 1e-4
        compared += int(real.sum())
        torch.testing.assert_close(b["state"][k][real], v[real], rtol=0, atol=0.05 * lr, msg=k)
    assert compared > 1000


@pytest.mark.slow
def test_torchrun_short_run_writes_one_results_file(synthetic_tiny_root, tmp_path):
    out = tmp_path / "ddp_run"
    cmd = _torchrun(str(ROOT / "tools" / "train.py"), "--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"),
                    "data.root", str(synthetic_tiny_root), "data.save_dir", str(out), "data.workers", "0",
                    "train.batch_size", "16", "train.max_epoch", "1", "test.batch_size", "64")
    _check(subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600))
    rec = json.loads((out / "results.json").read_text())
    assert rec["world_size"] == 2 and rec["status"] == "ok"
    assert set(rec["results"]["msmt17"]) == {"mAP", "rank1", "rank5", "rank10", "mINP"}
    assert (out / "checkpoint_ep1.pth").is_file()
    assert (out / "train.log").read_text().count("epoch 1 done") == 1  # rank 0 logs alone


@pytest.mark.parametrize("world", [1, 2, 3])
def test_distributed_sampler_splits_full_pk_batches(world):
    data = [(f"{i}.jpg", i // 5, 0, 0) for i in range(60)]  # 12 ids x 5 images
    samplers = [DistributedIdentitySampler(data, 8, 4, num_replicas=world, rank=r, seed=3) for r in range(world)]
    full = samplers[0].global_batches()
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == len(per_rank[0]) for p in per_rank)
    for r, idx in enumerate(per_rank):
        batches = [idx[i:i + 8] for i in range(0, len(idx), 8)]
        assert batches == full[r::world][: len(full) // world]
        for bt in batches:  # 2 identities x 4 images each
            pids = [data[i][1] for i in bt]
            assert len(set(pids)) == 2 and all(pids.count(p) == 4 for p in set(pids))
    samplers[0].set_epoch(1)
    assert samplers[0].global_batches() != full
