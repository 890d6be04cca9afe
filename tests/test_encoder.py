"""CLIP-ReID encoder: real ViT-B/16 geometry on meta, tiny forward equivalence, SIE, stride, heads."""

import pytest
import torch
from open_clip.transformer import QuickGELU

from dcac_plugin.models.clip_reid import (
    CLIPReIDEncoder,
    build_clip_reid_encoder,
    build_visual_tower,
    resolve_vision_config,
)


def test_vit_b16_real_geometry_param_counts_on_meta():
    n = 751
    with torch.device("meta"):
        enc = build_clip_reid_encoder(n, vision="ViT-B-16", image_size=(256, 128), stride=16)
    v = enc.image_encoder
    assert tuple(v.grid_size) == (16, 8)
    assert tuple(v.positional_embedding.shape) == (129, 768)
    assert tuple(v.proj.shape) == (768, 512)
    assert len(v.transformer.resblocks) == 12
    assert isinstance(v.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert sum(p.numel() for p in v.parameters()) == 86_140_416
    assert v.conv1.weight.numel() == 589_824 and not v.conv1.weight.requires_grad
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    assert trainable == 85_550_592 + 512 + 512 * n
    assert not enc.bnneck.bias.requires_grad and enc.bnneck.weight.requires_grad
    assert enc.fc.bias is None and tuple(enc.fc.weight.shape) == (n, 512)
    assert enc.feat_dim == 512


def test_vit_b16_at_224_has_published_param_count():
    with torch.device("meta"):
        v = build_visual_tower("ViT-B-16", image_size=(224, 224))
    assert sum(p.numel() for p in v.parameters()) == 86_192_640


@pytest.fixture()
def tiny_encoder():
    torch.manual_seed(0)
    return build_clip_reid_encoder(7, vision="tiny", image_size=(128, 64))


def test_tiny_forward_equals_open_clip_pooled_output(tiny_encoder):
    x = torch.randn(3, 3, 128, 64)
    f = tiny_encoder.forward_features(x)
    assert f.shape == (3, 32)
    torch.testing.assert_close(f, tiny_encoder.image_encoder(x), rtol=1e-5, atol=1e-6)
    assert tuple(tiny_encoder.image_encoder.grid_size) == (8, 4)


def test_heads_init_and_eval_embedding(tiny_encoder):
    enc = tiny_encoder
    assert torch.all(enc.bnneck.weight == 1) and torch.all(enc.bnneck.bias == 0)
    assert 0.0005 < enc.fc.weight.std().item() < 0.002
    assert enc.bnneck.momentum == 0.19  # one BN call per step = the original's two updates of 0.1
    enc.eval()
    x = torch.randn(2, 3, 128, 64)
    f = enc.forward_features(x)
    expected = (f - enc.bnneck.running_mean) / torch.sqrt(enc.bnneck.running_var + enc.bnneck.eps)
    torch.testing.assert_close(enc(x), expected)


def test_bnneck_momentum_equals_the_originals_double_update():
    enc = build_clip_reid_encoder(3, vision="tiny", image_size=(128, 64))
    enc.train()
    x = torch.randn(4, 3, 128, 64)
    f = enc.forward_features(x).detach()
    enc.bnneck(f)
    assert int(enc.bnneck.num_batches_tracked) == 1
    # The original calls a momentum-0.1 BN twice on the same batch: 0.9*(0.9*0 + 0.1*m) + 0.1*m = 0.19*m.
    ref = torch.nn.BatchNorm1d(f.shape[1], momentum=0.1)
    ref(f)
    ref(f)
    torch.testing.assert_close(enc.bnneck.running_mean, ref.running_mean)
    torch.testing.assert_close(enc.bnneck.running_var, ref.running_var)
    enc01 = build_clip_reid_encoder(3, vision="tiny", image_size=(128, 64), bnneck_momentum=0.1)
    assert enc01.bnneck.momentum == 0.1


def test_wrong_input_size_raises(tiny_encoder):
    with pytest.raises(ValueError, match="128, 64"):
        tiny_encoder.forward_features(torch.randn(1, 3, 256, 128))


def test_sie_camera_embedding_on_cls_only():
    torch.manual_seed(0)
    enc = build_clip_reid_encoder(5, vision="tiny", image_size=(128, 64), num_cams=3, sie_coef=2.0)
    assert tuple(enc.cam_emb.shape) == (3, 64)
    x = torch.randn(2, 3, 128, 64)
    with pytest.raises(ValueError, match="cam_ids"):
        enc.forward_features(x)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        enc.forward_features(x, torch.tensor([0, 3]))
    f0 = enc.forward_features(x, torch.tensor([0, 0]))
    f1 = enc.forward_features(x, torch.tensor([0, 1]))
    torch.testing.assert_close(f0[0], f1[0])
    assert not torch.allclose(f0[1], f1[1])
    # manual reference: CLS token + 2 * cam_emb before ln_pre
    v = enc.image_encoder
    t = v.conv1(x).flatten(2).transpose(1, 2)
    cls = v.class_embedding.view(1, 1, -1).expand(2, -1, -1) + 2.0 * enc.cam_emb[
        torch.tensor([0, 1])
    ].unsqueeze(1)
    t = v.ln_pre(torch.cat([cls, t], 1) + v.positional_embedding)
    ref = v.ln_post(v.transformer(t)[:, 0]) @ v.proj
    torch.testing.assert_close(f1, ref, rtol=1e-5, atol=1e-6)
    f1.sum().backward()
    assert enc.cam_emb.grad[1].abs().sum() > 0 and enc.cam_emb.grad[2].abs().sum() == 0


def test_overlapping_stride_grid():
    v = build_visual_tower("tiny", image_size=(128, 64), stride=8)
    assert tuple(v.grid_size) == (15, 7)
    assert tuple(v.positional_embedding.shape) == (15 * 7 + 1, 64)
    enc = CLIPReIDEncoder(v, 4)
    assert enc.forward_features(torch.randn(1, 3, 128, 64)).shape == (1, 32)
    with pytest.raises(ValueError, match="stride"):
        build_visual_tower("tiny", image_size=(128, 64), stride=32)
    with pytest.raises(ValueError, match="not covered"):
        build_visual_tower("tiny", image_size=(130, 64), stride=16)


def test_vision_config_resolution(tmp_path):
    assert resolve_vision_config("ViT-B-16")["vision_cfg"]["width"] == 768
    assert resolve_vision_config("tiny")["embed_dim"] == 32
    p = tmp_path / "v.json"
    p.write_text(
        '{"embed_dim": 16, "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 16}}'
    )
    v = build_visual_tower(str(p), image_size=(32, 32))
    assert v.output_dim == 16 and isinstance(v.transformer.resblocks[0].mlp.gelu, QuickGELU)
    with pytest.raises(ValueError, match="unknown vision config"):
        resolve_vision_config("ViT-L-14")
    with pytest.raises(ValueError, match="timm_model_name"):
        resolve_vision_config({"embed_dim": 8, "vision_cfg": {"timm_model_name": "x"}})


def test_freeze_patch_proj_off():
    enc = build_clip_reid_encoder(3, vision="tiny", image_size=(128, 64), freeze_patch_proj=False)
    assert enc.image_encoder.conv1.weight.requires_grad


def test_gradients_reach_blocks_not_conv1(tiny_encoder):
    enc = tiny_encoder
    enc.train()
    out = enc.fc(enc(torch.randn(4, 3, 128, 64)))
    out.sum().backward()
    assert enc.image_encoder.conv1.weight.grad is None
    assert enc.bnneck.bias.grad is None
    assert enc.bnneck.weight.grad is not None
    assert enc.image_encoder.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    assert enc.image_encoder.positional_embedding.grad.abs().sum() > 0
