"""One DCAC training step on a fixed global batch, run either as one process or under torchrun.

    python tests/helpers/dist_step_worker.py DATA_ROOT OUT_FILE                       # 1 process, batch 2B
    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/dist_step_worker.py DATA_ROOT OUT_FILE

Every rank takes its slice of the same global batch; rank 0 saves the gradients (DDP-averaged),
the trained tensors, the prototype memory, the BNNeck running mean and the loss terms after the
step, so a test can compare the two.
"""

import sys
from pathlib import Path

import torch

from dcac_plugin import distributed as dist_utils
from dcac_plugin.config import get_default_config, merge_config
from dcac_plugin.data.manager import build_datamanager
from dcac_plugin.engine.build import build_engine
from dcac_plugin.runner import set_seed

ROOT = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 16  # 4 identities x 4 images


def main(data_root: str, out_file: str) -> None:
    torch.set_num_threads(1)
    distributed, device = dist_utils.init_from_env(use_gpu=False)
    cfg = merge_config(get_default_config(), str(ROOT / "configs/demo/dcac_tiny.yaml"),
                       ["data.root", data_root, "data.workers", "0", "data.save_dir", str(Path(out_file).parent),
                        "data.targets", "market1501", "train.batch_size", "16"])
    set_seed(cfg.train.seed, True)
    dm = build_datamanager(cfg, use_gpu=False, plugin_views=True, vae_view=True)
    engine = build_engine(cfg, dm, device, is_plugin=True, distributed=distributed)
    engine.setup(device=device, save_dir=str(Path(out_file).parent), eval_kwargs={}, ddp=distributed)
    engine.epoch, engine.max_epoch = 0, 1
    engine.rebuild_memory()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH, 3, 128, 64, generator=g)
    x_vae = torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=g) * 2 - 1
    pids = torch.arange(4).repeat_interleave(4)
    world, rank = dist_utils.world_size(), dist_utils.rank()
    b = GLOBAL_BATCH // world
    sl = slice(rank * b, (rank + 1) * b)
    engine.model.train()
    summary = engine.forward_backward({"img": [x[sl], x_vae[sl]], "pid": pids[sl],
                                       "impath": [f"img{i}.jpg" for i in range(GLOBAL_BATCH)][sl]})
    losses = torch.tensor([summary["loss_id"], summary["loss_pcl"], summary["loss_ldm"]])
    if distributed:
        torch.distributed.all_reduce(losses)
        losses /= world
    if dist_utils.is_main_process():
        state = {k: v.detach().clone() for k, v in engine.model.trainable_state_dict().items()}
        grads = {n: p.grad.detach().clone() for n, p in engine.model.named_parameters() if p.grad is not None}
        torch.save({"state": state, "grads": grads, "memory": engine.memory.features.clone(), "losses": losses,
                    "bn_mean": engine.model.encoder.bnneck.running_mean.clone()}, out_file)
    dist_utils.barrier()
    dist_utils.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
