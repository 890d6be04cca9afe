"""Engine assembly: model, optimiser, scheduler, loaders and engine from a frozen config.

Used by :func:`dcac_plugin.runner.run` (and so by ``tools/train.py``) and usable on its own from
Python::

    cfg = dcac_plugin.runner.load_config("configs/demo/dcac_tiny.yaml", ["data.root", "data/x"])
    family = family_for(cfg)                      # dcac_plugin.families: plugin or torchreid
    dm = family.build_datamanager(cfg, use_gpu=False, evaluate_only=False)
    engine = family.build_engine(cfg, dm, torch.device("cpu"))

or, knowing the model's family, ``build_plugin_engine(cfg, dm, device)`` / ``build_torchreid_engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from yacs.config import CfgNode

from dcac_plugin import distributed as dist_utils
from dcac_plugin._torchreid import tr
from dcac_plugin.config import ConfigError, get_default_config
from dcac_plugin.data.manager import sequential_train_loader
from dcac_plugin.data.samplers import DistributedIdentitySampler
from dcac_plugin.data.transforms import vae_transform
from dcac_plugin.data.vae_cache import VAEMomentCache
from dcac_plugin.distributed import convert_bnneck
from dcac_plugin.engine.dcac_engine import DCACEngine
from dcac_plugin.engine.schedule import build_scheduler
from dcac_plugin.engine.torchreid_engines import TORCHREID_ENGINES
from dcac_plugin.models import PLUGIN_MODELS, build_model
from dcac_plugin.models import weights as model_weights  # loaders looked up on call (tests replace them)
from dcac_plugin.models.weights import resolve_weight_path
from dcac_plugin.protocols import RerankParams

logger = logging.getLogger(__name__)

__all__ = [
    "build_engine",
    "build_plugin_engine",
    "build_plugin_model",
    "build_torchreid_engine",
    "build_torchreid_model",
    "check_plugin_config",
    "build_vae_cache",
    "distribute_train_loader",
    "eval_kwargs",
    "is_plugin_config",
    "load_config_weights",
    "load_weights_for_eval",
    "make_scheduler",
    "model_kwargs",
    "plugin_model_name",
    "refuse_torchreid_finetuning",
]


def model_kwargs(cfg: CfgNode, num_cams: int) -> dict[str, Any]:
    """Builder keyword arguments of the plugin's models, from the ``dcac`` node."""
    d = cfg.dcac
    extra: dict[str, Any] = {"vision": d.vision} if d.vision else {}
    return dict(
        **extra,
        clip_weights=resolve_weight_path(d.clip_weights),
        image_size=(cfg.data.height, cfg.data.width),
        stride=d.stride,
        freeze_patch_proj=d.freeze_patch_proj,
        num_cams=num_cams if d.sie else 0,
        sie_coef=d.sie_coef,
        bnneck_momentum=d.bnneck_momentum,
        sd_weights=resolve_weight_path(d.sd.weights),
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


def is_plugin_config(cfg: CfgNode) -> bool:
    """True when the configured model is one of the plugin's (DCAC or the CLIP baseline).

    Legacy question: the runner, extractor and suite ask :func:`dcac_plugin.families.family_for`.
    """
    return plugin_model_name(cfg) in PLUGIN_MODELS


def check_plugin_config(cfg: CfgNode) -> None:
    """Refuse torchreid options that a plugin model would silently ignore (no-op for other models).

    Raises:
        ConfigError: see :func:`refuse_torchreid_finetuning`.
    """
    if is_plugin_config(cfg):
        refuse_torchreid_finetuning(cfg)


def refuse_torchreid_finetuning(cfg: CfgNode) -> None:
    """Refuse ``train.fixbase_epoch`` / ``train.open_layers`` for a plugin model.

    They are torchreid's two-step fine-tuning, which has no effect on DCAC or the CLIP baseline:
    those train all layers from the first epoch.

    Raises:
        ConfigError: one of them differs from its default (the message names it).
    """
    default = get_default_config().train
    changed = []
    if cfg.train.fixbase_epoch != default.fixbase_epoch:
        changed.append("fixbase_epoch")
    if list(cfg.train.open_layers) != list(default.open_layers):
        changed.append("open_layers")
    if changed:
        keys = " and ".join(f"train.{k} ({cfg.train[k]!r})" for k in changed)
        raise ConfigError(
            f"{keys}: torchreid's two-step fine-tuning is not applied to the plugin model "
            f"'{plugin_model_name(cfg)}', which trains all layers from the first epoch (the paper's recipe). "
            f"Remove the key(s) (defaults: train.fixbase_epoch 0, train.open_layers ['classifier'])."
        )


def build_plugin_model(cfg: CfgNode, num_classes: int, num_cams: int, encoder_only: bool = False,
                       load_clip: bool = True):
    """Build the configured plugin model.

    Args:
        cfg: the run configuration.
        num_classes: identities N of the classifier.
        num_cams: training cameras (used with ``dcac.sie``).
        encoder_only: build only what evaluation needs -- the re-ID encoder (``clip_reid_*`` of the
            same size), no UNet/VAE and no SD file.
        load_clip: read ``dcac.clip_weights`` (False when the weights to evaluate hold the encoder).

    Returns:
        A :class:`dcac_plugin.models.DCAC` (``diffusion`` is None for the baseline and ``encoder_only``).
    """
    name = plugin_model_name(cfg)
    kwargs = model_kwargs(cfg, num_cams)
    if encoder_only and name.startswith("dcac_"):
        name = "clip_reid_" + name[len("dcac_"):]
    if not load_clip:
        kwargs["clip_weights"] = ""
    return build_model(name, num_classes, **kwargs)


def build_torchreid_model(cfg: CfgNode, num_classes: int, use_gpu: bool):
    """Build the configured torchreid model, from ``model.pretrained_path`` when ``model.pretrained``.

    Raises:
        ConfigError: ``model.pretrained`` without ``model.pretrained_path`` (weights are never downloaded).
    """
    if cfg.model.pretrained and not cfg.model.pretrained_path:
        raise ConfigError(
            "model.pretrained True needs model.pretrained_path: a local ImageNet weight file "
            "(weights are never downloaded). Or set model.pretrained False for random init."
        )
    return build_model(cfg.model.name, num_classes, loss=cfg.loss.name,
                       pretrained=cfg.model.pretrained_path if cfg.model.pretrained else False, use_gpu=use_gpu)


def build_engine(cfg: CfgNode, dm, device: torch.device, is_plugin: bool, distributed: bool = False,
                 encoder_only: bool = False, load_clip: bool = True):
    """Model, optimiser, scheduler and engine: :func:`build_plugin_engine` or :func:`build_torchreid_engine`.

    Legacy entry point; ``dcac_plugin.families.family_for(cfg).build_engine(...)`` picks the builder
    from the config.
    """
    if is_plugin:
        return build_plugin_engine(cfg, dm, device, distributed, encoder_only=encoder_only, load_clip=load_clip)
    return build_torchreid_engine(cfg, dm, device)


def build_plugin_engine(cfg: CfgNode, dm, device: torch.device, distributed: bool = False,
                        encoder_only: bool = False, load_clip: bool = True):
    """The plugin model with Adam, the configured schedule and a :class:`DCACEngine`.

    Under DDP (``distributed``) the BNNeck becomes a global-batch BatchNorm (``train.dist_sync_bn``)
    before the optimiser is built. With ``encoder_only`` (evaluation of saved weights) the model is
    built without its diffusion branch; ``load_clip`` False skips the CLIP file (see
    :func:`build_plugin_model`).
    """
    model = build_plugin_model(cfg, dm.num_train_pids, dm.num_train_cams, encoder_only=encoder_only,
                               load_clip=load_clip)
    if distributed and cfg.train.dist_sync_bn:
        convert_bnneck(model)
    model.to(device)
    groups = model.param_groups(cfg.train.lr, cfg.dcac.lr_mult, weight_decay=cfg.train.weight_decay)
    optimizer = torch.optim.Adam(groups, lr=cfg.train.lr,
                                 betas=(cfg.adam.beta1, cfg.adam.beta2), weight_decay=cfg.train.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    if cfg.dcac.vit_grad_checkpointing:
        model.encoder.image_encoder.set_grad_checkpointing(True)
    if cfg.dcac.sd.grad_checkpointing and model.diffusion is not None:
        model.diffusion.set_grad_checkpointing(True)
    memory_loader = sequential_train_loader(dm, dm.transform_memory, cfg.dcac.memory_batch_size, cfg.data.workers,
                                            rank=dist_utils.rank(), world_size=dist_utils.world_size())
    return DCACEngine(
        dm, model, optimizer, scheduler, memory_loader=memory_loader, device=device,
        id_weight=cfg.dcac.id_loss_weight, pcl_weight=cfg.dcac.pcl_loss_weight,
        ldm_weight=cfg.dcac.ldm_loss_weight, label_smooth=cfg.dcac.label_smooth,
        noise_loss_begin_epoch=cfg.dcac.noise_loss_begin_epoch, pcl_temperature=cfg.dcac.pcl.temperature,
        pcl_momentum=cfg.dcac.pcl.momentum, pcl_hard_update=cfg.dcac.pcl.hard_update, amp=cfg.train.amp,
        noise_seed=cfg.train.seed,
    )


def build_torchreid_engine(cfg: CfgNode, dm, device: torch.device):
    """The torchreid model with torchreid's optimiser, the configured schedule and its
    ``loss.name`` engine (``softmax`` or ``triplet``).

    Raises:
        ConfigError: ``model.pretrained`` without a path, or an unknown ``loss.name``.
    """
    use_gpu = device.type == "cuda"
    model = build_torchreid_model(cfg, dm.num_train_pids, use_gpu)
    model.to(device)
    optimizer = tr.optim.build_optimizer(
        model, optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        momentum=cfg.sgd.momentum, sgd_dampening=cfg.sgd.dampening, sgd_nesterov=cfg.sgd.nesterov,
        rmsprop_alpha=cfg.rmsprop.alpha, adam_beta1=cfg.adam.beta1, adam_beta2=cfg.adam.beta2,
        staged_lr=cfg.train.staged_lr, new_layers=list(cfg.train.new_layers),
        base_lr_mult=cfg.train.base_lr_mult,
    )
    scheduler = make_scheduler(cfg, optimizer)
    if cfg.loss.name not in TORCHREID_ENGINES:
        raise ConfigError(f"loss.name must be one of {sorted(TORCHREID_ENGINES)}; got '{cfg.loss.name}'")
    with_ls = cfg.loss.softmax.label_smooth
    if cfg.loss.name == "softmax":
        return TORCHREID_ENGINES["softmax"](dm, model, optimizer, scheduler=scheduler, use_gpu=use_gpu,
                                            label_smooth=with_ls)
    return TORCHREID_ENGINES["triplet"](dm, model, optimizer, margin=cfg.loss.triplet.margin,
                                        weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                                        scheduler=scheduler, use_gpu=use_gpu, label_smooth=with_ls)


def make_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """The paper's per-epoch warm-up multi-step schedule, or one of torchreid's."""
    if cfg.train.lr_scheduler == "warmup_multi_step":
        return build_scheduler(optimizer, milestones=tuple(cfg.train.stepsize), gamma=cfg.train.gamma,
                               warmup_epochs=cfg.train.warmup_epochs, warmup_factor=cfg.train.warmup_factor)
    stepsize = list(cfg.train.stepsize)
    if cfg.train.lr_scheduler == "single_step":
        stepsize = stepsize[-1]
    return tr.optim.build_lr_scheduler(optimizer, lr_scheduler=cfg.train.lr_scheduler, stepsize=stepsize,
                                       gamma=cfg.train.gamma, max_epoch=cfg.train.max_epoch)


def distribute_train_loader(cfg: CfgNode, dm) -> None:
    """Replace the train loader by one over a :class:`DistributedIdentitySampler` (P x K per rank)."""
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


def eval_kwargs(cfg: CfgNode) -> dict[str, Any]:
    """Keyword arguments of :func:`dcac_plugin.evaluation.evaluate_features`."""
    kw: dict[str, Any] = dict(metric=cfg.test.dist_metric, normalize=cfg.test.normalize_feature,
                              use_metric_cuhk03=cfg.cuhk03.use_metric_cuhk03, chunk_size=cfg.test.chunk_size)
    if cfg.test.rerank:
        kw.update(rerank=True, **RerankParams.from_config(cfg.test).kwargs())
    return kw


def load_weights_for_eval(engine, cfg: CfgNode, is_plugin: bool) -> str:
    """Load ``model.load_weights`` (ours or an official DCAC release file); returns what was loaded.

    Legacy entry point; ``dcac_plugin.families.family_for(cfg).load_config_weights(engine, cfg)``
    picks the loader from the config.
    """
    return load_config_weights(engine, cfg, model_weights.load_official_dcac_checkpoint if is_plugin
                               else model_weights.load_torchreid_pretrained)


def load_config_weights(engine, cfg: CfgNode, loader: Callable[[torch.nn.Module, str], Any]) -> str:
    """Load ``model.load_weights`` into ``engine.model`` with ``loader``; returns the path ('' when unset).

    Raises:
        FileNotFoundError: ``model.load_weights`` names no file.
    """
    path = cfg.model.load_weights
    if not path:
        return ""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.load_weights: no such file: {path}")
    loader(engine.model, path)
    return path
