"""yacs configuration: torchreid's key tree (lowercase nodes) plus one ``dcac`` node.

Every key carries a comment. Experiment yaml files only override. Defaults are the paper's
values (``docs/METHOD.md §10``) for the ``dcac`` node and torchreid's own defaults
for the torchreid nodes, so upstream torchreid yaml files merge unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from dcac_plugin.configs import resolve
from dcac_plugin.errors import ConfigError
from dcac_plugin.protocols import DCAC_RERANK
from dcac_plugin.utils.precision import AMP_MODES

logger = logging.getLogger(__name__)


def get_default_config() -> CN:
    """Return the full default config (a fresh, mutable ``CfgNode``)."""
    cfg = CN()
    cfg.use_gpu = True  # use CUDA when available (the single device decision; False forces CPU)
    _add_model(cfg)
    _add_data(cfg)
    _add_sampler(cfg)
    _add_train(cfg)
    _add_loss(cfg)
    _add_test(cfg)
    _add_dcac(cfg)
    _add_dcac_pcl(cfg)
    _add_dcac_cond(cfg)
    _add_dcac_sd(cfg)
    return cfg


def _add_model(cfg: CN) -> None:
    """``model``: which network, and the weights it starts from."""
    cfg.model = CN()
    cfg.model.name = "dcac_vit_b16"  # dcac_vit_b16 | dcac_tiny | clip_reid_vit_b16 | clip_reid_tiny | torchreid names
    cfg.model.pretrained = False  # torchreid models: True needs model.pretrained_path (never downloads)
    cfg.model.pretrained_path = ""  # local ImageNet weight file for torchreid models ('' = random init, logged)
    cfg.model.load_weights = ""  # weights to load before training/eval (our checkpoint or an official DCAC one)
    cfg.model.resume = ""  # checkpoint to resume from; 'auto' = the latest in data.save_dir


def _add_data(cfg: CN) -> None:
    """``data`` (datasets, input size, output folder) and the dataset-specific nodes."""
    cfg.data = CN()
    cfg.data.type = "image"  # torchreid data type (only image is supported by the plugin)
    cfg.data.root = "reid-data"  # root folder holding the dataset folders (real or generated)
    cfg.data.sources = ["market1501"]  # training datasets (several = one merged label space)
    cfg.data.targets = ["msmt17"]  # evaluation datasets
    cfg.data.workers = 4  # dataloader workers
    cfg.data.split_id = 0  # split index (datasets with several splits)
    cfg.data.height = 256  # re-ID input height
    cfg.data.width = 128  # re-ID input width
    cfg.data.combineall = False  # torchreid: merge query+gallery into training (not the paper's protocol)
    cfg.data.transforms = ["random_flip"]  # torchreid transform names (torchreid models only)
    cfg.data.k_tfm = 1  # torchreid: augmented views per image (torchreid models; plugin models use 1)
    cfg.data.norm_mean = [0.485, 0.456, 0.406]  # torchreid models' normalisation mean (ImageNet)
    cfg.data.norm_std = [0.229, 0.224, 0.225]  # torchreid models' normalisation std (ImageNet)
    cfg.data.save_dir = "output/run"  # output folder of the run
    cfg.data.load_train_targets = False  # torchreid: also load target train sets (domain adaptation)
    cfg.data.msmt17_include_val = True  # MSMT17: train on train+val (paper, 32,621 imgs) vs train only
    cfg.data.test_interpolation = "bicubic"  # test resize: bicubic (paper) | bilinear (released single-source)
    cfg.data.custom = []  # own datasets: 'NAME=folder:/path' | 'NAME=list:/path/file.csv'; NAME in sources/targets

    cfg.market1501 = CN()
    cfg.market1501.use_500k_distractors = False  # torchreid: add the 500k distractors to the gallery

    cfg.cuhk03 = CN()
    cfg.cuhk03.labeled_images = False  # CUHK03 / CUHK03-NP: labeled boxes (False = detected, the paper's)
    cfg.cuhk03.classic_split = False  # CUHK03 (.mat release): classic 20-split protocol
    cfg.cuhk03.use_metric_cuhk03 = False  # single-gallery-shot CUHK03 metric (paper: Market protocol)


def _add_sampler(cfg: CN) -> None:
    """``sampler`` (the P x K batch sampler) and torchreid's unused ``video`` node."""
    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomIdentitySampler"  # P x K identity sampler (paper: 16 x 4)
    cfg.sampler.train_sampler_t = "RandomSampler"  # sampler of target train data (domain adaptation)
    cfg.sampler.num_instances = 4  # K images per identity in a batch
    cfg.sampler.num_cams = 1  # RandomDomainSampler: cameras per batch
    cfg.sampler.num_datasets = 1  # RandomDatasetSampler: datasets per batch

    cfg.video = CN()
    cfg.video.seq_len = 15  # torchreid video option (unused by the plugin; kept so torchreid yaml merge)
    cfg.video.sample_method = "evenly"  # torchreid video option (unused)
    cfg.video.pooling_method = "avg"  # torchreid video option (unused)


def _add_train(cfg: CN) -> None:
    """``train`` (schedule, optimiser, precision, checkpoints) and the optimisers' own nodes."""
    cfg.train = CN()
    cfg.train.optim = "adam"  # adam | amsgrad | sgd | rmsprop | radam (Adam with coupled L2 for DCAC)
    cfg.train.lr = 5e-6  # base learning rate
    cfg.train.weight_decay = 1e-4  # coupled L2 weight decay on every trainable tensor
    cfg.train.max_epoch = 60  # epochs
    cfg.train.start_epoch = 0  # torchreid compatibility (the plugin takes the start epoch from the checkpoint)
    cfg.train.batch_size = 64  # images per batch (P*K)
    cfg.train.fixbase_epoch = 0  # torchreid: epochs training only open_layers
    cfg.train.open_layers = ["classifier"]  # torchreid: layers open during fixbase epochs
    cfg.train.staged_lr = False  # torchreid: smaller lr for base layers
    cfg.train.new_layers = ["classifier"]  # torchreid: layers with the full lr when staged_lr
    cfg.train.base_lr_mult = 0.1  # torchreid: lr multiplier of base layers when staged_lr
    cfg.train.lr_scheduler = "warmup_multi_step"  # warmup_multi_step (paper) | single_step | multi_step | cosine
    cfg.train.stepsize = [30, 50]  # milestones (epochs) of the multi-step schedules
    cfg.train.gamma = 0.1  # lr decay factor at each milestone
    cfg.train.warmup_epochs = 10  # linear warm-up length in epochs (warmup_multi_step)
    cfg.train.warmup_factor = 0.1  # warm-up starting factor (warmup_multi_step)
    cfg.train.print_freq = 20  # log every N batches
    cfg.train.seed = 1234  # random seed (torch, numpy, random)
    cfg.train.amp = "auto"  # plugin models: utils.precision.AMP_MODES (auto = CUDA: fp16 + GradScaler; CPU: off)
    cfg.train.checkpoint_period = 1  # save a checkpoint every N epochs (always at the end)
    cfg.train.keep_checkpoints = 2  # keep the last N periodic checkpoints
    cfg.train.deterministic = True  # cudnn deterministic, benchmark off (paper)
    cfg.train.dist_sync_bn = True  # under DDP: BNNeck statistics over the global batch (= one process)

    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9  # SGD momentum
    cfg.sgd.dampening = 0.0  # SGD dampening
    cfg.sgd.nesterov = False  # SGD Nesterov momentum

    cfg.rmsprop = CN()
    cfg.rmsprop.alpha = 0.99  # RMSprop smoothing constant

    cfg.adam = CN()
    cfg.adam.beta1 = 0.9  # Adam beta1
    cfg.adam.beta2 = 0.999  # Adam beta2 (paper 0.999; torchreid's own default is 0.99)


def _add_loss(cfg: CN) -> None:
    """``loss``: the torchreid engines' losses."""
    cfg.loss = CN()
    cfg.loss.name = "softmax"  # torchreid models: softmax | triplet (softmax+triplet)
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = True  # label smoothing 0.1 on the ID loss
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3  # triplet margin
    cfg.loss.triplet.weight_t = 1.0  # triplet loss weight
    cfg.loss.triplet.weight_x = 1.0  # softmax loss weight in the triplet engine


def _add_test(cfg: CN) -> None:
    """``test``: evaluation, re-ranking and ranked-list pictures."""
    cfg.test = CN()
    cfg.test.batch_size = 256  # evaluation batch size
    cfg.test.dist_metric = "euclidean"  # euclidean (squared) | cosine
    cfg.test.normalize_feature = True  # L2-normalise features before ranking (paper)
    cfg.test.ranks = [1, 5, 10, 20]  # torchreid compatibility (results report rank-1/5/10, mAP, mINP)
    cfg.test.evaluate = False  # evaluation only (same as --eval-only)
    cfg.test.eval_freq = -1  # evaluate every N epochs (-1: only at the end, paper)
    cfg.test.start_eval = 0  # first epoch at which periodic evaluation may run
    cfg.test.rerank = False  # k-reciprocal re-ranking at test time
    cfg.test.rerank_k1 = DCAC_RERANK.k1  # re-ranking k1: 50, the original DCAC code's (torchreid's: 20)
    cfg.test.rerank_k2 = DCAC_RERANK.k2  # re-ranking k2: 15, the original DCAC code's (torchreid's: 6)
    cfg.test.rerank_lambda = DCAC_RERANK.lambda_value  # re-ranking lambda: 0.3 (both)
    cfg.test.chunk_size = 1024  # queries per chunk of the memory-bounded evaluator
    cfg.test.visrank = False  # write ranked-list pictures of every query to <save_dir>/visrank/<target>/
    cfg.test.visrank_topk = 10  # gallery images per ranked-list picture


def _add_dcac(cfg: CN) -> None:
    """``dcac``: the method's own settings (paper values, ``docs/METHOD.md §10``)."""
    cfg.dcac = CN()
    cfg.dcac.use_diffusion = True  # False = the paper's CLIP ViT-B/16 baseline (no diffusion branch)
    cfg.dcac.clip_weights = ""  # local OpenAI CLIP ViT-B/16 file (TorchScript ViT-B-16.pt or state dict)
    cfg.dcac.vision = ""  # image tower: '' = the model's own (ViT-B-16 / tiny), or an open_clip JSON config path
    cfg.dcac.stride = 16  # patch stride (16 = no overlap, paper)
    cfg.dcac.freeze_patch_proj = True  # freeze conv1 (patch projection)
    cfg.dcac.sie = False  # camera embedding (SIE) added to the CLS token (off in the paper)
    cfg.dcac.sie_coef = 1.0  # SIE coefficient
    cfg.dcac.bnneck_momentum = 0.19  # BNNeck momentum: BN runs once per step; 0.19 = the original's 2 updates of 0.1
    cfg.dcac.flip_prob = 0.5  # re-ID view: horizontal flip probability
    cfg.dcac.padding = 10  # re-ID view: zero padding before the random crop
    cfg.dcac.re_prob = 0.5  # re-ID view: random erasing probability (fill 0.5 in normalised space)
    cfg.dcac.pixel_mean = [0.5, 0.5, 0.5]  # plugin models' normalisation mean (paper: 0.5)
    cfg.dcac.pixel_std = [0.5, 0.5, 0.5]  # plugin models' normalisation std (paper: 0.5)
    cfg.dcac.id_loss_weight = 1.0  # weight of the label-smoothed ID loss
    cfg.dcac.label_smooth = 0.1  # label smoothing epsilon
    cfg.dcac.pcl_loss_weight = 1.0  # weight of the prototype contrastive loss
    cfg.dcac.ldm_loss_weight = 1.0  # weight of the denoising loss
    cfg.dcac.noise_loss_begin_epoch = 1  # first epoch (1-based) with the denoising loss
    cfg.dcac.lr_mult = 1.0  # lr multiplier of prompts and LoRA
    cfg.dcac.memory_batch_size = 256  # batch size of the per-epoch prototype memory rebuild
    cfg.dcac.vit_grad_checkpointing = False  # ViT activation checkpointing (same results, less memory)


def _add_dcac_pcl(cfg: CN) -> None:
    """``dcac.pcl``: the prototype memory of the contrastive loss."""
    cfg.dcac.pcl = CN()
    cfg.dcac.pcl.temperature = 0.01  # prototype memory temperature
    cfg.dcac.pcl.momentum = 0.2  # weight of the old prototype in the update
    cfg.dcac.pcl.hard_update = True  # update each prototype with its hardest sample of the batch


def _add_dcac_cond(cfg: CN) -> None:
    """``dcac.cond``: how identity probabilities condition the diffusion branch."""
    cfg.dcac.cond = CN()
    cfg.dcac.cond.prob_type = "fc"  # fc | pcl | fc+pcl | feature
    cfg.dcac.cond.tau = 1.0  # softmax temperature of the ID probabilities (0.6 MA & D, 0.1 C3)
    cfg.dcac.cond.bottleneck = "embedding"  # embedding | silu | bn | bn+silu | condition_net
    cfg.dcac.cond.init_std = 1.0  # std of the ID-wise prompt bank initialisation
    cfg.dcac.cond.hard_label = False  # condition on the ground-truth prompt (ablation; no feedback)


def _add_dcac_sd(cfg: CN) -> None:
    """``dcac.sd``: the Stable Diffusion branch (weights, LoRA, VAE view, noise schedule)."""
    cfg.dcac.sd = CN()
    cfg.dcac.sd.weights = ""  # local SD v1.5 v1-5-pruned.ckpt / .safetensors or diffusers folder
    cfg.dcac.sd.use_ema = False  # take the EMA UNet weights of the single file (paper: non-EMA)
    cfg.dcac.sd.lora_rank = 8  # LoRA rank (8 MA/D/C3, 32 MS and multi-source)
    cfg.dcac.sd.lora_alpha = 1.0  # LoRA alpha (scaling alpha/r)
    cfg.dcac.sd.qkv_random_bias = False  # parity option: the original's random frozen q/k/v biases
    cfg.dcac.sd.grad_checkpointing = False  # UNet gradient checkpointing (same results, less memory)
    cfg.dcac.sd.vae_image_size = 128  # pixel size of the square VAE view
    cfg.dcac.sd.num_train_timesteps = 1000  # diffusion steps T
    cfg.dcac.sd.beta_start = 0.00085  # scaled_linear schedule start
    cfg.dcac.sd.beta_end = 0.012  # scaled_linear schedule end
    cfg.dcac.sd.cache_vae_moments = False  # cache VAE posterior moments on disk (same semantics, faster)
    cfg.dcac.sd.cache_dir = ""  # folder of the VAE moment cache ('' = <data.save_dir>/vae_cache)


def merge_config(cfg: CN, config_file: str | None = None, opts: Sequence[str] | None = None) -> CN:
    """Merge a yaml file and ``key value`` overrides into ``cfg``, with clear errors.

    Raises:
        ConfigError: unknown key, odd number of overrides, or a value of the wrong type; the
            message names the key and the file or override it came from.
    """
    if config_file:
        config_file = _resolve_config_file(config_file)
        data = read_yaml(config_file)
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{config_file}: the file must map config keys to values (e.g. 'train:' then "
                              f"'  lr: 5e-6'); it holds a {type(data).__name__}")
        try:
            cfg.merge_from_other_cfg(CN(_listify_yaml(data or {})))
        except KeyError as e:
            raise ConfigError(
                f"{config_file}: unknown config key {_key_from(e)}; see dcac_plugin/config.py for the keys"
            ) from None
        except ValueError as e:
            raise ConfigError(f"{config_file}: {e}") from None
        check_choices(cfg, config_file)
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"overrides must be 'key value' pairs; got an odd number: {opts}")
    for key, value in zip(opts[0::2], opts[1::2], strict=True):
        value = _listify_if_needed(cfg, key, value)
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, AssertionError):
            raise ConfigError(
                f"unknown config key '{key}' in the overrides; see dcac_plugin/config.py for the keys"
            ) from None
        except ValueError as e:
            raise ConfigError(f"override '{key} {value}': {e}") from None
    normalise_list_keys(cfg)
    parse_custom_datasets(cfg.data.custom)
    check_choices(cfg, "the overrides" if opts else "the defaults")
    return cfg


def _resolve_config_file(config_file: str) -> str:
    """An existing file as it is, else the config of that name (``dcac_ma2ms``, ``demo/dcac_tiny``;
    :mod:`dcac_plugin.configs`). Raises :class:`ConfigError` when it is neither."""
    return str(resolve(config_file))


def read_yaml(path: str | os.PathLike, error: type[Exception] = ConfigError, what: str = "config file") -> Any:
    """``yaml.safe_load`` of a file, for every yaml the tools read (configs, suites, published rows,
    run folders' ``config.yaml``).

    Raises:
        error: (default :class:`ConfigError`) the file is missing or unreadable, or does not parse:
            ``FILE line L column C: problem`` (1-based), with the opening bracket or block that
            the problem belongs to when yaml names one.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(yaml_error_message(path, exc)) from None


def yaml_error_message(path: str | os.PathLike, exc: Exception) -> str:
    """``FILE line L column C: problem`` of a yaml parse error (one line)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path} line {mark.line + 1} column {mark.column + 1}" if mark is not None else str(path)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        opened = f" line {cmark.line + 1} column {cmark.column + 1}" if cmark is not None else ""
        problem = f"{problem} ({' '.join(context.split())}{' that starts at' + opened if opened else ''})"
    if "\\t" in problem or "\t" in problem:
        problem += "; yaml indents with spaces, never tabs"
    return f"{where}: {problem}; fix the yaml syntax there"


CUSTOM_DATASET_FORMATS = ("folder", "list")
_CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class CustomDatasetSpec:
    """One ``data.custom`` entry: ``name=format:path``."""

    name: str
    format: str  # 'folder' (Market layout) or 'list' (list file)
    path: str


def parse_custom_datasets(entries: Sequence[str]) -> list[CustomDatasetSpec]:
    """Parse and validate ``data.custom``: a list of ``'NAME=folder:/path'`` / ``'NAME=list:/path/file'``.

    Raises:
        ConfigError: an entry without ``=`` or ``:``, an invalid name (lowercase letters, digits and
            ``_``, starting with a letter), an unknown format, an empty path, or a name given twice.
    """
    if isinstance(entries, str):
        entries = [entries]
    specs: list[CustomDatasetSpec] = []
    seen: set[str] = set()
    for entry in entries:
        text = str(entry).strip()
        name, eq, rest = text.partition("=")
        fmt, colon, path = rest.partition(":")
        name, fmt, path = name.strip(), fmt.strip().lower(), path.strip()
        if not eq or not colon:
            raise ConfigError(
                f"data.custom entry {text!r} is not 'NAME=folder:/path' or 'NAME=list:/path/file.csv'")
        if not _CUSTOM_NAME.match(name):
            raise ConfigError(f"data.custom entry {text!r}: name {name!r} must be lowercase letters, digits "
                              "and '_', starting with a letter (it is used in data.sources / data.targets)")
        if fmt not in CUSTOM_DATASET_FORMATS:
            raise ConfigError(f"data.custom entry {text!r}: format {fmt!r} must be one of "
                              f"{list(CUSTOM_DATASET_FORMATS)}")
        if not path:
            raise ConfigError(f"data.custom entry {text!r}: empty path")
        if name in seen:
            raise ConfigError(f"data.custom: dataset name {name!r} is declared twice")
        seen.add(name)
        specs.append(CustomDatasetSpec(name, fmt, path))
    return specs


#: keys whose value must be one of a fixed set (checked after every merge).
CHOICES: dict[str, tuple[str, ...]] = {
    "train.amp": AMP_MODES,
}


def check_choices(cfg: CN, where: str = "config") -> None:
    """Raise :class:`ConfigError` (prefixed with ``where``: the file or 'the overrides') when a key of
    :data:`CHOICES` holds another value."""
    for key, allowed in CHOICES.items():
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        if node not in allowed:
            raise ConfigError(f"{where}: {key} must be {', '.join(allowed[:-1])} or {allowed[-1]}; got {node!r}")


def _string_list_keys(node: CN, prefix: str = "") -> list[str]:
    """Dotted keys whose value in ``node`` is a list of strings (or an empty list)."""
    out: list[str] = []
    for key, value in node.items():
        if isinstance(value, CN):
            out += _string_list_keys(value, f"{prefix}{key}.")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out.append(prefix + key)
    return out


#: config keys that hold a list of names (``data.sources``, ``data.targets``, ``train.open_layers``...):
#: a single string given for one of them (a yaml ``targets: msmt17``, an override ``data.targets msmt17``)
#: is normalised to a one-element list when the config is merged, so readers never see a string.
LIST_KEYS: tuple[str, ...] = tuple(_string_list_keys(get_default_config()))


def _listify_yaml(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config file's mapping with a string given for a :data:`LIST_KEYS` key made a one-element list."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            value = _listify_yaml(value, path + ".")
        elif isinstance(value, str) and path in LIST_KEYS:
            value = [value]
        out[key] = value
    return out


def normalise_list_keys(cfg: CN) -> CN:
    """Make every :data:`LIST_KEYS` key of ``cfg`` that holds a single string a one-element list
    (:func:`merge_config` does it; for a config whose values were assigned in code). Returns ``cfg``."""
    for key in LIST_KEYS:
        node: Any = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, CN) else None
        if isinstance(node, CN) and isinstance(node.get(leaf), str):
            node[leaf] = [node[leaf]]
    return cfg


def _listify_if_needed(cfg: CN, key: str, value: Any) -> Any:
    """Let ``data.sources market1501`` mean ``['market1501']`` for list-valued keys."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return value
        node = node[part]
    if isinstance(node, (list, tuple)) and isinstance(value, str) and not value.lstrip().startswith(("[", "(")):
        return repr([v for v in value.split(",") if v])
    return value


def _key_from(err: KeyError) -> str:
    msg = str(err.args[0]) if err.args else str(err)
    return msg.replace("Non-existent config key:", "").strip().strip("'")


def config_hash(cfg: CN) -> str:
    """sha256 of the merged config's yaml (the run's identity, minus the output folder)."""
    clone = cfg.clone()
    clone.defrost()
    clone.data.save_dir = ""
    clone.model.resume = ""
    return hashlib.sha256(clone.dump().encode()).hexdigest()[:16]


def as_list(value: Any) -> list:
    """A str or list config value as a list (a merged config's :data:`LIST_KEYS` are lists already)."""
    if isinstance(value, str):
        return [value]
    return list(value)
