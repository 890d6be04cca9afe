"""Tiny pretrained priors: a tiny CLIP (both towers) and a tiny Stable Diffusion (VAE + text-conditioned UNet).

DCAC starts from a pretrained CLIP image encoder and a pretrained SD UNet/VAE. At the tiny sizes
that a CPU trains in minutes (``dcac_tiny`` / ``clip_reid_tiny``) no such weights exist, so this
module makes them, on the captioned corpus of :mod:`dcac_plugin.data.corpus` (a generated domain
that the benchmark never contains):

1. **CLIP**: an open_clip ``CLIP`` whose image tower is the tiny re-ID ViT
   (``resources/tiny/vision/config.json``) and whose text tower is a tiny causal transformer
   (:data:`TEXT_CFG`, width = the tiny UNet's ``cross_attention_dim``), trained with open_clip's
   ``ClipLoss`` on image–caption pairs (images normalised with mean = std = 0.5, the re-ID
   encoder's normalisation). Saved in the key layout of OpenAI's CLIP state dict (``visual.*``,
   ``token_embedding.weight``, ``transformer.resblocks.*``, ``ln_final.*``, ``text_projection``,
   ``logit_scale``) in fp16, as OpenAI ships ViT-B/16, as a safetensors file: ``dcac.clip_weights``
   reads it through :func:`dcac_plugin.models.weights.load_clip_visual_state_dict`.
2. **VAE**: the tiny ``AutoencoderKL`` (``resources/tiny/vae``) trained on the diffusion view
   (64 x 64) with an L2 reconstruction loss and a small KL term; afterwards an exact
   reparametrisation (latent scale folded into ``quant_conv`` / ``post_quant_conv``) makes
   ``scaling_factor · z`` unit-variance on the corpus, as SD's 0.18215 does for SD's VAE.
3. **UNet**: the tiny ``UNet2DConditionModel`` (``resources/tiny/unet``), conditioned on the tiny
   CLIP text tower's final token states (``ln_final`` output, [B, 32, 32], as SD uses CLIP's last
   hidden states), ε-prediction on the SD-1.5 schedule (scaled-linear β 0.00085–0.012, T = 1000),
   10 % of captions dropped to the empty caption (classifier-free guidance at sampling time).
   VAE and UNet are saved together in the original CompVis single-file layout
   (``first_stage_model.*`` + ``model.diffusion_model.*``), which ``dcac.sd.weights`` reads
   through :func:`dcac_plugin.models.weights.load_sd_single_file`.

Every stage is seeded and resumable (a checkpoint every ``ckpt_every`` steps under
``<output>/work``); a finished stage is never trained again.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDIMScheduler
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from dcac_plugin.data.corpus import CorpusSpec, load_or_make_corpus
from dcac_plugin.models.clip_reid import resolve_vision_config
from dcac_plugin.models.diffusion import build_unet, build_vae, scaled_linear_betas
from dcac_plugin.models.ldm_export import export_ldm_checkpoint
from dcac_plugin.models.weights import load_sd_single_file, read_state_dict
from dcac_plugin.shipped import CLIP_FILE, PRIORS_DIR, REPORT_FILE, RESOURCES, SD_FILE  # noqa: F401  (re-exported)
from dcac_plugin.utils.files import file_sha256
from dcac_plugin.utils.io import atomic_write_json

logger = logging.getLogger(__name__)


#: Tiny text tower: width = the tiny UNet's cross_attention_dim (32); OpenAI's BPE vocabulary.
TEXT_CFG: dict[str, Any] = {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 3}


@dataclass(frozen=True)
class PretrainConfig:
    """Steps and optimiser settings of the three stages (the defaults made the shipped files)."""

    seed: int = 0
    clip_steps: int = 600
    clip_batch: int = 128
    clip_lr: float = 2e-3
    vae_steps: int = 300
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl: float = 1e-4
    unet_steps: int = 800
    unet_batch: int = 64
    unet_lr: float = 2e-3
    uncond_prob: float = 0.1
    ckpt_every: int = 200


# ------------------------------------------------------------------------------------------ models


def build_tiny_clip() -> nn.Module:
    """The tiny open_clip ``CLIP``: image tower = the tiny re-ID ViT, text tower = :data:`TEXT_CFG` (random)."""
    vcfg = resolve_vision_config("tiny")
    vc = dict(vcfg["vision_cfg"])
    vc["image_size"] = tuple(vc["image_size"])
    return CLIP(embed_dim=int(vcfg["embed_dim"]), vision_cfg=CLIPVisionCfg(**vc), text_cfg=CLIPTextCfg(**TEXT_CFG),
                quick_gelu=bool(vcfg.get("quick_gelu", True)))


def clip_file_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in OpenAI's CLIP key layout, fp16 (as OpenAI ships them)."""
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}


def load_tiny_clip(path: str | os.PathLike) -> nn.Module:
    """A tiny CLIP with the weights of a file written by :func:`clip_file_state` (strict, fp32)."""
    model = build_tiny_clip()
    sd = read_state_dict(path, "tiny CLIP")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


def tokenize(captions: list[str]) -> torch.Tensor:
    """open_clip's BPE tokens of ``captions``: [B, context_length] int64."""
    return open_clip.tokenize(list(captions), context_length=TEXT_CFG["context_length"])


def text_token_states(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Final-layer token states of the text tower (after ``ln_final``): [B, L, width] — the UNet's context."""
    x = clip.token_embedding(tokens) + clip.positional_embedding
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    return clip.ln_final(x)


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W] in [-1, 1] (mean = std = 0.5 normalisation)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def fold_latent_scale(vae: nn.Module, k: float) -> None:
    """Multiply the VAE's latents by ``k`` without changing what it reconstructs (exact).

    ``quant_conv``'s mean half is scaled by k and its log-variance half shifted by 2·ln k (the
    posterior N(kμ, k²σ²)); ``post_quant_conv`` divides its input by k.
    """
    c = int(vae.config.latent_channels)
    with torch.no_grad():
        vae.quant_conv.weight[:c] *= k
        vae.quant_conv.bias[:c] *= k
        vae.quant_conv.bias[c:] += 2.0 * math.log(k)
        vae.post_quant_conv.weight *= 1.0 / k


def sd_schedule(num_train_timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t of SD-1.5's scaled-linear schedule (β 0.00085 → 0.012): [T]."""
    return torch.cumprod(1.0 - scaled_linear_betas(num_train_timesteps), 0).float()


# ------------------------------------------------------------------------------------------ training


def _lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train_loop(name: str, work: Path, modules: dict[str, nn.Module], params: list[torch.Tensor], steps: int,
                lr: float, seed: int, ckpt_every: int, step_fn) -> float:
    """Seeded, resumable AdamW loop; ``step_fn(step, generator) -> loss``. Returns the loop's wall time."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    ckpt = work / f"{name}.ckpt.pt"
    start, spent = 0, 0.0
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=True)
        for key, m in modules.items():
            m.load_state_dict(st["modules"][key])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        start, spent = int(st["step"]), float(st["wall_s"])
        logger.info("%s: resuming at step %d/%d", name, start, steps)
    t0 = time.perf_counter()
    running = None
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr)
        loss = step_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if (step + 1) % 100 == 0:
            logger.info("%s: step %d/%d loss %.4f (%.0f s)", name, step + 1, steps, running,
                        spent + time.perf_counter() - t0)
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            torch.save({"modules": {k: m.state_dict() for k, m in modules.items()}, "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": step + 1,
                        "wall_s": spent + time.perf_counter() - t0}, tmp)
            os.replace(tmp, ckpt)
    return spent + time.perf_counter() - t0


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip per image and one random pad-and-crop shift per batch: [B, 3, H, W]."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    h, w = x.shape[-2:]
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return F.pad(x, (pad, pad, pad, pad), value=0.0)[:, :, dy:dy + h, dx:dx + w]


def train_clip(corpus: dict[str, np.ndarray], train_idx: np.ndarray, cfg: PretrainConfig,
               work: Path) -> tuple[nn.Module, float]:
    """Stage 1: contrastive image–caption training of the tiny CLIP (open_clip ``ClipLoss``)."""
    torch.manual_seed(cfg.seed)
    model = build_tiny_clip().train()
    caps, inv = np.unique(corpus["captions"], return_inverse=True)
    tokens = tokenize(list(caps))
    loss_fn = ClipLoss()

    def step(_: int, gen: torch.Generator) -> torch.Tensor:
        idx = train_idx[torch.randint(0, len(train_idx), (cfg.clip_batch,), generator=gen).numpy()]
        x = _augment(to_model_range(corpus["images"][idx]), gen)
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(tokens[inv[idx]], normalize=True)
        return loss_fn(img, txt, model.logit_scale.exp())

    wall = _train_loop("clip", work, {"model": model}, list(model.parameters()), cfg.clip_steps, cfg.clip_lr,
                       cfg.seed + 1, cfg.ckpt_every, step)
    return model.eval(), wall


def train_vae(corpus: dict[str, np.ndarray], train_idx: np.ndarray, cfg: PretrainConfig,
              work: Path) -> tuple[nn.Module, float]:
    """Stage 2: the tiny VAE on the diffusion view (L2 reconstruction + ``vae_kl`` · KL)."""
    torch.manual_seed(cfg.seed + 10)
    vae = build_vae("tiny").train()

    def step(_: int, gen: torch.Generator) -> torch.Tensor:
        idx = train_idx[torch.randint(0, len(train_idx), (cfg.vae_batch,), generator=gen).numpy()]
        x = to_model_range(corpus["vae_images"][idx])
        x = torch.where((torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        return F.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean() / post.mean[0].numel()

    wall = _train_loop("vae", work, {"vae": vae}, list(vae.parameters()), cfg.vae_steps, cfg.vae_lr,
                       cfg.seed + 11, cfg.ckpt_every, step)
    return vae.eval(), wall


@torch.no_grad()
def vae_moments(vae: nn.Module, vae_images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior moments (mean ‖ logvar) of uint8 [N, S, S, 3] views: [N, 2C, S/8, S/8]."""
    out = [vae.encode(to_model_range(vae_images[i:i + batch])).latent_dist.parameters
           for i in range(0, len(vae_images), batch)]
    return torch.cat(out)


def _latents(moments: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    mean, logvar = moments.chunk(2, dim=1)
    return scale * (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape, generator=gen))


def train_unet(moments: torch.Tensor, ctx: torch.Tensor, ctx_index: np.ndarray, empty_ctx: torch.Tensor,
               scale: float, cfg: PretrainConfig, work: Path) -> tuple[nn.Module, float]:
    """Stage 3: ε-prediction on the SD-1.5 schedule, conditioned on frozen text token states.

    Args:
        moments: [N, 2C, h, w] VAE moments of the training images.
        ctx: [U, L, 32] text token states of the U distinct captions; ``ctx_index`` [N] picks one.
        empty_ctx: [1, L, 32] states of the empty caption (the unconditional branch).
    """
    torch.manual_seed(cfg.seed + 20)
    unet = build_unet("tiny").train()
    ac = sd_schedule()

    def step(_: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(moments), (cfg.unet_batch,), generator=gen)
        z0 = _latents(moments[idx], scale, gen)
        t = torch.randint(0, len(ac), (cfg.unet_batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        c = ctx[torch.from_numpy(ctx_index[idx.numpy()])]
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.uncond_prob
        c = torch.where(drop.view(-1, 1, 1), empty_ctx.expand_as(c), c)
        return F.mse_loss(unet(xt, t, encoder_hidden_states=c).sample, noise)

    wall = _train_loop("unet", work, {"unet": unet}, list(unet.parameters()), cfg.unet_steps, cfg.unet_lr,
                       cfg.seed + 21, cfg.ckpt_every, step)
    return unet.eval(), wall


# ------------------------------------------------------------------------------------------ figures


def retrieval_r1(img: torch.Tensor, txt: torch.Tensor, img_caption: np.ndarray) -> dict[str, float]:
    """Caption↔image R@1 (%) with the exact chance level of a random ranking.

    Args:
        img: [N, E] L2-normalised image embeddings.
        txt: [U, E] L2-normalised embeddings of the U distinct captions.
        img_caption: [N] index of each image's caption in ``txt``.

    Returns:
        ``image_to_caption`` (top caption is the image's own), ``caption_to_image`` (top image
        carries the caption), and their chance levels (1/U; mean over captions of n_u/N).
    """
    sim = img @ txt.t()
    i2t = float((sim.argmax(1).numpy() == img_caption).mean())
    top_img = sim.argmax(0).numpy()
    t2i = float((img_caption[top_img] == np.arange(txt.shape[0])).mean())
    counts = np.bincount(img_caption, minlength=txt.shape[0])
    return {"image_to_caption_r1": 100 * i2t, "caption_to_image_r1": 100 * t2i,
            "image_to_caption_chance": 100 / txt.shape[0],
            "caption_to_image_chance": 100 * float(counts.mean() / len(img))}


@torch.no_grad()
def clip_retrieval(clip: nn.Module, images: np.ndarray, captions: np.ndarray) -> dict[str, float]:
    """:func:`retrieval_r1` of ``clip`` on uint8 images [N, 128, 64, 3] and their captions [N]."""
    caps, inv = np.unique(captions, return_inverse=True)
    img = torch.cat([clip.encode_image(to_model_range(images[i:i + 256]), normalize=True)
                     for i in range(0, len(images), 256)])
    txt = clip.encode_text(tokenize(list(caps)), normalize=True)
    return {**retrieval_r1(img, txt, inv), "captions": int(len(caps)), "images": int(len(images))}


@torch.no_grad()
def heldout_denoising_loss(unet: nn.Module, moments: torch.Tensor, ctx: torch.Tensor, scale: float,
                           seed: int = 123, repeats: int = 4) -> float:
    """Mean ε-MSE on held-out latents with fixed (seeded) timesteps and noises; ``ctx`` [N, L, 32]."""
    gen = torch.Generator().manual_seed(seed)
    ac = sd_schedule()
    total, n = 0.0, 0
    for _ in range(repeats):
        for i in range(0, len(moments), 256):
            m, c = moments[i:i + 256], ctx[i:i + 256]
            z0 = _latents(m, scale, gen)
            t = torch.randint(0, len(ac), (len(m),), generator=gen)
            noise = torch.randn(z0.shape, generator=gen)
            a = ac[t].view(-1, 1, 1, 1)
            pred = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=c).sample
            total += float(F.mse_loss(pred, noise, reduction="sum"))
            n += noise.numel()
    return total / n


@torch.no_grad()
def sample_images(unet: nn.Module, vae: nn.Module, ctx: torch.Tensor, empty_ctx: torch.Tensor, scale: float,
                  seed: int = 0, steps: int = 30, guidance: float = 3.0) -> torch.Tensor:
    """DDIM samples (SD-1.5 schedule, classifier-free guidance) for each context: [B, 3, S, S] in [0, 1]."""
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(steps)
    b = ctx.shape[0]
    h = int(unet.config.sample_size)
    x = torch.randn((b, int(unet.config.in_channels), h, h), generator=torch.Generator().manual_seed(seed))
    both = torch.cat([empty_ctx.expand(b, -1, -1), ctx])
    for t in sched.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=both).sample.chunk(2)
        x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
    return (vae.decode(x / scale).sample.clamp(-1, 1) + 1) / 2


def save_grid(path: Path, rows: list[tuple[np.ndarray, torch.Tensor]], captions: list[str]) -> None:
    """PNG: per row one real held-out image (left, 128x64) then generated ones un-squashed to 128x64."""
    tiles_w, gap, text_h = 64, 4, 14
    n = max(1 + s.shape[0] for _, s in rows)
    W = n * (tiles_w + gap) + gap + 8
    H = len(rows) * (128 + text_h + gap) + gap
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = gap
    for (real, samples), cap in zip(rows, captions, strict=True):
        draw.text((gap, y), cap, fill=(0, 0, 0))
        y += text_h
        canvas.paste(Image.fromarray(real), (gap, y))
        for j, s in enumerate(samples):
            arr = (s.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            tile = Image.fromarray(arr).resize((64, 128), Image.BICUBIC)
            canvas.paste(tile, (gap + 8 + (j + 1) * (tiles_w + gap), y))
        y += 128 + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ driver


def _vae_stage(work: str, cfg: PretrainConfig, spec: CorpusSpec) -> None:
    """Second process: train the VAE, fold the latent scale, write ``vae.pt`` and ``vae_stage.json``."""
    torch.set_num_threads(1)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    w = Path(work)
    corpus = load_or_make_corpus(w / "corpus.npz", spec)
    train_idx = np.flatnonzero(corpus["identity"] < spec.train_ids)
    vae, wall = train_vae(corpus, train_idx, cfg, w)
    t0 = time.perf_counter()
    scale = float(vae.config.scaling_factor)
    mean = vae_moments(vae, corpus["vae_images"][train_idx[:4096]]).chunk(2, dim=1)[0]
    k = 1.0 / (scale * float(mean.std()))
    fold_latent_scale(vae, k)
    tmp = w / "vae.pt.tmp"
    torch.save(vae.state_dict(), tmp)
    os.replace(tmp, w / "vae.pt")
    atomic_write_json({"vae_s": wall + time.perf_counter() - t0, "latent_fold": k}, w / "vae_stage.json")


def pretrain_priors(output: str | os.PathLike, cfg: PretrainConfig = PretrainConfig(),
                    corpus_spec: CorpusSpec = CorpusSpec(), grid: str | os.PathLike | None = None,
                    work: str | os.PathLike | None = None) -> dict[str, Any]:
    """Make the corpus and the three priors; write ``clip_tiny.safetensors``, ``sd_tiny.safetensors``
    and ``priors.json`` (sanity figures, wall times, sha256) into ``output``.

    Resumable: the corpus is cached as ``corpus.npz`` in the ``work`` folder; each stage checkpoints;
    a stage whose result file exists is not trained again.

    Args:
        output: output folder.
        cfg: training settings.
        corpus_spec: corpus size and seed.
        grid: where to write the sample-grid PNG (default ``<output>/samples.png``).
        work: folder of the corpus cache and the checkpoints (default: a ``work`` folder inside
            ``output``; the command line keeps it outside the package, in ``output/priors-work``).

    Returns:
        The report written to ``priors.json``.
    """
    out = Path(output)
    work = Path(work) if work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    corpus = load_or_make_corpus(work / "corpus.npz", corpus_spec)
    wall: dict[str, float] = {"corpus_s": time.perf_counter() - t0}
    split = _Split.of(corpus, corpus_spec)
    stages = _Stages(work / "stages.json")
    # the VAE trains in a second process (one thread) while CLIP trains here: the stages are independent
    vae_proc = _start_vae_stage(out, work, cfg, corpus_spec)
    clip, clip_fig = _clip_stage(out, work, corpus, split, cfg, stages)
    text = _CaptionStates.of(clip, corpus["captions"])
    _join_vae_stage(vae_proc, work / "vae.pt")
    _unet_stage(out, work, corpus, split, text, cfg, stages)
    wall.update({k: stages.data[k] for k in ("clip_s", "vae_s", "unet_s") if k in stages.data})
    sd_fig = _sd_figures(out / SD_FILE, corpus, split, text, cfg, Path(grid) if grid else out / "samples.png")
    report = _report(out, cfg, corpus_spec, split, text, clip_fig, sd_fig, wall, t_all)
    atomic_write_json(report, out / REPORT_FILE)
    return report


@dataclass(frozen=True)
class _Split:
    """Corpus image indices of the training identities and of the held-out ones."""

    train_idx: np.ndarray
    held_idx: np.ndarray
    images: int

    @classmethod
    def of(cls, corpus: dict[str, np.ndarray], spec: CorpusSpec) -> _Split:
        ids = corpus["identity"]
        return cls(np.flatnonzero(ids < spec.train_ids), np.flatnonzero(ids >= spec.train_ids), len(ids))


class _Stages:
    """Wall times (and the VAE's latent fold) of the finished stages, kept in ``stages.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def save(self) -> None:
        atomic_write_json(self.data, self.path)


@dataclass(frozen=True)
class _CaptionStates:
    """The distinct captions, each image's caption index, and the frozen CLIP text tower's token states."""

    caps: np.ndarray
    inv: np.ndarray
    ctx: torch.Tensor  # [U, L, 32], one per distinct caption
    empty_ctx: torch.Tensor  # [1, L, 32], the empty caption

    @classmethod
    @torch.no_grad()
    def of(cls, clip: nn.Module, captions: np.ndarray) -> _CaptionStates:
        caps, inv = np.unique(captions, return_inverse=True)
        ctx = torch.cat([text_token_states(clip, tokenize(list(caps[i:i + 512]))) for i in range(0, len(caps), 512)])
        return cls(caps, inv, ctx, text_token_states(clip, tokenize([""])))


def _start_vae_stage(out: Path, work: Path, cfg: PretrainConfig, spec: CorpusSpec) -> Any:
    """Start :func:`_vae_stage` in a spawned process unless its result (or the SD file) exists; the process or None."""
    if (out / SD_FILE).is_file() or (work / "vae.pt").is_file():
        return None
    proc = mp.get_context("spawn").Process(target=_vae_stage, args=(str(work), cfg, spec))
    proc.start()
    return proc


def _join_vae_stage(proc: Any, vae_file: Path) -> None:
    """Wait for the VAE process (if one was started); RuntimeError when it failed."""
    if proc is None:
        return
    proc.join()
    if proc.exitcode != 0 or not vae_file.is_file():
        raise RuntimeError(f"the VAE stage failed (exit code {proc.exitcode}); rerun the same command to resume")


def _clip_stage(out: Path, work: Path, corpus: dict[str, np.ndarray], split: _Split, cfg: PretrainConfig,
                stages: _Stages) -> tuple[nn.Module, dict[str, Any]]:
    """Train and save the CLIP prior unless it exists; return it (as read back) and its held-out retrieval."""
    clip_path = out / CLIP_FILE
    torch.manual_seed(cfg.seed)
    untrained_clip = build_tiny_clip().eval()
    if not clip_path.is_file():
        clip, stages.data["clip_s"] = train_clip(corpus, split.train_idx, cfg, work)
        tmp = work / (CLIP_FILE + ".tmp")
        save_file(clip_file_state(clip), str(tmp), metadata={"format": "pt", "layout": "openai-clip"})
        os.replace(tmp, clip_path)
        stages.save()
    clip = load_tiny_clip(clip_path)
    held_imgs, held_caps = corpus["images"][split.held_idx], corpus["captions"][split.held_idx]
    clip_fig = {"trained": clip_retrieval(clip, held_imgs, held_caps),
                "untrained": clip_retrieval(untrained_clip, held_imgs, held_caps)}
    logger.info("CLIP held-out retrieval: %s", clip_fig)
    return clip, clip_fig


def _unet_stage(out: Path, work: Path, corpus: dict[str, np.ndarray], split: _Split, text: _CaptionStates,
                cfg: PretrainConfig, stages: _Stages) -> None:
    """Unless the SD file exists: train the UNet on the finished VAE's latents and save both as one file."""
    sd_path = out / SD_FILE
    if sd_path.is_file():
        return
    vae = build_vae("tiny")
    vae.load_state_dict(torch.load(work / "vae.pt", map_location="cpu", weights_only=True))
    vae.eval()
    stages.data.update(json.loads((work / "vae_stage.json").read_text()))
    scale = float(vae.config.scaling_factor)
    moments = vae_moments(vae, corpus["vae_images"][split.train_idx])
    unet, stages.data["unet_s"] = train_unet(moments, text.ctx, text.inv[split.train_idx], text.empty_ctx, scale,
                                             cfg, work)
    tmp = work / (SD_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in export_ldm_checkpoint(unet, vae).items()}, str(tmp),
              metadata={"format": "pt", "layout": "compvis-ldm"})
    os.replace(tmp, sd_path)
    stages.save()


def _sd_figures(sd_path: Path, corpus: dict[str, np.ndarray], split: _Split, text: _CaptionStates,
                cfg: PretrainConfig, grid_path: Path) -> dict[str, Any]:
    """The SD prior read back through the project's own loader: held-out VAE and denoising figures, sample grid."""
    unet, vae = build_unet("tiny"), build_vae("tiny")
    load_sd_single_file(unet, vae, sd_path)
    unet.eval(), vae.eval()
    scale = float(vae.config.scaling_factor)
    torch.manual_seed(cfg.seed + 20)
    untrained_unet = build_unet("tiny").eval()
    held_idx = split.held_idx
    held_m = vae_moments(vae, corpus["vae_images"][held_idx])
    held_ctx = text.ctx[torch.from_numpy(text.inv[held_idx])]
    with torch.no_grad():
        x = to_model_range(corpus["vae_images"][held_idx])
        rec = vae.decode(held_m.chunk(2, dim=1)[0]).sample
        vae_mse = float(F.mse_loss(rec, x))
        lat = held_m.chunk(2, dim=1)[0] * scale
    unet_fig = {
        "trained": heldout_denoising_loss(unet, held_m, held_ctx, scale),
        "trained_empty_caption": heldout_denoising_loss(unet, held_m, text.empty_ctx.expand_as(held_ctx), scale),
        "untrained": heldout_denoising_loss(untrained_unet, held_m, held_ctx, scale),
    }
    logger.info("UNet held-out denoising loss: %s", unet_fig)
    _sample_grid(unet, vae, scale, corpus, held_idx, text, cfg, grid_path)
    return {"vae_heldout_mse": vae_mse, "latent_std_heldout": float(lat.std()), "unet_heldout_denoising_mse": unet_fig}


def _sample_grid(unet: nn.Module, vae: nn.Module, scale: float, corpus: dict[str, np.ndarray], held_idx: np.ndarray,
                 text: _CaptionStates, cfg: PretrainConfig, grid_path: Path) -> None:
    """The sample grid: six held-out identities (their first image and caption), five samples each."""
    pick = [int(held_idx[j * 8 * 20]) for j in range(6) if j * 8 * 20 < len(held_idx)]
    rows = []
    for j, i in enumerate(pick):
        c = text.ctx[int(text.inv[i])].unsqueeze(0).expand(5, -1, -1)
        rows.append((corpus["images"][i], sample_images(unet, vae, c, text.empty_ctx, scale, seed=cfg.seed + j)))
    save_grid(grid_path, rows, [str(corpus["captions"][i]) for i in pick])


def _report(out: Path, cfg: PretrainConfig, corpus_spec: CorpusSpec, split: _Split, text: _CaptionStates,
            clip_fig: dict[str, Any], sd_fig: dict[str, Any], wall: dict[str, float],
            t_all: float) -> dict[str, Any]:
    """The ``priors.json`` report: settings, corpus sizes, file digests, sanity figures, wall times."""
    return {
        "command": "python tools/pretrain_priors.py --output <folder>",
        "config": asdict(cfg),
        "corpus": {**asdict(corpus_spec), "images": int(split.images), "train_images": int(len(split.train_idx)),
                   "heldout_images": int(len(split.held_idx)), "distinct_captions": int(len(text.caps))},
        "text_cfg": TEXT_CFG,
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": file_sha256(out / name)}
                  for name in (CLIP_FILE, SD_FILE)},
        "clip_heldout_retrieval": clip_fig,
        **sd_fig,
        "wall_time_s": {k: round(v, 1) for k, v in wall.items()},
        "wall_time_this_call_s": round(time.perf_counter() - t_all, 1),
        "clip_and_vae_stages_in_parallel": True,
        "torch_threads": torch.get_num_threads(),
    }
