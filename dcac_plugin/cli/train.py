"""``python tools/train.py --config-file X [--eval-only] [--resume] [key value ...]``.

Trains and/or evaluates one model under one protocol and writes, into ``data.save_dir``:
the merged ``config.yaml``, ``train.log``, tensorboard events, checkpoints and ``results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from dcac_plugin.config import ConfigError, as_list, config_hash, get_default_config, merge_config
from dcac_plugin.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger("dcac_plugin")

RESULTS_SCHEMA_VERSION = 1

# The tiny models share the method, not the ViT-B/16 of the paper's rows: label them apart.
TINY_METHODS = {"dcac_tiny": "DCAC (tiny)", "clip_reid_tiny": "CLIP baseline (tiny ViT, no diffusion branch)"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train / evaluate DCAC or a torchreid baseline (torchreid plugin).")
    p.add_argument("--config-file", default="", help="yaml file overriding the defaults")
    p.add_argument("--eval-only", action="store_true", help="evaluate model.load_weights (or the latest checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in data.save_dir")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: key value ...")
    return p.parse_args(argv)


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Defaults + file + overrides, frozen."""
    cfg = merge_config(get_default_config(), args.config_file or None, args.opts)
    if args.eval_only:
        cfg.test.evaluate = True
    if cfg.test.visrank:
        raise ConfigError("test.visrank is not supported by the plugin's engines; set it False")
    if cfg.data.type != "image":
        raise ConfigError(f"data.type must be 'image' (video re-ID is not supported); got '{cfg.data.type}'")
    if args.resume and not cfg.model.resume:
        cfg.model.resume = "auto"
    cfg.freeze()
    return cfg


def setup_logging(save_dir: Path, main_process: bool = True) -> logging.Handler:
    """Log to ``save_dir/train.log`` and stderr; returns the file handler (removed at the end).

    Under DDP only rank 0 writes the log; the other ranks log warnings and errors to stderr.
    """
    save_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
        return logging.NullHandler()
    fh = logging.FileHandler(save_dir / "train.log", encoding="utf-8")
    fh.setFormatter(fmt)
    root = logging.getLogger()
    root.addHandler(fh)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        root.addHandler(sh)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return fh


def set_seed(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def protocol_of(cfg: CfgNode, target: str | None = None) -> dict[str, Any]:
    """Protocol description for the results record (benchmark = real or synthetic data)."""
    from dcac_plugin.protocols import DATASET_CODES

    sources, targets = as_list(cfg.data.sources), as_list(cfg.data.targets)
    src = "+".join(DATASET_CODES.get(s, s) for s in sources)
    marker = Path(cfg.data.root) / "SYNTHETIC.json"
    variants: dict[str, Any] = {}
    if "msmt17" in sources + targets:
        variants["msmt17_include_val"] = bool(cfg.data.msmt17_include_val)
    if any(n in ("cuhk03", "cuhk03_np") for n in sources + targets):
        variants["cuhk03"] = "labeled" if cfg.cuhk03.labeled_images else "detected"
    variants["test_interpolation"] = cfg.data.test_interpolation
    return {
        "key": f"{src}->{'+'.join(DATASET_CODES.get(t, t) for t in targets)}",
        "kind": "multi_source" if len(sources) > 1 else "single_source",
        "sources": sources,
        "targets": targets,
        "benchmark": "synthetic" if marker.is_file() else "real",
        "variants": variants,
    }


def model_kwargs(cfg: CfgNode, num_cams: int) -> dict[str, Any]:
    """Builder keyword arguments of the plugin's models, from the ``dcac`` node."""
    d = cfg.dcac
    extra: dict[str, Any] = {"vision": d.vision} if d.vision else {}
    return dict(
        **extra,
        clip_weights=d.clip_weights,
        image_size=(cfg.data.height, cfg.data.width),
        stride=d.stride,
        freeze_patch_proj=d.freeze_patch_proj,
        num_cams=num_cams if d.sie else 0,
        sie_coef=d.sie_coef,
        bnneck_momentum=d.bnneck_momentum,
        sd_weights=d.sd.weights,
        sd_use_ema=d.sd.use_ema,
        lora_rank=d.sd.lora_rank,
        lora_alpha=d.sd.lora_alpha,
        qkv_random_bias=d.sd.qkv_random_bias,
        prob_type=d.cond.prob_type,
        tau=d.cond.tau,
        bottleneck=d.cond.bottleneck,
        prompt_init_std=d.cond.init_std,
        hard_label=d.cond.hard_label,
        vae_image_size=d.sd.vae_image_size,
        num_train_timesteps=d.sd.num_train_timesteps,
        beta_start=d.sd.beta_start,
        beta_end=d.sd.beta_end,
    )


def plugin_model_name(cfg: CfgNode) -> str:
    """``dcac_*`` with ``dcac.use_diffusion False`` is the CLIP baseline ``clip_reid_*``."""
    name = cfg.model.name
    if name.startswith("dcac_") and not cfg.dcac.use_diffusion:
        return "clip_reid_" + name[len("dcac_"):]
    return name


def build_engine(cfg: CfgNode, dm, device: torch.device, is_plugin: bool, distributed: bool = False):
    """Model, optimiser, scheduler and engine for the configured model.

    Under DDP (``distributed``) the plugin model's BNNeck becomes a global-batch BatchNorm
    (``train.dist_sync_bn``) before the optimiser is built.
    """
    from dcac_plugin._torchreid import tr
    from dcac_plugin.engine.schedule import build_scheduler
    from dcac_plugin.models import build_model

    num_classes = dm.num_train_pids
    if is_plugin:
        from dcac_plugin.data.manager import sequential_train_loader
        from dcac_plugin.engine.dcac_engine import DCACEngine

        model = build_model(plugin_model_name(cfg), num_classes, **model_kwargs(cfg, dm.num_train_cams))
        if distributed and cfg.train.dist_sync_bn:
            from dcac_plugin.distributed import convert_bnneck

            convert_bnneck(model)
        model.to(device)
        groups = model.param_groups(cfg.train.lr, cfg.dcac.lr_mult, weight_decay=cfg.train.weight_decay)
        optimizer = torch.optim.Adam(groups, lr=cfg.train.lr,
                                     betas=(cfg.adam.beta1, cfg.adam.beta2), weight_decay=cfg.train.weight_decay)
        scheduler = make_scheduler(cfg, optimizer, build_scheduler, tr)
        from dcac_plugin import distributed as dist_utils

        if cfg.dcac.vit_grad_checkpointing:
            model.encoder.image_encoder.set_grad_checkpointing(True)
        if cfg.dcac.sd.grad_checkpointing and model.diffusion is not None:
            model.diffusion.set_grad_checkpointing(True)
        memory_loader = sequential_train_loader(dm, dm.transform_te, cfg.dcac.memory_batch_size, cfg.data.workers,
                                                rank=dist_utils.rank(), world_size=dist_utils.world_size())
        engine = DCACEngine(
            dm, model, optimizer, scheduler, memory_loader=memory_loader, device=device,
            id_weight=cfg.dcac.id_loss_weight, pcl_weight=cfg.dcac.pcl_loss_weight,
            ldm_weight=cfg.dcac.ldm_loss_weight, label_smooth=cfg.dcac.label_smooth,
            noise_loss_begin_epoch=cfg.dcac.noise_loss_begin_epoch, pcl_temperature=cfg.dcac.pcl.temperature,
            pcl_momentum=cfg.dcac.pcl.momentum, pcl_hard_update=cfg.dcac.pcl.hard_update, amp=cfg.train.amp,
            noise_seed=cfg.train.seed,
        )
    else:
        from dcac_plugin.engine.torchreid_engines import TORCHREID_ENGINES

        if cfg.model.pretrained and not cfg.model.pretrained_path:
            raise ConfigError(
                "model.pretrained True needs model.pretrained_path: a local ImageNet weight file "
                "(weights are never downloaded). Or set model.pretrained False for random init."
            )
        model = build_model(cfg.model.name, num_classes, loss=cfg.loss.name,
                            pretrained=cfg.model.pretrained_path if cfg.model.pretrained else False,
                            use_gpu=device.type == "cuda")
        model.to(device)
        optimizer = tr.optim.build_optimizer(
            model, optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
            momentum=cfg.sgd.momentum, sgd_dampening=cfg.sgd.dampening, sgd_nesterov=cfg.sgd.nesterov,
            rmsprop_alpha=cfg.rmsprop.alpha, adam_beta1=cfg.adam.beta1, adam_beta2=cfg.adam.beta2,
            staged_lr=cfg.train.staged_lr, new_layers=list(cfg.train.new_layers),
            base_lr_mult=cfg.train.base_lr_mult,
        )
        scheduler = make_scheduler(cfg, optimizer, build_scheduler, tr)
        if cfg.loss.name not in TORCHREID_ENGINES:
            raise ConfigError(f"loss.name must be one of {sorted(TORCHREID_ENGINES)}; got '{cfg.loss.name}'")
        use_gpu = device.type == "cuda"
        with_ls = cfg.loss.softmax.label_smooth
        if cfg.loss.name == "softmax":
            engine = TORCHREID_ENGINES["softmax"](dm, model, optimizer, scheduler=scheduler, use_gpu=use_gpu,
                                                  label_smooth=with_ls)
        else:
            engine = TORCHREID_ENGINES["triplet"](dm, model, optimizer, margin=cfg.loss.triplet.margin,
                                                  weight_t=cfg.loss.triplet.weight_t,
                                                  weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                                                  use_gpu=use_gpu, label_smooth=with_ls)
    return engine


def distribute_train_loader(cfg: CfgNode, dm) -> None:
    """Replace the train loader by one over a :class:`DistributedIdentitySampler` (P x K per rank)."""
    from dcac_plugin import distributed as dist_utils
    from dcac_plugin.data.samplers import DistributedIdentitySampler

    if cfg.sampler.train_sampler != "RandomIdentitySampler":
        raise ConfigError("distributed training needs sampler.train_sampler RandomIdentitySampler")
    dataset = dm.train_loader.dataset
    sampler = DistributedIdentitySampler(dataset.train, cfg.train.batch_size, cfg.sampler.num_instances,
                                         num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                         seed=cfg.train.seed)
    dm.train_loader = torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=cfg.train.batch_size, shuffle=False, num_workers=cfg.data.workers,
        pin_memory=dm.use_gpu, drop_last=True)
    logger.info("distributed P x K sampler: %d ranks x %d images = global batch %d", dist_utils.world_size(),
                cfg.train.batch_size, dist_utils.world_size() * cfg.train.batch_size)


def build_vae_cache(cfg: CfgNode, dm, model, device: torch.device):
    """Compute (or load) the VAE posterior moments of every training image (rank 0 writes)."""
    from dcac_plugin import distributed as dist_utils
    from dcac_plugin.data.transforms import vae_transform
    from dcac_plugin.data.vae_cache import VAEMomentCache

    cache_dir = cfg.dcac.sd.cache_dir or str(Path(cfg.data.save_dir) / "vae_cache")
    paths = [item[0] for item in dm.train_loader.dataset.train]
    kwargs = dict(image_paths=paths, diffusion=model.diffusion, transform=vae_transform(cfg.dcac.sd.vae_image_size),
                  cache_dir=cache_dir, batch_size=cfg.dcac.memory_batch_size, device=device)
    if dist_utils.is_main_process():
        cache = VAEMomentCache.build_or_load(**kwargs)
        dist_utils.barrier()
    else:
        dist_utils.barrier()
        cache = VAEMomentCache.build_or_load(**kwargs)
    return cache


def make_scheduler(cfg: CfgNode, optimizer, build_scheduler, tr):
    """The paper's per-epoch warm-up multi-step schedule, or one of torchreid's."""
    if cfg.train.lr_scheduler == "warmup_multi_step":
        return build_scheduler(optimizer, milestones=tuple(cfg.train.stepsize), gamma=cfg.train.gamma,
                               warmup_epochs=cfg.train.warmup_epochs, warmup_factor=cfg.train.warmup_factor)
    stepsize = list(cfg.train.stepsize)
    if cfg.train.lr_scheduler == "single_step":
        stepsize = stepsize[-1]
    return tr.optim.build_lr_scheduler(optimizer, lr_scheduler=cfg.train.lr_scheduler, stepsize=stepsize,
                                       gamma=cfg.train.gamma, max_epoch=cfg.train.max_epoch)


def eval_kwargs(cfg: CfgNode) -> dict[str, Any]:
    """Keyword arguments of :func:`dcac_plugin.evaluation.evaluate_features`."""
    kw: dict[str, Any] = dict(metric=cfg.test.dist_metric, normalize=cfg.test.normalize_feature,
                              use_metric_cuhk03=cfg.cuhk03.use_metric_cuhk03, chunk_size=cfg.test.chunk_size)
    if cfg.test.rerank:
        kw.update(rerank=True, k1=cfg.test.rerank_k1, k2=cfg.test.rerank_k2, lambda_value=cfg.test.rerank_lambda)
    return kw


def load_weights_for_eval(engine, cfg: CfgNode, is_plugin: bool) -> str:
    """Load ``model.load_weights`` (ours or an official DCAC release file); returns what was loaded."""
    path = cfg.model.load_weights
    if not path:
        return ""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.load_weights: no such file: {path}")
    if is_plugin:
        from dcac_plugin.models.weights import load_official_dcac_checkpoint

        load_official_dcac_checkpoint(engine.model, path)
    else:
        from dcac_plugin.models.weights import load_torchreid_pretrained

        load_torchreid_pretrained(engine.model, path)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run one training/evaluation job; returns the results record (also written to results.json)."""
    from dcac_plugin import distributed as dist_utils

    args = parse_args(argv)
    cfg = setup_cfg(args)
    save_dir = Path(cfg.data.save_dir)
    t_start = time.time()
    distributed, device = dist_utils.init_from_env(cfg.use_gpu)
    handler = setup_logging(save_dir, dist_utils.is_main_process())
    try:
        return _run(cfg, args, save_dir, t_start, device, distributed)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        if distributed:
            dist_utils.cleanup()


def _run(cfg: CfgNode, args: argparse.Namespace, save_dir: Path, t_start: float, device: torch.device,
         distributed: bool) -> dict[str, Any]:
    import dcac_plugin
    from dcac_plugin import distributed as dist_utils
    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.base import latest_checkpoint
    from dcac_plugin.models import PLUGIN_MODELS
    from dcac_plugin.utils.runinfo import device_description, git_commit, library_versions

    if dist_utils.is_main_process():
        atomic_write_text(cfg.dump(), save_dir / "config.yaml")
    logger.info("config: %s (hash %s); output: %s", args.config_file or "<defaults>", config_hash(cfg), save_dir)
    set_seed(cfg.train.seed, cfg.train.deterministic)
    dcac_plugin.register()
    is_plugin = plugin_model_name(cfg) in PLUGIN_MODELS
    use_diffusion = is_plugin and plugin_model_name(cfg).startswith("dcac_")
    use_cache = use_diffusion and cfg.dcac.sd.cache_vae_moments
    dm = build_datamanager(cfg, use_gpu=device.type == "cuda", plugin_views=is_plugin,
                           vae_view=use_diffusion and not use_cache)
    if distributed:
        distribute_train_loader(cfg, dm)
    engine = build_engine(cfg, dm, device, is_plugin, distributed)
    if use_cache and not cfg.test.evaluate:
        engine.vae_cache = build_vae_cache(cfg, dm, engine.model, device)
    # Same initial weights on every rank (seeded above); from here each rank's augmentations differ.
    set_seed(cfg.train.seed + dist_utils.rank(), cfg.train.deterministic)
    engine.setup(device=device, save_dir=str(save_dir), eval_kwargs=eval_kwargs(cfg),
                 print_freq=cfg.train.print_freq, checkpoint_period=cfg.train.checkpoint_period,
                 keep_checkpoints=cfg.train.keep_checkpoints, ddp=distributed,
                 find_unused_parameters=is_plugin and (cfg.dcac.noise_loss_begin_epoch > 1 or cfg.dcac.cond.hard_label))

    init = "random"
    if is_plugin and cfg.dcac.clip_weights:
        init = f"clip:{Path(cfg.dcac.clip_weights).name}"
    elif not is_plugin and cfg.model.pretrained:
        init = f"imagenet:{Path(cfg.model.pretrained_path).name}"

    start_epoch = 0
    if cfg.test.evaluate:
        loaded = load_weights_for_eval(engine, cfg, is_plugin)
        if not loaded:
            ckpt = latest_checkpoint(save_dir)
            if ckpt is None:
                logger.warning("--eval-only without model.load_weights and no checkpoint in %s: "
                               "evaluating the initial model", save_dir)
            else:
                engine.resume(ckpt)
                loaded = str(ckpt)
        if loaded:
            init = f"weights:{Path(loaded).name}"
        results = engine.evaluate()
        epochs = 0
    else:
        if cfg.model.load_weights:
            load_weights_for_eval(engine, cfg, is_plugin)
            init = f"weights:{Path(cfg.model.load_weights).name}"
        resume = cfg.model.resume
        if resume == "auto":
            ckpt = latest_checkpoint(save_dir)
            resume = str(ckpt) if ckpt else ""
            if not ckpt:
                logger.info("--resume: no checkpoint in %s yet, starting from scratch", save_dir)
        if resume:
            start_epoch = engine.resume(resume)
        results = engine.fit(start_epoch, cfg.train.max_epoch, eval_freq=cfg.test.eval_freq,
                             start_eval=cfg.test.start_eval, fixbase_epoch=cfg.train.fixbase_epoch,
                             open_layers=list(cfg.train.open_layers))
        epochs = cfg.train.max_epoch

    record = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run_name": save_dir.name,
        "model": plugin_model_name(cfg),
        "loss": ("softmax+triplet" if cfg.loss.name == "triplet" else "softmax") if not is_plugin else "dcac",
        "protocol": protocol_of(cfg),
        "results": results,
        "init": init,
        "config_file": args.config_file,
        "config_hash": config_hash(cfg),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "device": device_description(device),
        "wall_time_s": round(time.time() - t_start, 2),
        "epochs": epochs,
        "num_train_pids": dm.num_train_pids,
        "status": "ok",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if record["model"] in TINY_METHODS:
        record["method"] = TINY_METHODS[record["model"]]
    if not dist_utils.is_main_process():
        return {**record, "status": "worker"}
    if distributed:
        record["world_size"] = dist_utils.world_size()
    atomic_write_json(record, save_dir / "results.json")
    logger.info("results written to %s", save_dir / "results.json")
    return record


def cli() -> None:
    """Console entry point: exit 2 with a one-line message on bad input, no traceback."""
    from dcac_plugin.data.datasets import DatasetLayoutError
    from dcac_plugin.engine.base import NonFiniteLossError
    from dcac_plugin.models.weights import WeightLoadError

    try:
        record = main(sys.argv[1:])
    except (ConfigError, DatasetLayoutError, FileNotFoundError, ValueError, NonFiniteLossError,
            WeightLoadError) as e:
        logging.getLogger("dcac_plugin").error("%s", e)
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    if record.get("status") == "ok":
        sys.stdout.write(json.dumps(record["results"], indent=2) + "\n")


if __name__ == "__main__":
    cli()
