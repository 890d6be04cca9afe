"""Build torchreid's ``ImageDataManager`` from the config, with the plugin's checks and views."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from yacs.config import CfgNode

from dcac_plugin._torchreid import image_dataset_registry, prints_to_log, tr
from dcac_plugin.config import ConfigError, parse_custom_datasets
from dcac_plugin.data import transforms as tfm
from dcac_plugin.data.datasets import (
    check_dataset,
    custom_dataset_spec,
    read_custom_dataset,
    register_custom_datasets,
    register_datasets,
)

logger = logging.getLogger(__name__)


def train_dataset_names(cfg: CfgNode) -> list[str]:
    """Source names as registered in torchreid (``msmt17`` → ``msmt17_trainval`` when asked)."""
    names = list(cfg.data.sources)
    if cfg.data.msmt17_include_val:
        names = ["msmt17_trainval" if n == "msmt17" else n for n in names]
    return names


def imagedata_kwargs(cfg: CfgNode, use_gpu: bool) -> dict[str, Any]:
    """torchreid ``ImageDataManager`` keyword arguments from the config."""
    return dict(
        root=cfg.data.root,
        sources=train_dataset_names(cfg),
        targets=list(cfg.data.targets),
        height=cfg.data.height,
        width=cfg.data.width,
        transforms=list(cfg.data.transforms),
        k_tfm=cfg.data.k_tfm,
        norm_mean=list(cfg.data.norm_mean),
        norm_std=list(cfg.data.norm_std),
        use_gpu=use_gpu,
        split_id=cfg.data.split_id,
        combineall=cfg.data.combineall,
        load_train_targets=cfg.data.load_train_targets,
        batch_size_train=cfg.train.batch_size,
        batch_size_test=cfg.test.batch_size,
        workers=cfg.data.workers,
        num_instances=cfg.sampler.num_instances,
        num_cams=cfg.sampler.num_cams,
        num_datasets=cfg.sampler.num_datasets,
        train_sampler=cfg.sampler.train_sampler,
        train_sampler_t=cfg.sampler.train_sampler_t,
        cuhk03_labeled=cfg.cuhk03.labeled_images,
        cuhk03_classic_split=cfg.cuhk03.classic_split,
        market1501_500k=cfg.market1501.use_500k_distractors,
    )


def register_custom(cfg: CfgNode) -> None:
    """Register the config's ``data.custom`` datasets with torchreid (see README "Your own data")."""
    register_custom_datasets(parse_custom_datasets(cfg.data.custom))


def check_datasets(cfg: CfgNode) -> None:
    """Fail early, with the layout expected, when a dataset folder is missing or malformed."""
    register_custom(cfg)
    variant = {"cuhk03_labeled": cfg.cuhk03.labeled_images}
    sources, targets = train_dataset_names(cfg), list(cfg.data.targets)
    for name in dict.fromkeys(sources + targets):
        spec = custom_dataset_spec(name)
        if spec is None:
            check_dataset(name, cfg.data.root, **variant)
            continue
        need = (["train"] if name in sources else []) + (["query", "gallery"] if name in targets else [])
        splits = read_custom_dataset(spec, verify_files=True, need=need)
        if splits.has_cameras:
            continue
        if cfg.dcac.sie and name in sources:
            raise ConfigError(
                f"dcac.sie True needs camera ids, but custom dataset '{name}' has none (every image would be "
                "its own camera); add a camid column to its list file or set dcac.sie False")
        if name in targets:
            logger.warning(
                "custom dataset '%s' has no camera ids: every image is its own camera, so the evaluation's "
                "same-camera filter removes nothing (same-camera matches of a query count; metrics are "
                "closer to same-camera retrieval than to the cross-camera protocol)", name)


def build_datamanager(cfg: CfgNode, use_gpu: bool, plugin_views: bool, vae_view: bool):
    """Build the data manager.

    Args:
        cfg: merged config.
        use_gpu: pin memory for CUDA.
        plugin_views: use the paper's re-ID transforms (docs/METHOD.md §7.5) and normalisation (plugin models);
            otherwise torchreid's named transforms (``data.transforms``) as torchreid does.
        vae_view: the train loader yields ``[x, x_vae]`` (DCAC's second, un-augmented view).
    """
    register_datasets()  # the dataset half of dcac_plugin.register(): data needs only the datasets
    check_datasets(cfg)
    with prints_to_log():
        dm = tr.data.ImageDataManager(**imagedata_kwargs(cfg, use_gpu))
    if plugin_views:
        h, w = cfg.data.height, cfg.data.width
        mean, std = list(cfg.dcac.pixel_mean), list(cfg.dcac.pixel_std)
        train_t = tfm.reid_train_transform(h, w, mean, std, cfg.dcac.flip_prob, cfg.dcac.padding,
                                           cfg.dcac.re_prob)
        if vae_view:
            train_t = tfm.PairedViews(train_t, tfm.vae_transform(cfg.dcac.sd.vae_image_size))
        test_t = eval_transform(cfg, plugin=True)
        dm.train_loader.dataset.transform = train_t
        for loaders in dm.test_loader.values():
            for loader in loaders.values():
                loader.dataset.transform = test_t
        dm.transform_tr, dm.transform_te = train_t, test_t
        dm.transform_memory = tfm.memory_transform(h, w, mean, std)  # bicubic whatever the test resize
    elif cfg.data.test_interpolation != "bilinear":
        logger.info("torchreid models use torchreid's own transforms (data.transforms, bilinear resize)")
    return dm


def eval_transform(cfg: CfgNode, plugin: bool):
    """The test-time transform of the evaluation: PIL image -> ``[3, H, W]`` normalised tensor.

    Plugin models: resize to ``data.height x data.width`` with ``data.test_interpolation``, then
    normalise with ``dcac.pixel_mean/std``. torchreid models: torchreid's own test transform
    (bilinear resize, ``data.norm_mean/std``), built by torchreid's ``build_transforms``.
    """
    h, w = cfg.data.height, cfg.data.width
    if plugin:
        return tfm.reid_test_transform(h, w, list(cfg.dcac.pixel_mean), list(cfg.dcac.pixel_std),
                                       cfg.data.test_interpolation)
    with prints_to_log(logging.DEBUG):
        _, test_t = tr.data.transforms.build_transforms(h, w, transforms=[], norm_mean=list(cfg.data.norm_mean),
                                                        norm_std=list(cfg.data.norm_std))
    return test_t


def sequential_train_loader(dm, transform, batch_size: int, workers: int, rank: int = 0,
                            world_size: int = 1) -> torch.utils.data.DataLoader:
    """The training set in a fixed order with ``transform`` (for the prototype memory).

    Under DDP each rank gets every ``world_size``-th image starting at ``rank``.
    """
    dataset = copy.copy(dm.train_loader.dataset)
    dataset.transform = transform
    if world_size > 1:
        dataset = torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                       num_workers=workers, drop_last=False)


def test_split(cfg: CfgNode, name: str) -> tuple[list[tuple], list[tuple]]:
    """Query and gallery items ``(path, pid, camid, dsetid)`` of target ``name``, as the evaluation reads them.

    Raises:
        DatasetLayoutError: the dataset is missing or malformed (the message gives the layout).
    """
    register_datasets()  # the dataset half of dcac_plugin.register(): data needs only the datasets
    register_custom(cfg)
    spec = custom_dataset_spec(name)
    if spec is not None:
        read_custom_dataset(spec, verify_files=True, need=("query", "gallery"))
    else:
        check_dataset(name, cfg.data.root, cuhk03_labeled=cfg.cuhk03.labeled_images)
    registry = image_dataset_registry()
    if name not in registry:
        raise ValueError(f"unknown dataset '{name}'; known: {sorted(registry)}")
    with prints_to_log(logging.DEBUG):
        ds = registry[name](root=cfg.data.root, mode="query", combineall=False, verbose=False,
                            split_id=cfg.data.split_id, cuhk03_labeled=cfg.cuhk03.labeled_images,
                            cuhk03_classic_split=cfg.cuhk03.classic_split,
                            market1501_500k=cfg.market1501.use_500k_distractors)
    return list(ds.query), list(ds.gallery)
