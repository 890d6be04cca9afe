"""Whole DCAC model: forward contract, gradient flow, conditioning modes, trainable state, registry."""

import pytest
import torch
import torch.nn.functional as F

from dcac_plugin._torchreid import model_factory, tr
from dcac_plugin.models import PLUGIN_MODELS, build_model, register_models
from dcac_plugin.models.weights import WeightLoadError

B = 4


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, 128, 64, generator=g)
    xv = torch.rand(B, 3, 64, 64, generator=g) * 2 - 1
    y = torch.tensor([0, 0, 1, 2])
    return x, xv, y


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    m = build_model("dcac_tiny", 6)
    m.train()
    return m


def test_forward_contract(tiny):
    x, xv, y = _batch()
    out = tiny(x, x_vae=xv, labels=y)
    assert set(out) == {"logits", "feat", "feat_bn", "z", "cond", "loss_ldm"}
    assert out["logits"].shape == (B, 6) and out["feat"].shape == (B, 32) and out["feat_bn"].shape == (B, 32)
    assert out["cond"].shape == (B, 1, 32) and out["loss_ldm"].ndim == 0
    torch.testing.assert_close(out["z"].norm(dim=1), torch.ones(B))
    torch.testing.assert_close(
        out["feat_bn"],
        F.batch_norm(
            out["feat"], None, None, tiny.encoder.bnneck.weight, tiny.encoder.bnneck.bias, training=True
        ),
    )
    torch.testing.assert_close(out["logits"], out["feat_bn"] @ tiny.encoder.fc.weight.t())
    # c = softmax(s / tau) @ E  (tau = 1)
    torch.testing.assert_close(out["cond"][:, 0], F.softmax(out["logits"], 1) @ tiny.condition.prompt_emb)
    assert int(tiny.encoder.bnneck.num_batches_tracked) == 1  # BN called once per step
    no_ldm = tiny(x)
    assert "loss_ldm" not in no_ldm and "cond" not in no_ldm
    tiny.eval()
    emb = tiny(x)
    assert emb.shape == (B, 32)
    with pytest.raises(ValueError, match="64, 64"):
        tiny.train()(x, x_vae=torch.rand(B, 3, 32, 32))


def test_gradient_flow_full_loss(tiny):
    x, xv, y = _batch()
    out = tiny(x, x_vae=xv, labels=y)
    (F.cross_entropy(out["logits"], y, label_smoothing=0.1) + out["loss_ldm"]).backward()
    enc, d = tiny.encoder, tiny.diffusion
    assert enc.image_encoder.conv1.weight.grad is None and enc.bnneck.bias.grad is None
    for p in (
        enc.bnneck.weight,
        enc.fc.weight,
        enc.image_encoder.proj,
        enc.image_encoder.transformer.resblocks[0].mlp.c_fc.weight,
        tiny.condition.prompt_emb,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0
    lora_b = [p for n, p in d.unet.named_parameters() if "lora_B" in n and "attn2.to_v" in n]
    assert lora_b and all(p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in d.unet.named_parameters() if "lora_" not in n)
    assert all(p.grad is None for p in d.vae.parameters())


def test_ldm_loss_alone_reaches_encoder_through_condition(tiny):
    x, xv, y = _batch()
    tiny(x, x_vae=xv, labels=y)["loss_ldm"].backward()
    enc = tiny.encoder
    assert enc.image_encoder.transformer.resblocks[1].attn.in_proj_weight.grad.abs().sum() > 0
    assert enc.fc.weight.grad.abs().sum() > 0 and enc.bnneck.weight.grad.abs().sum() > 0
    assert tiny.condition.prompt_emb.grad.abs().sum() > 0


def test_hard_label_gives_no_gradient_to_reid_model():
    torch.manual_seed(0)
    m = build_model("dcac_tiny", 6, hard_label=True).train()
    x, xv, y = _batch()
    out = m(x, x_vae=xv, labels=y)
    torch.testing.assert_close(out["cond"][:, 0], m.condition.prompt_emb[y])
    out["loss_ldm"].backward()
    assert m.encoder.fc.weight.grad is None
    assert m.condition.prompt_emb.grad[y].abs().sum() > 0 and m.condition.prompt_emb.grad[5].abs().sum() == 0
    with pytest.raises(ValueError, match="labels"):
        m(x, x_vae=xv)


def test_pcl_conditioning_needs_memory_and_uses_it():
    torch.manual_seed(0)
    m = build_model("dcac_tiny", 6, prob_type="fc+pcl", tau=0.5).train()
    x, xv, y = _batch()
    with pytest.raises(ValueError, match="memory"):
        m(x, x_vae=xv)
    mem = F.normalize(torch.randn(6, 32), dim=1)
    out = m(x, x_vae=xv, memory=mem)
    p = 0.5 * (F.softmax(out["logits"] / 0.5, 1) + F.softmax(out["z"] @ mem.t() / 0.01, 1))
    torch.testing.assert_close(out["cond"][:, 0], p @ m.condition.prompt_emb)


def test_feature_mode_prompt_bank_shape():
    m = build_model("dcac_tiny", 6, prob_type="feature").train()
    assert m.condition.prompt_emb.shape == (32, 32)
    x, xv, _ = _batch()
    out = m(x, x_vae=xv)
    torch.testing.assert_close(out["cond"][:, 0], out["z"] @ m.condition.prompt_emb)


def test_condition_net_bottleneck_and_bad_options():
    m = build_model("dcac_tiny", 6, bottleneck="condition_net").train()
    x, xv, _ = _batch()
    assert m(x, x_vae=xv)["cond"].shape == (B, 1, 32)
    with pytest.raises(ValueError, match="prob_type"):
        build_model("dcac_tiny", 6, prob_type="softmax")
    with pytest.raises(ValueError, match="bottleneck"):
        build_model("dcac_tiny", 6, bottleneck="mlp")
    with pytest.raises(ValueError, match="vae_image_size"):
        build_model("dcac_tiny", 6, vae_image_size=40)


def test_cached_moments_equal_online_vae(tiny):
    x, xv, y = _batch()
    mom = tiny.diffusion.encode_moments(xv)
    assert mom.shape == (B, 8, 8, 8)
    torch.manual_seed(11)
    a = tiny(x, x_vae=xv)["loss_ldm"]
    torch.manual_seed(11)
    b = tiny(x, vae_moments=mom)["loss_ldm"]
    torch.testing.assert_close(a, b)
    torch.manual_seed(12)
    assert not torch.equal(a, tiny(x, vae_moments=mom)["loss_ldm"])


def test_trainable_state_round_trip(tiny):
    x, xv, y = _batch()
    out = tiny(x, x_vae=xv, labels=y)
    (out["loss_ldm"] + out["logits"].sum()).backward()
    with torch.no_grad():
        for p in tiny.parameters():
            if p.grad is not None:
                p.add_(0.01 * torch.randn_like(p))
    sd = tiny.trainable_state_dict()
    assert not any(k.startswith("diffusion.vae.") for k in sd)
    assert all("lora_" in k for k in sd if k.startswith("diffusion."))
    assert "encoder.bnneck.running_mean" in sd and "condition.prompt_emb" in sd
    assert "encoder.image_encoder.conv1.weight" in sd  # frozen but part of the encoder checkpoint
    torch.manual_seed(5)
    fresh = build_model("dcac_tiny", 6)
    fresh.load_trainable_state_dict({"module." + k: v for k, v in sd.items()})
    fresh.load_state_dict(
        {k: v for k, v in tiny.state_dict().items() if "lora_" not in k and k not in sd}, strict=False
    )  # same frozen base (in real runs: the same SD file)
    tiny.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), tiny(x))
    torch.testing.assert_close(fresh.state_dict(), tiny.state_dict())
    bad = dict(sd)
    bad.pop("condition.prompt_emb")
    bad["encoder.extra"] = torch.zeros(1)
    with pytest.raises(WeightLoadError, match=r"missing 1 \['condition.prompt_emb'\].*encoder.extra"):
        fresh.load_trainable_state_dict(bad)
    with pytest.raises(WeightLoadError, match="shape"):
        build_model("dcac_tiny", 7).load_trainable_state_dict(sd)


def test_qkv_random_bias_saved_in_trainable_state():
    m = build_model("dcac_tiny", 3, qkv_random_bias=True)
    sd = m.trainable_state_dict()
    biases = [k for k in sd if k.endswith("to_q.base_layer.bias")]
    assert len(biases) == 4 * 2
    other = build_model("dcac_tiny", 3, qkv_random_bias=True)
    other.load_trainable_state_dict(sd)
    torch.testing.assert_close(other.state_dict()[biases[0]], sd[biases[0]])


def test_param_groups_and_adam_step(tiny):
    groups = tiny.param_groups(5e-6, lora_lr_mult=2.0)
    assert [g["name"] for g in groups] == ["base", "prompt_lora"]
    base, mult = groups
    assert base["lr"] == 5e-6 and mult["lr"] == 1e-5 and base["weight_decay"] == mult["weight_decay"] == 1e-4
    assert all(("prompt_emb" in n) or ("lora_" in n) for n in mult["param_names"])
    assert "encoder.image_encoder.conv1.weight" not in base["param_names"]
    assert "encoder.bnneck.bias" not in base["param_names"]
    assert "encoder.bnneck.weight" in base["param_names"] and "encoder.fc.weight" in base["param_names"]
    n_opt = sum(p.numel() for g in groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in tiny.parameters() if p.requires_grad)
    opt = torch.optim.Adam(groups)  # extra keys (name, param_names) are kept by torch optimisers
    x, xv, y = _batch()
    tiny(x, x_vae=xv)["loss_ldm"].backward()
    before = tiny.condition.prompt_emb.detach().clone()
    opt.step()
    assert not torch.equal(before, tiny.condition.prompt_emb)
    assert opt.state_dict()["param_groups"][1]["name"] == "prompt_lora"


def test_baseline_has_no_diffusion_branch():
    torch.manual_seed(0)
    base = build_model("clip_reid_tiny", 6, lora_rank=8, unet="sd15", tau=0.6)  # diffusion args ignored
    assert base.diffusion is None and base.condition is None and not base.has_diffusion
    assert not any("unet" in n or "prompt" in n for n, _ in base.named_parameters())
    dcac = build_model("dcac_tiny", 6)
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in dcac.encoder.parameters())
    x, xv, y = _batch()
    out = base.train()(x, x_vae=xv)
    assert set(out) == {"logits", "feat", "feat_bn", "z"}
    assert [g["name"] for g in base.param_groups(1e-3)] == ["base"]
    assert base.eval()(x).shape == (B, 32)
    with pytest.raises(TypeError):
        build_model("clip_reid_tiny", 6, not_an_arg=1)


def test_registry_and_torchreid_factory():
    assert {"dcac_vit_b16", "dcac_tiny", "clip_reid_vit_b16", "clip_reid_tiny"} <= set(PLUGIN_MODELS)
    register_models()
    fn = model_factory()["dcac_tiny"]
    register_models()
    assert model_factory()["dcac_tiny"] is fn
    m = tr.models.build_model("clip_reid_tiny", 4, loss="softmax", pretrained=False, use_gpu=False)
    assert m.eval()(torch.randn(2, 3, 128, 64)).shape == (2, 32)
    with pytest.raises(ValueError, match="download"):
        tr.models.build_model("clip_reid_tiny", 4, pretrained=True, use_gpu=False)
    with pytest.raises(ValueError, match="only loss"):
        build_model("osnet_x0_25", 4, lora_rank=8)


def test_plugin_pretrained_alias_is_clip_weights(tmp_path):
    src = build_model("clip_reid_tiny", 3)
    torch.save(
        {"visual." + k: v for k, v in src.encoder.image_encoder.state_dict().items()}, tmp_path / "c.pt"
    )
    m = build_model("clip_reid_tiny", 3, pretrained=str(tmp_path / "c.pt"), loss="softmax", use_gpu=False)
    torch.testing.assert_close(m.encoder.image_encoder.proj, src.encoder.image_encoder.proj)


def test_grad_checkpointing_same_encoder_gradients():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = build_model("dcac_tiny", 6, grad_checkpointing=ckpt).train()
        x, xv, y = _batch()
        torch.manual_seed(3)
        m(x, x_vae=xv)["loss_ldm"].backward()
        grads.append(m.encoder.image_encoder.transformer.resblocks[0].attn.in_proj_weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_build_dcac_flat_arguments_are_the_option_groups():
    """build_dcac's flat signature and the option dataclasses name the same arguments with the same defaults."""
    import dataclasses
    import inspect

    from dcac_plugin.models.dcac import ConditionOptions, DiffusionOptions, EncoderOptions, build_dcac

    flat = {n: p.default for n, p in inspect.signature(build_dcac).parameters.items()}
    grouped = {f.name: f.default for cls in (EncoderOptions, DiffusionOptions, ConditionOptions)
               for f in dataclasses.fields(cls)}
    assert set(flat) - set(grouped) == {"num_classes", "diffusion", "grad_checkpointing"}
    assert {n: flat[n] for n in grouped} == grouped


def test_build_dcac_from_options_equals_build_dcac():
    from dcac_plugin.models.dcac import DiffusionOptions, EncoderOptions, build_dcac, build_dcac_from_options

    tiny = {"vision": "tiny", "image_size": (128, 64)}
    torch.manual_seed(0)
    a = build_dcac(6, **tiny, unet="tiny", vae="tiny", vae_image_size=64, lora_rank=2)
    torch.manual_seed(0)
    b = build_dcac_from_options(6, EncoderOptions(**tiny),
                                DiffusionOptions(unet="tiny", vae="tiny", vae_image_size=64, lora_rank=2))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not build_dcac_from_options(6, EncoderOptions(**tiny), None).has_diffusion
