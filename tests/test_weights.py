"""Offline weight loading: pos-embed resize, CLIP files, SD single files / folders, official checkpoints."""

import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import resize_pos_embed as open_clip_resize
from safetensors.torch import save_file

from dcac_plugin.models import build_model
from dcac_plugin.models.clip_reid import build_clip_reid_encoder, build_visual_tower
from dcac_plugin.models.diffusion import add_lora, build_unet, build_vae
from dcac_plugin.models.ldm_export import export_ldm_checkpoint, unet_diffusers_to_ldm, vae_diffusers_to_ldm
from dcac_plugin.models.weights import (
    WeightLoadError,
    is_torchscript_archive,
    load_clip_into_visual,
    load_clip_visual_state_dict,
    load_official_dcac_checkpoint,
    load_sd_diffusers_folder,
    load_sd_single_file,
    load_sd_weights,
    resize_pos_embed_bilinear,
)

# ------------------------------------------------------------------------------ positional embedding


def test_resize_pos_embed_hand_cases():
    cls = torch.tensor([[7.0]])
    pos = torch.cat([cls, torch.tensor([[0.0], [1.0], [2.0], [3.0]])])  # 2x2 grid [[0, 1], [2, 3]]
    # height 2 -> 4, width kept: rows interpolate at source y = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    out = resize_pos_embed_bilinear(pos, (4, 2))
    expected = torch.tensor([7.0, 0, 1, 0.5, 1.5, 1.5, 2.5, 2, 3]).unsqueeze(1)
    torch.testing.assert_close(out, expected)
    # height 2 -> 1: mean of the two rows
    torch.testing.assert_close(resize_pos_embed_bilinear(pos, (1, 2)), torch.tensor([[7.0], [1.0], [2.0]]))
    # same grid: unchanged copy
    torch.testing.assert_close(resize_pos_embed_bilinear(pos, (2, 2)), pos)
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed_bilinear(torch.zeros(6, 3), (2, 2))


def test_resize_pos_embed_14x14_to_16x8_matches_manual_interpolate():
    torch.manual_seed(0)
    pos = torch.randn(197, 8)
    out = resize_pos_embed_bilinear(pos, (16, 8))
    assert out.shape == (129, 8)
    torch.testing.assert_close(out[0], pos[0])
    grid = pos[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(16, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[1:], ref.permute(0, 2, 3, 1).reshape(128, 8))
    # differs from open_clip's bicubic+antialias helper (docs/DECISIONS.md item 28)
    sd = {"visual.positional_embedding": pos.clone()}
    model = nn.Module()
    model.visual = build_visual_tower(
        {"embed_dim": 8, "vision_cfg": {"layers": 1, "width": 8, "head_width": 8}}, (256, 128)
    )
    open_clip_resize(sd, model)
    assert sd["visual.positional_embedding"].shape == out.shape
    assert not torch.allclose(sd["visual.positional_embedding"], out, atol=1e-3)


# ------------------------------------------------------------------------------ CLIP weights


def _tiny_clip_224_state(seed=0):
    """A 'full CLIP' state dict in OpenAI layout for the tiny tower at a square 64x64 input (4x4 grid)."""
    torch.manual_seed(seed)
    v = build_visual_tower("tiny", image_size=(64, 64))
    sd = {"visual." + k: t.half() for k, t in v.state_dict().items()}
    sd["logit_scale"] = torch.tensor(4.6)
    sd["token_embedding.weight"] = torch.randn(10, 8)
    sd["transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(24, 8)
    return v, sd


def test_plain_state_dict_with_visual_prefix_fp16_loads_with_bilinear_resize(tmp_path):
    v224, sd = _tiny_clip_224_state()
    path = tmp_path / "clip.pt"
    torch.save(sd, path)
    vis = load_clip_visual_state_dict(path)
    assert all(t.dtype == torch.float32 for t in vis.values())
    assert "logit_scale" not in vis and "token_embedding.weight" not in vis
    enc = build_clip_reid_encoder(3, vision="tiny", image_size=(128, 64), clip_weights=str(path))
    v = enc.image_encoder
    torch.testing.assert_close(v.conv1.weight, v224.conv1.weight.half().float())
    torch.testing.assert_close(v.proj, v224.proj.half().float())
    expected = resize_pos_embed_bilinear(v224.positional_embedding.half().float(), (8, 4))
    torch.testing.assert_close(v.positional_embedding, expected)
    assert v.positional_embedding.dtype == torch.float32


def test_safetensors_visual_only_file(tmp_path):
    v224, _ = _tiny_clip_224_state()
    path = tmp_path / "clip.safetensors"
    save_file({k: t.contiguous() for k, t in v224.state_dict().items()}, str(path))
    enc = build_clip_reid_encoder(3, vision="tiny", image_size=(64, 64), clip_weights=str(path))
    torch.testing.assert_close(enc.image_encoder.positional_embedding, v224.positional_embedding)


def test_openai_style_torchscript_archive(tmp_path):
    v224, _ = _tiny_clip_224_state()

    class OpenAIStyle(nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual
            self.logit_scale = nn.Parameter(torch.ones([]))

        def forward(self, x):
            return x * self.logit_scale

    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(OpenAIStyle(v224).half()).save(str(path))
    assert is_torchscript_archive(path)
    plain = tmp_path / "plain.pt"
    torch.save(v224.state_dict(), plain)
    assert not is_torchscript_archive(plain)
    vis = load_clip_visual_state_dict(path)
    assert set(vis) == set(v224.state_dict())
    torch.testing.assert_close(vis["class_embedding"], v224.class_embedding.half().float())


def test_clip_missing_and_unexpected_keys_are_listed(tmp_path):
    v224, _ = _tiny_clip_224_state()
    sd = {k: t for k, t in v224.state_dict().items() if k != "ln_post.bias"}
    sd["extra.weight"] = torch.zeros(1)
    target = build_visual_tower("tiny", image_size=(128, 64))
    with pytest.raises(WeightLoadError, match=r"missing 1 \[ln_post.bias\].*unexpected 1 \[extra.weight\]"):
        load_clip_into_visual(target, sd)
    wide = build_visual_tower(
        {"embed_dim": 32, "vision_cfg": {"layers": 2, "width": 96, "head_width": 32, "patch_size": 16}},
        (128, 64),
    )
    with pytest.raises(WeightLoadError, match="width"):
        load_clip_into_visual(wide, v224.state_dict())
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(WeightLoadError, match="no CLIP visual tower"):
        load_clip_visual_state_dict(tmp_path / "bad.pt")
    with pytest.raises(WeightLoadError, match="not found"):
        load_clip_visual_state_dict(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------ Stable Diffusion


@pytest.fixture(scope="module")
def tiny_sd():
    torch.manual_seed(0)
    return build_unet("tiny"), build_vae("tiny")


def _base_state(m: nn.Module) -> dict:
    return {k.replace(".base_layer.", "."): v for k, v in m.state_dict().items() if "lora_" not in k}


def _assert_same(a: nn.Module, b: nn.Module):
    sa, sb = _base_state(a), _base_state(b)
    assert set(sa) == set(sb)
    for k, v in sa.items():
        torch.testing.assert_close(sb[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_ldm_single_file_round_trip(tmp_path, tiny_sd, fmt):
    unet, vae = tiny_sd
    sd = export_ldm_checkpoint(unet, vae)
    sd["cond_stage_model.transformer.x"] = torch.zeros(2)  # text encoder: ignored
    sd["betas"] = torch.zeros(1000)  # schedule buffers: ignored
    path = tmp_path / f"sd.{fmt}"
    if fmt == "ckpt":
        torch.save({"state_dict": sd, "global_step": 7}, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    torch.manual_seed(1)
    u2, v2 = build_unet("tiny"), build_vae("tiny")
    rep = load_sd_single_file(u2, v2, path)
    assert len(rep["unet"].loaded) == len(unet.state_dict()) and not rep["unet"].missing
    _assert_same(u2, unet)
    _assert_same(v2, vae)


def test_ldm_single_file_into_lora_wrapped_unet_and_ema(tmp_path, tiny_sd):
    unet, vae = tiny_sd
    sd = export_ldm_checkpoint(unet, vae)
    ema = {}
    for k, v in sd.items():
        if k.startswith("model.diffusion_model."):
            ema["model_ema." + "".join(k.split(".")[1:])] = v + 1.0
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {**sd, **ema}}, path)
    u2, v2 = build_unet("tiny"), build_vae("tiny")
    add_lora(u2, rank=2)
    lora_before = {n: p.clone() for n, p in u2.named_parameters() if "lora_" in n}
    load_sd_single_file(u2, v2, path)
    _assert_same(unet, u2)
    for n, p in u2.named_parameters():
        if "lora_" in n:
            torch.testing.assert_close(p, lora_before[n])
    u3, v3 = build_unet("tiny"), build_vae("tiny")
    load_sd_weights(u3, v3, path, use_ema=True)
    torch.testing.assert_close(u3.conv_in.weight, unet.conv_in.weight + 1.0)
    torch.save({"state_dict": sd}, tmp_path / "noema.ckpt")
    with pytest.raises(WeightLoadError, match="EMA"):
        load_sd_single_file(u3, v3, tmp_path / "noema.ckpt", use_ema=True)


class _Records(logging.Handler):
    """Collects records of a logger that does not propagate (diffusers logs to its own handler)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("use_ema", [True, False])
def test_ema_choice_is_logged_truthfully(tmp_path, tiny_sd, caplog, use_ema):
    """diffusers' converter would log 'only the non-EMA weights are extracted' (and talk about a
    --extract_ema flag) even when the EMA weights are the ones loaded: only our line is logged."""
    unet, vae = tiny_sd
    sd = export_ldm_checkpoint(unet, vae)
    ema = {"model_ema." + "".join(k.split(".")[1:]): v + 1.0 for k, v in sd.items()
           if k.startswith("model.diffusion_model.")}
    assert len(ema) > 100  # diffusers' threshold for "this checkpoint has EMA weights"
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {**sd, **ema}}, path)
    diffusers_log = _Records()
    logging.getLogger("diffusers").addHandler(diffusers_log)
    try:
        with caplog.at_level(logging.INFO, logger="dcac_plugin.models.weights"):
            u2, v2 = build_unet("tiny"), build_vae("tiny")
            load_sd_single_file(u2, v2, path, use_ema=use_ema)
    finally:
        logging.getLogger("diffusers").removeHandler(diffusers_log)
    assert not [m for m in diffusers_log.messages if "EMA" in m], diffusers_log.messages
    offset = 1.0 if use_ema else 0.0
    torch.testing.assert_close(u2.conv_in.weight, unet.conv_in.weight + offset)
    ours = [r.getMessage() for r in caplog.records if "EMA" in r.getMessage()]
    chosen = ": EMA UNet weights (model_ema.*" if use_ema else ": non-EMA UNet weights (model.diffusion_model.*"
    assert len(ours) == 1 and chosen in ours[0] and "dcac.sd.use_ema" in ours[0], ours


def test_ckpt_refused_by_weights_only_names_the_reason_and_the_fix(tmp_path, tiny_sd):
    """A .ckpt that pickles a class outside the weights_only allowlist: the error shows torch's
    reason (not diffusers' 'Unable to load weights') and how to convert the file."""
    import argparse

    unet, vae = tiny_sd
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": export_ldm_checkpoint(unet, vae), "hparams": argparse.Namespace(lr=1)}, path)
    with pytest.raises(WeightLoadError) as ei:
        load_sd_weights(build_unet("tiny"), build_vae("tiny"), path)
    msg = str(ei.value)
    assert "Unsupported global" in msg and "argparse.Namespace" in msg
    assert "Unable to load weights" not in msg
    assert str(path) in msg and ".safetensors" in msg and "trust" in msg


def test_ldm_single_file_missing_key_is_listed(tmp_path, tiny_sd):
    unet, vae = tiny_sd
    sd = export_ldm_checkpoint(unet, vae)
    del sd["model.diffusion_model.out.2.bias"]
    torch.save(sd, tmp_path / "broken.ckpt")
    with pytest.raises(WeightLoadError, match="conv_out.bias"):
        load_sd_single_file(build_unet("tiny"), build_vae("tiny"), tmp_path / "broken.ckpt")
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(WeightLoadError, match="not an original-LDM"):
        load_sd_single_file(build_unet("tiny"), build_vae("tiny"), tmp_path / "other.ckpt")
    with pytest.raises(WeightLoadError, match="not found"):
        load_sd_single_file(build_unet("tiny"), build_vae("tiny"), tmp_path / "absent.ckpt")


def test_sd_geometry_mismatch_is_reported(tmp_path, tiny_sd):
    unet, vae = tiny_sd
    torch.save(export_ldm_checkpoint(unet, vae), tmp_path / "tiny.ckpt")
    other = build_unet({**unet.config, "block_out_channels": [16, 48], "norm_num_groups": 8})
    with pytest.raises(WeightLoadError, match="shape mismatches"):
        load_sd_single_file(other, build_vae("tiny"), tmp_path / "tiny.ckpt")


def test_diffusers_folder_round_trip(tmp_path, tiny_sd):
    unet, vae = tiny_sd
    unet.save_pretrained(tmp_path / "sd" / "unet")
    vae.save_pretrained(tmp_path / "sd" / "vae")
    u2, v2 = build_unet(tmp_path / "sd"), build_vae(tmp_path / "sd")
    load_sd_weights(u2, v2, tmp_path / "sd")
    _assert_same(unet, u2)
    _assert_same(vae, v2)
    with pytest.raises(WeightLoadError, match="vae"):
        (tmp_path / "sd" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
        load_sd_diffusers_folder(u2, v2, tmp_path / "sd")


def test_exporter_covers_real_sd15_layout_on_meta():
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    with torch.device("meta"):
        unet, vae = build_unet("sd15"), build_vae("sd15")
        u = unet_diffusers_to_ldm(unet.state_dict(), unet.config)
        v = vae_diffusers_to_ldm(vae.state_dict(), vae.config)
        assert (len(u), len(v)) == (686, 248)
        assert infer_diffusers_model_type({**u, **v}) == "v1"
        assert set(convert_ldm_unet_checkpoint(u, unet.config)) == set(unet.state_dict())
        assert set(convert_ldm_vae_checkpoint(v, vae.config)) == set(vae.state_dict())
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in u
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in u  # level 0 up: no attention
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in u
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in v
    assert tuple(v["first_stage_model.encoder.mid.attn_1.q.weight"].shape) == (512, 512, 1, 1)


# ------------------------------------------------------------------------------ official / torchreid


def _official_layout(model, n_extra_denoiser=True):
    sd = {}
    for k, v in model.encoder.state_dict().items():
        sd["module.encoder." + k] = v.clone()
    if n_extra_denoiser:
        sd["module.denoiser.model.prompt_emb.prompt_emb"] = torch.randn(5, 768)
        sd["module.denoiser.betas"] = torch.zeros(1000)
    return {"state_dict": sd, "epoch": 60}


def test_official_checkpoint_loads_encoder_only(tmp_path):
    torch.manual_seed(0)
    src = build_model("clip_reid_tiny", 5)
    src.train()
    src(torch.randn(4, 3, 128, 64))  # move BN running stats away from init
    path = tmp_path / "source_ma.pth"
    torch.save(_official_layout(src), path)
    torch.manual_seed(1)
    dst = build_model("dcac_tiny", 9)  # different N: fine without heads
    rep = load_official_dcac_checkpoint(dst, path)
    assert "encoder.fc.weight" in rep.ignored  # 'module.' prefix stripped
    assert sum(k.startswith("denoiser.") for k in rep.ignored) == 2
    assert not rep.missing and not rep.unexpected
    assert "5 identities" in rep.notes[0]
    src.eval()
    dst.eval()
    x = torch.randn(2, 3, 128, 64)
    torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(WeightLoadError, match="num_classes=5"):
        load_official_dcac_checkpoint(dst, path, load_heads=True)
    same_n = build_model("clip_reid_tiny", 5)
    load_official_dcac_checkpoint(same_n.encoder, path, load_heads=True)
    torch.testing.assert_close(same_n.encoder.fc.weight, src.encoder.fc.weight)


def test_official_checkpoint_errors(tmp_path):
    src = build_model("clip_reid_tiny", 5)
    ck = _official_layout(src)
    del ck["state_dict"]["module.encoder.bnneck.running_var"]
    torch.save(ck, tmp_path / "partial.pth")
    dst = build_model("clip_reid_tiny", 5)
    with pytest.raises(WeightLoadError, match=r"missing 1 \[bnneck.running_var\]"):
        load_official_dcac_checkpoint(dst, tmp_path / "partial.pth")
    rep = load_official_dcac_checkpoint(dst, tmp_path / "partial.pth", strict=False)
    assert rep.missing == ["bnneck.running_var"]
    other = build_model("clip_reid_tiny", 5, image_size=(64, 64))
    with pytest.raises(WeightLoadError, match="positional_embedding"):
        load_official_dcac_checkpoint(other, tmp_path / "partial.pth", strict=False)
    torch.save({"model": {"denoiser.x": torch.zeros(1)}}, tmp_path / "none.pth")
    with pytest.raises(WeightLoadError, match="checkpoint of another model: nothing in it matches"):
        load_official_dcac_checkpoint(dst, tmp_path / "none.pth")


def test_torchreid_model_pretrained_local_file(tmp_path, caplog):
    torch.manual_seed(0)
    src = build_model("osnet_x0_25", 10, loss="softmax", use_gpu=False)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    ck = {"state_dict": state, "epoch": 3, "rank1": np.float32(0.5), "optimizer": {}}
    torch.save(ck, tmp_path / "model.pth.tar-3")
    dst = build_model("osnet_x0_25", 10, pretrained=str(tmp_path / "model.pth.tar-3"), use_gpu=False)
    torch.testing.assert_close(dst.state_dict()["conv1.conv.weight"], src.state_dict()["conv1.conv.weight"])
    with caplog.at_level("WARNING"):
        other_n = build_model("osnet_x0_25", 4, pretrained=str(tmp_path / "model.pth.tar-3"), use_gpu=False)
    assert other_n.classifier.weight.shape[0] == 4
    assert "unexpected 1 [module.classifier.weight]" not in caplog.text  # reported after prefix strip
    assert "classifier.weight" in caplog.text
    caplog.clear()
    torch.save({"foo.bar": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(WeightLoadError, match="no key"):
        build_model("osnet_x0_25", 10, pretrained=str(tmp_path / "junk.pth"), use_gpu=False)
    with pytest.raises(ValueError, match="download"):
        build_model("osnet_x0_25", 10, pretrained=True)
    with caplog.at_level("WARNING"):
        build_model("osnet_x0_25", 10, pretrained=False, use_gpu=False)
    assert "RANDOMLY" in caplog.text
