"""DCAC training engine (docs/METHOD.md §6-§7): ID + PCL + denoising losses in one step."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcac_plugin import distributed as dist_utils
from dcac_plugin._torchreid import tr
from dcac_plugin.engine.base import NonFiniteLossError, PluginEngineMixin
from dcac_plugin.engine.memory import PrototypeMemory
from dcac_plugin.utils.precision import AMP_MODES, resolve_amp  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


class DCACEngine(PluginEngineMixin, tr.engine.Engine):
    """torchreid ``Engine`` for DCAC and its CLIP baseline (``model.diffusion is None``).

    Args:
        datamanager: torchreid ``ImageDataManager`` whose train loader yields ``[x, x_vae]``
            (or only ``x`` for the baseline).
        model: a :class:`dcac_plugin.models.dcac.DCAC`.
        optimizer, scheduler: built by the caller (Adam + coupled L2, per-epoch warm-up schedule).
        memory_loader: the training set in a fixed order with the memory view (bicubic resize,
            normalise; see :func:`dcac_plugin.data.transforms.memory_transform`).
        id_weight, pcl_weight, ldm_weight: loss weights.
        label_smooth: label smoothing of the ID loss.
        noise_loss_begin_epoch: first (1-based) epoch with the denoising loss.
        pcl_temperature, pcl_momentum, pcl_hard_update: prototype memory settings.
        amp: ``'auto' | 'off' | 'fp16' | 'bf16'`` (see :func:`resolve_amp`).
        device: the run's device.
        noise_seed: seed of the per-step generator of diffusion timesteps and noises: step ``s``
            draws from ``Generator().manual_seed(noise_seed, s)`` for the whole (global) batch, so
            a run is reproducible, resumes exactly, and a batch split over DDP ranks gets the
            noise one process would draw.
        vae_cache: optional :class:`dcac_plugin.data.vae_cache.VAEMomentCache`; the step then
            reads the VAE posterior moments by image path instead of running the VAE encoder.
    """

    uses_torchreid_step = False

    def __init__(self, datamanager, model, optimizer, scheduler, *, memory_loader, device: torch.device,
                 id_weight: float = 1.0, pcl_weight: float = 1.0, ldm_weight: float = 1.0,
                 label_smooth: float = 0.1, noise_loss_begin_epoch: int = 1, pcl_temperature: float = 0.01,
                 pcl_momentum: float = 0.2, pcl_hard_update: bool = True, amp: str = "off",
                 noise_seed: int = 0, vae_cache=None) -> None:
        super().__init__(datamanager, use_gpu=device.type == "cuda")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.memory_loader = memory_loader
        self.id_weight, self.pcl_weight, self.ldm_weight = id_weight, pcl_weight, ldm_weight
        self.label_smooth = label_smooth
        self.noise_loss_begin_epoch = noise_loss_begin_epoch
        self.num_classes = datamanager.num_train_pids
        self.memory = PrototypeMemory(self.num_classes, dim=model.feat_dim, temperature=pcl_temperature,
                                      momentum=pcl_momentum, hard_update=pcl_hard_update).to(device)
        self.amp, use_scaler = resolve_amp(amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.device = device
        self.noise_seed = int(noise_seed)
        self.vae_cache = vae_cache
        self.train_model = model
        cond = getattr(model, "condition", None)
        self.needs_memory = cond is not None and cond.prob_type in ("pcl", "fc+pcl")
        self.uses_sie = getattr(model.encoder, "cam_emb", None) is not None

    # --------------------------------------------------------------- state
    def model_state(self) -> dict[str, torch.Tensor]:
        """Only what is trained: encoder, heads, prompts, LoRA (not the frozen UNet/VAE)."""
        return self.model.trainable_state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_trainable_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])

    # ------------------------------------------------------------ training
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.no_grad()
    def rebuild_memory(self) -> None:
        """docs/METHOD.md §6.2: prototypes = normalised per-label means of eval-mode after-BN features.

        Under DDP each rank encodes its shard of the training set (the memory loader is
        sharded by the caller) and the features are all-gathered, so every rank builds the
        same memory.
        """
        self.model.eval()
        feats, labels = [], []
        for data in self.memory_loader:
            x = data["img"]
            if isinstance(x, (list, tuple)):
                x = x[0]
            cams = data["camid"].to(self.device) if self.uses_sie else None
            with self._autocast():
                f = self.model(x.to(self.device), cam_ids=cams)
            feats.append(f.float())
            labels.append(data["pid"].to(self.device))
        f_all = dist_utils.all_gather_cat(torch.cat(feats))
        y_all = dist_utils.all_gather_cat(torch.cat(labels))
        self.memory.build(f_all, y_all)
        self.model.train()

    def on_epoch_start(self) -> None:
        if self.pcl_weight > 0 or self.needs_memory:
            self.rebuild_memory()

    def use_ldm(self) -> bool:
        """Whether the denoising loss is active in the current epoch (1-based comparison)."""
        return self.model.diffusion is not None and self.ldm_weight > 0 and \
            self.epoch + 1 >= self.noise_loss_begin_epoch

    def _ldm_inputs(self, data: dict, x_vae: torch.Tensor | None) -> dict[str, Any]:
        """VAE view or cached moments, plus this step's timesteps and noises (see ``noise_seed``)."""
        diffusion = self.model.diffusion
        if self.vae_cache is not None:
            moments = self.vae_cache.lookup(list(data["impath"]), device=self.device)
            inputs: dict[str, Any] = {"vae_moments": moments}
            b, hw = moments.shape[0], tuple(moments.shape[-2:])
        else:
            if x_vae is None:
                raise RuntimeError("the DCAC engine needs the VAE view: build the data manager with vae_view=True")
            inputs = {"x_vae": x_vae.to(self.device, non_blocking=True)}
            b = x_vae.shape[0]
            hw = (x_vae.shape[-2] // diffusion.vae_downsample, x_vae.shape[-1] // diffusion.vae_downsample)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.noise_seed * 1_000_003 + self.global_step)
        world, rank = dist_utils.world_size(), dist_utils.rank()
        inputs["ldm_noise"] = diffusion.draw_noise(b, hw, gen, self.device, offset=rank * b, total=world * b)
        return inputs

    def forward_backward(self, data: dict) -> dict[str, float]:
        imgs = data["img"]
        x_vae = None
        if isinstance(imgs, (list, tuple)):
            imgs, x_vae = imgs[0], imgs[1]
        x = imgs.to(self.device, non_blocking=True)
        pids = data["pid"].to(self.device)
        use_ldm = self.use_ldm()
        ldm_inputs = self._ldm_inputs(data, x_vae) if use_ldm else {}
        memory = self.memory.snapshot() if self.needs_memory else None
        with self._autocast():
            cams = data["camid"].to(self.device) if self.uses_sie else None
            out = self.train_model(x, labels=pids, memory=memory, cam_ids=cams, **ldm_inputs)
            logits = out["logits"].float()
            loss_id = F.cross_entropy(logits, pids, label_smoothing=self.label_smooth)
            loss_pcl = self.memory.loss(out["z"].float(), pids) if self.pcl_weight > 0 else logits.new_zeros(())
            loss_ldm = out["loss_ldm"].float() if use_ldm else logits.new_zeros(())
            loss = self.id_weight * loss_id + self.pcl_weight * loss_pcl + self.ldm_weight * loss_ldm
        terms = {"loss_id": loss_id.item(), "loss_pcl": loss_pcl.item(), "loss_ldm": loss_ldm.item()}
        if not math.isfinite(loss.item()) and not self.scaler.is_enabled():
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, step {self.global_step + 1}: "
                + ", ".join(f"{k}={v}" for k, v in terms.items())
                + f". The last good checkpoint is in {self.save_dir}; lower train.lr or try train.amp off."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        acc = (logits.argmax(1) == pids).float().mean().item() * 100
        return {"loss": loss.item(), **terms, "acc": acc}

    @torch.no_grad()
    def _features(self, loader):
        """Eval features; with SIE the camera ids of the test images index the camera embedding
        (they must be training cameras, i.e. in-domain evaluation)."""
        if not self.uses_sie:
            return super()._features(loader)
        feats, pids, camids = [], [], []
        for data in loader:
            imgs, p, c = self.parse_data_for_eval(data)
            feats.append(self.raw_model()(imgs.to(self.device), cam_ids=c.to(self.device)).float().cpu())
            pids.append(p.numpy())
            camids.append(c.numpy())
        return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)

    def two_stepped_transfer_learning(self, epoch, fixbase_epoch, open_layers, model=None) -> None:
        """Not part of the method (all parts train from epoch 1)."""
