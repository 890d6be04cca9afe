"""Model families: everything that differs between the plugin's models and torchreid's, in one object.

A family answers, for a config, every question the runner, the feature extractor and the suite
used to answer with a plugin-or-torchreid branch: which model to build (and which smaller one
evaluation needs), which train/test transforms, which weight files load how, what the model
starts from (``init``), which engine trains it, whether DDP must look for unused parameters, and
what the run's ``results.json`` says about it (``loss``, ``priors``, ``method``)::

    from dcac_plugin.families import family_for
    family = family_for(cfg)                  # PluginFamily (dcac_*, clip_reid_*) or TorchreidFamily
    dm = family.build_datamanager(cfg, use_gpu=False, evaluate_only=False)
    engine = family.build_engine(cfg, dm, torch.device("cpu"))

Two families ship: :class:`PluginFamily` (DCAC and its CLIP baseline, including ``dcac_*`` with
``dcac.use_diffusion False``) and :class:`TorchreidFamily` (any ``torchreid.models`` name; it
matches every config, so it is asked last).

Adding a family (e.g. DCAC's diffusion branch around a torchreid backbone) is one new class and
one call; the runner, the extractor and the suite do not change:

1. Subclass :class:`ModelFamily` (or the family it resembles most, to inherit its answers) and
   give it a ``name``.
2. Implement :meth:`ModelFamily.matches` (e.g. ``cfg.model.name.startswith("dcac_osnet")``) and
   the abstract methods: :meth:`~ModelFamily.build_model` (honour ``encoder_only``: what
   evaluation of saved weights needs), :meth:`~ModelFamily.build_engine`,
   :meth:`~ModelFamily.build_datamanager` / :meth:`~ModelFamily.eval_transform` /
   :meth:`~ModelFamily.preprocessing` (train and test views), :meth:`~ModelFamily.load_weights`
   and :meth:`~ModelFamily.load_saved` (which weight files it reads, and how),
   :meth:`~ModelFamily.initial_weights` (``init``/``init_weights`` of ``results.json``),
   :meth:`~ModelFamily.build_inference_model` (the extractor's encoder from a weight file) and
   :meth:`~ModelFamily.loss_label`.
3. Override the defaults that differ: :meth:`~ModelFamily.check_config`,
   :meth:`~ModelFamily.prepare_engine` (e.g. a VAE moment cache),
   :meth:`~ModelFamily.find_unused_parameters`, :meth:`~ModelFamily.record_fields`,
   :attr:`~ModelFamily.encoder_only_eval`, :attr:`~ModelFamily.expects_imagenet_init`.
4. ``register_family(MyFamily())`` (before the run starts, e.g. in your package's import): it is
   asked before the built-in families, so it may claim names they would take.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from yacs.config import CfgNode

from dcac_plugin._torchreid import prints_to_log, tr
from dcac_plugin.data.manager import build_datamanager, eval_transform
from dcac_plugin.engine.build import (
    build_plugin_engine,
    build_plugin_model,
    build_torchreid_engine,
    build_torchreid_model,
    build_vae_cache,
    load_config_weights,
    plugin_model_name,
    refuse_torchreid_finetuning,
)
from dcac_plugin.models import PLUGIN_MODELS
from dcac_plugin.models import weights as model_weights  # loaders looked up on call (tests replace them)
from dcac_plugin.models.weights import WeightLoadError, read_state_dict, resolve_weight_path, unwrap_state_dict
from dcac_plugin.utils.files import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_METHODS",
    "ModelFamily",
    "PluginFamily",
    "TorchreidFamily",
    "family_for",
    "prior_files",
    "register_family",
    "registered_families",
    "tiny_method_label",
    "unregister_family",
]

# The tiny models share the method, not the ViT-B/16 of the paper's rows: label them apart.
TINY_METHODS = {"dcac_tiny": "DCAC (tiny)", "clip_reid_tiny": "CLIP baseline (tiny ViT, no diffusion branch)"}


class ModelFamily(ABC):
    """What a kind of model needs from a run: building, views, weights, engine and record fields."""

    #: short identifier (logs, tests); unique among registered families.
    name: ClassVar[str] = ""
    #: evaluating saved weights builds only the encoder (no training-only parts, no init file).
    encoder_only_eval: ClassVar[bool] = False
    #: on the real benchmark, a random init of this family is a mistake unless the suite allows it.
    expects_imagenet_init: ClassVar[bool] = False

    # ------------------------------------------------------------------ config
    @abstractmethod
    def matches(self, cfg: CfgNode) -> bool:
        """True when this family owns the configured model."""

    def model_name(self, cfg: CfgNode) -> str:
        """The model's name in ``results.json`` and the extractor (default: ``model.name``)."""
        return str(cfg.model.name)

    def check_config(self, cfg: CfgNode) -> None:  # noqa: B027 - optional hook
        """Refuse settings this family would silently ignore (raises ``ConfigError``); default: none."""

    # ------------------------------------------------------------------ data
    @abstractmethod
    def build_datamanager(self, cfg: CfgNode, use_gpu: bool, evaluate_only: bool):
        """The data manager with this family's train and test views."""

    @abstractmethod
    def eval_transform(self, cfg: CfgNode):
        """The evaluation's test transform: PIL image -> ``[3, H, W]`` normalised tensor."""

    @abstractmethod
    def preprocessing(self, cfg: CfgNode) -> tuple[list[float], list[float], str]:
        """``(pixel_mean, pixel_std, resize interpolation)`` of :meth:`eval_transform` (export metadata)."""

    # ------------------------------------------------------------------ model and engine
    @abstractmethod
    def build_model(self, cfg: CfgNode, num_classes: int, num_cams: int, *, encoder_only: bool = False,
                    load_init: bool = True, use_gpu: bool = False) -> torch.nn.Module:
        """The configured model; ``encoder_only``: what evaluation needs; ``load_init`` False: skip
        the initialisation file (the weights to evaluate overwrite it)."""

    @abstractmethod
    def build_engine(self, cfg: CfgNode, dm, device: torch.device, distributed: bool = False,
                     encoder_only: bool = False, load_init: bool = True):
        """Model, optimiser, scheduler and the engine that trains and evaluates it."""

    def prepare_engine(self, cfg: CfgNode, dm, engine, device: torch.device,  # noqa: B027 - optional hook
                       evaluate_only: bool) -> None:
        """Attach what the engine needs beyond :meth:`build_engine` (run before seeding per rank)."""

    def find_unused_parameters(self, cfg: CfgNode) -> bool:
        """Whether DDP must look for parameters without a gradient in some steps."""
        return False

    # ------------------------------------------------------------------ weights
    @abstractmethod
    def load_weights(self, model: torch.nn.Module, path: str | Path) -> Any:
        """Load a user-given weight file (``model.load_weights``) into ``model``."""

    @abstractmethod
    def load_saved(self, engine, path: str) -> None:
        """Load the run folder's own checkpoint for evaluation."""

    @abstractmethod
    def initial_weights(self, cfg: CfgNode, load_init: bool) -> tuple[str, str | None]:
        """``(init, init file)`` of ``results.json``: what the model starts from, and the file to hash."""

    def load_config_weights(self, engine, cfg: CfgNode) -> str:
        """Load ``model.load_weights`` with :meth:`load_weights`; returns the path ('' when unset)."""
        return load_config_weights(engine, cfg, self.load_weights)

    @abstractmethod
    def build_inference_model(self, cfg: CfgNode, weights: str | Path) -> torch.nn.Module:
        """The evaluation model with ``weights`` loaded (the feature extractor's)."""

    # ------------------------------------------------------------------ results.json
    @abstractmethod
    def loss_label(self, cfg: CfgNode) -> str:
        """``loss`` of ``results.json``."""

    def record_fields(self, cfg: CfgNode) -> dict[str, Any]:
        """Extra ``results.json`` fields of this family (default: none)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PluginFamily(ModelFamily):
    """DCAC (``dcac_*``) and the CLIP baseline (``clip_reid_*``, or ``dcac_*`` with ``dcac.use_diffusion False``)."""

    name = "plugin"
    encoder_only_eval = True
    expects_imagenet_init = False

    def matches(self, cfg: CfgNode) -> bool:
        return self.model_name(cfg) in PLUGIN_MODELS

    def model_name(self, cfg: CfgNode) -> str:
        return plugin_model_name(cfg)

    def uses_diffusion(self, cfg: CfgNode) -> bool:
        """DCAC proper (``dcac_*``), not the CLIP baseline."""
        return self.model_name(cfg).startswith("dcac_")

    def uses_vae_cache(self, cfg: CfgNode, evaluate_only: bool) -> bool:
        """Training DCAC from precomputed VAE moments (``dcac.sd.cache_vae_moments``)."""
        return self.uses_diffusion(cfg) and bool(cfg.dcac.sd.cache_vae_moments) and not evaluate_only

    def check_config(self, cfg: CfgNode) -> None:
        refuse_torchreid_finetuning(cfg)

    def build_datamanager(self, cfg: CfgNode, use_gpu: bool, evaluate_only: bool):
        """The paper's views; DCAC's train loader also yields the VAE view unless cached or evaluating."""
        vae_view = self.uses_diffusion(cfg) and not self.uses_vae_cache(cfg, evaluate_only) and not evaluate_only
        return build_datamanager(cfg, use_gpu=use_gpu, plugin_views=True, vae_view=vae_view)

    def eval_transform(self, cfg: CfgNode):
        return eval_transform(cfg, plugin=True)

    def preprocessing(self, cfg: CfgNode) -> tuple[list[float], list[float], str]:
        return list(cfg.dcac.pixel_mean), list(cfg.dcac.pixel_std), str(cfg.data.test_interpolation)

    def build_model(self, cfg: CfgNode, num_classes: int, num_cams: int, *, encoder_only: bool = False,
                    load_init: bool = True, use_gpu: bool = False) -> torch.nn.Module:
        return build_plugin_model(cfg, num_classes, num_cams, encoder_only=encoder_only, load_clip=load_init)

    def build_engine(self, cfg: CfgNode, dm, device: torch.device, distributed: bool = False,
                     encoder_only: bool = False, load_init: bool = True):
        return build_plugin_engine(cfg, dm, device, distributed, encoder_only=encoder_only, load_clip=load_init)

    def prepare_engine(self, cfg: CfgNode, dm, engine, device: torch.device, evaluate_only: bool) -> None:
        """Compute (or load) the VAE moment cache when DCAC trains from it."""
        if self.uses_vae_cache(cfg, evaluate_only):
            engine.vae_cache = build_vae_cache(cfg, dm, engine.model, device)

    def find_unused_parameters(self, cfg: CfgNode) -> bool:
        """The noise loss starts late, or the hard-label condition leaves the prompt learner out."""
        return bool(cfg.dcac.noise_loss_begin_epoch > 1 or cfg.dcac.cond.hard_label)

    def load_weights(self, model: torch.nn.Module, path: str | Path) -> Any:
        """Our checkpoint or an official DCAC release file (``source_*.pth``)."""
        return model_weights.load_official_dcac_checkpoint(model, path)

    def load_saved(self, engine, path: str) -> None:
        """The encoder-only model takes its weights the way a release file is read."""
        self.load_weights(engine.model, path)

    def initial_weights(self, cfg: CfgNode, load_init: bool) -> tuple[str, str | None]:
        """``clip:<file>`` when the CLIP file is read (hashed when it is a file), else ``random``."""
        if cfg.dcac.clip_weights and load_init:
            path = cfg.dcac.clip_weights
            return f"clip:{Path(path).name}", path if Path(path).is_file() else None
        return "random", None

    def build_inference_model(self, cfg: CfgNode, weights: str | Path) -> torch.nn.Module:
        """The encoder sized from the file (classes, cameras), no CLIP or SD file read."""
        sd = unwrap_state_dict(read_state_dict(weights, "model weights"), weights)
        fc = sd.get("encoder.fc.weight")
        cams = sd.get("encoder.cam_emb")
        # built with random weights and strictly overwritten from the file right below: the builder's
        # "randomly initialised" warning would be misleading here
        with _quiet("dcac_plugin.models.clip_reid"):
            model = self.build_model(cfg, int(fc.shape[0]) if fc is not None else 1,
                                     int(cams.shape[0]) if cams is not None else 0, encoder_only=True,
                                     load_init=False)
        self.load_weights(model, weights)
        return model

    def loss_label(self, cfg: CfgNode) -> str:
        return "dcac"

    def record_fields(self, cfg: CfgNode) -> dict[str, Any]:
        """``priors`` (the CLIP/SD files and their hashes); ``method`` for the tiny models."""
        fields: dict[str, Any] = {"priors": prior_files(cfg)}
        model = self.model_name(cfg)
        if model in TINY_METHODS:
            fields["method"] = tiny_method_label(model, cfg)
        return fields


class TorchreidFamily(ModelFamily):
    """Any ``torchreid.models`` name, with torchreid's transforms, optimisers and engines."""

    name = "torchreid"
    encoder_only_eval = False
    expects_imagenet_init = True

    def matches(self, cfg: CfgNode) -> bool:
        """Every config: the catch-all, asked last."""
        return True

    def build_datamanager(self, cfg: CfgNode, use_gpu: bool, evaluate_only: bool):
        """torchreid's named transforms (``data.transforms``), as torchreid builds them."""
        return build_datamanager(cfg, use_gpu=use_gpu, plugin_views=False, vae_view=False)

    def eval_transform(self, cfg: CfgNode):
        return eval_transform(cfg, plugin=False)

    def preprocessing(self, cfg: CfgNode) -> tuple[list[float], list[float], str]:
        return list(cfg.data.norm_mean), list(cfg.data.norm_std), "bilinear"

    def build_model(self, cfg: CfgNode, num_classes: int, num_cams: int, *, encoder_only: bool = False,
                    load_init: bool = True, use_gpu: bool = False) -> torch.nn.Module:
        return build_torchreid_model(cfg, num_classes, use_gpu)

    def build_engine(self, cfg: CfgNode, dm, device: torch.device, distributed: bool = False,
                     encoder_only: bool = False, load_init: bool = True):
        return build_torchreid_engine(cfg, dm, device)

    def load_weights(self, model: torch.nn.Module, path: str | Path) -> Any:
        """A torchreid checkpoint (or ImageNet weights): matching tensors, classifier may differ."""
        return model_weights.load_torchreid_pretrained(model, path)

    def load_saved(self, engine, path: str) -> None:
        """Our own checkpoint, through the engine (model, optimiser and epoch)."""
        engine.resume(path)

    def initial_weights(self, cfg: CfgNode, load_init: bool) -> tuple[str, str | None]:
        """``imagenet:<file>`` with ``model.pretrained``, else ``random``."""
        if cfg.model.pretrained:
            return f"imagenet:{Path(cfg.model.pretrained_path).name}", cfg.model.pretrained_path
        return "random", None

    def build_inference_model(self, cfg: CfgNode, weights: str | Path) -> torch.nn.Module:
        """Built by name with ``num_classes`` from the file's classifier; every other tensor must load.

        Raises:
            WeightLoadError: tensors other than the classifier's are missing from the file.
        """
        sd = unwrap_state_dict(read_state_dict(weights, "model weights"), weights)
        fc_keys = [k for k in sd if k.endswith("classifier.weight")]
        num_classes = int(sd[fc_keys[0]].shape[0]) if fc_keys else 1
        with prints_to_log(logging.DEBUG):
            model = tr.models.build_model(cfg.model.name, num_classes, loss=cfg.loss.name, pretrained=False,
                                          use_gpu=False)
        report = self.load_weights(model, weights)
        missing = [k for k in report.missing if "classifier" not in k]
        if missing:
            raise WeightLoadError(
                f"'{weights}' does not hold the whole {cfg.model.name} model: {len(missing)} tensors missing "
                f"(e.g. {missing[:5]}); is it a checkpoint of this architecture (model.name)?")
        return model

    def loss_label(self, cfg: CfgNode) -> str:
        return "softmax+triplet" if cfg.loss.name == "triplet" else "softmax"


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------

_BUILTIN: tuple[ModelFamily, ...] = (PluginFamily(), TorchreidFamily())
_REGISTERED: list[ModelFamily] = []


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family``; it is asked before the families registered earlier and the built-in ones.

    Returns:
        ``family`` (so that ``register_family`` can wrap a construction).

    Raises:
        TypeError: ``family`` is not a :class:`ModelFamily` instance.
        ValueError: a registered family already has its ``name``.
    """
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_family takes a ModelFamily instance, got {type(family).__name__}")
    if any(f.name == family.name for f in registered_families()):
        raise ValueError(f"a model family named {family.name!r} is already registered")
    _REGISTERED.insert(0, family)
    return family


def unregister_family(family: ModelFamily) -> None:
    """Remove a family added by :func:`register_family` (built-in ones stay)."""
    _REGISTERED.remove(family)


def registered_families() -> tuple[ModelFamily, ...]:
    """Every family, in the order :func:`family_for` asks them."""
    return (*_REGISTERED, *_BUILTIN)


def family_for(cfg: CfgNode) -> ModelFamily:
    """The family of the configured model: the first registered one whose ``matches(cfg)`` is true."""
    for family in registered_families():
        if family.matches(cfg):
            return family
    raise LookupError(f"no model family for model.name '{cfg.model.name}'")  # unreachable: torchreid takes all


# ------------------------------------------------------------------------------------------------
# plugin record fields
# ------------------------------------------------------------------------------------------------


def prior_files(cfg: CfgNode) -> dict[str, dict[str, str]]:
    """The pretrained weight files a plugin model starts from: ``{"clip"|"sd": {"file", "sha256"}}``.

    ``sd`` only when the model has a diffusion branch; an empty path is recorded as random init.
    """
    out = {}
    wanted = [("clip", cfg.dcac.clip_weights)]
    if PluginFamily().uses_diffusion(cfg):
        wanted.append(("sd", cfg.dcac.sd.weights))
    for key, path in wanted:
        found = resolve_weight_path(path)
        if not path:
            out[key] = {"file": "", "sha256": "", "init": "random"}
        elif Path(found).is_file():
            out[key] = {"file": str(path), "sha256": file_sha256(found)}
        else:  # a diffusers folder
            out[key] = {"file": str(path), "sha256": ""}
    return out


def tiny_method_label(model: str, cfg: CfgNode) -> str:
    """Leaderboard label of a tiny model; variants that change what the method starts from or feeds
    back are named (``[random-init CLIP]``, ``[random-init SD]``, ``[hard-label condition]``) so that
    they never share a row with the plain method."""
    tags = []
    if not cfg.dcac.clip_weights:
        tags.append("random-init CLIP")
    if model == "dcac_tiny":
        if not cfg.dcac.sd.weights:
            tags.append("random-init SD")
        if cfg.dcac.cond.hard_label:
            tags.append("hard-label condition")
    base = TINY_METHODS[model]
    return f"{base} [{', '.join(tags)}]" if tags else base


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence one logger below ERROR for the duration."""
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)
