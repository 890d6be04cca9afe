"""Diffusion branch: β schedule, LoRA placement/counts on the real SD-1.5 geometry, L=1 gradients."""

import json

import pytest
import torch
from diffusers import DDPMScheduler

from dcac_plugin.models.diffusion import (
    DEFAULT_LORA_TARGETS,
    RESOURCES,
    add_lora,
    add_random_qkv_bias,
    build_diffusion_branch,
    build_unet,
    build_vae,
    resolve_diffusers_config,
    scaled_linear_betas,
)


def test_beta_schedule_values():
    b = scaled_linear_betas(1000, 0.00085, 0.012)
    assert b.shape == (1000,)
    assert abs(b[0].item() - 0.00085) < 1e-12 and abs(b[-1].item() - 0.012) < 1e-12
    mid = ((0.00085**0.5 + 0.012**0.5) / 2) ** 2
    assert abs(((b[499] + b[500]) / 2).item() - mid) < 1e-6  # squared-linear, not linear
    ac = torch.cumprod(1 - b, 0)
    assert abs(ac[-1].item() - 0.0047) < 5e-5
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    torch.testing.assert_close(b.float(), sched.betas, rtol=1e-6, atol=0)
    torch.testing.assert_close(ac.float(), sched.alphas_cumprod, rtol=1e-4, atol=0)


def test_add_noise_matches_diffusers():
    branch = build_diffusion_branch(unet="tiny", vae="tiny", lora_rank=2)
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    z0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(
        branch.add_noise(z0, eps, t), sched.add_noise(z0, eps, t), rtol=1e-4, atol=1e-5
    )
    assert abs(branch.alphas_cumprod[-1].item() - 0.0047) < 5e-5
    assert branch.scaling_factor == pytest.approx(0.18215)
    assert "betas" not in branch.state_dict()  # derived buffers are not persisted


def test_shipped_sd15_configs():
    unet = resolve_diffusers_config("sd15", "unet")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 768
    assert unet["attention_head_dim"] == 8 and unet["layers_per_block"] == 2
    vae = resolve_diffusers_config("sd15", "vae")
    assert vae["scaling_factor"] == 0.18215 and vae["block_out_channels"] == [128, 256, 512, 512]
    # also resolvable from a folder / a JSON file
    assert resolve_diffusers_config(RESOURCES / "sd15", "vae") == vae
    assert resolve_diffusers_config(RESOURCES / "sd15" / "unet" / "config.json", "unet") == unet
    with pytest.raises(ValueError, match="no unet config"):
        resolve_diffusers_config("sd21", "unet")


def test_sd15_real_geometry_counts_and_lora_placement_on_meta():
    with torch.device("meta"):
        unet, vae = build_unet("sd15"), build_vae("sd15")
        assert sum(p.numel() for p in unet.parameters()) == 859_520_964
        enc = sum(p.numel() for n, p in vae.named_parameters() if n.startswith(("encoder.", "quant_conv.")))
        dec = sum(
            p.numel() for n, p in vae.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))
        )
        assert (enc, dec) == (34_163_592 + 72, 49_490_179 + 20)
        biases = add_random_qkv_bias(unet)
        assert len(biases) == 96
        assert sum(unet.get_parameter(n).numel() for n in biases) == 74_880
        n_lora = add_lora(unet, rank=8, alpha=1.0)
    assert n_lora == 311_616 * 8 == 2_492_928
    blocks = [n for n, _ in unet.named_modules() if n.endswith("transformer_blocks.0")]
    assert len(blocks) == 16
    wrapped = {n for n, m in unet.named_modules() if hasattr(m, "lora_A")}
    assert len(wrapped) == 16 * 9
    assert {n.split("transformer_blocks.0.")[1] for n in wrapped} == set(DEFAULT_LORA_TARGETS)
    assert not any(n.endswith(("ff.net.2", "proj_in", "proj_out")) for n in wrapped)
    scales = {m.scaling["default"] for n, m in unet.named_modules() if n in wrapped}
    assert scales == {0.125}
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable) and len(trainable) == 2 * 16 * 9
    # the random biases are frozen and attached to the (wrapped) base layers
    assert not any(p.requires_grad for n, p in unet.named_parameters() if n.endswith("to_q.base_layer.bias"))


def test_lora_rank32_count_on_meta():
    with torch.device("meta"):
        unet = build_unet("sd15")
        assert add_lora(unet, rank=32, alpha=1.0) == 9_971_712


def test_lora_target_typo_raises():
    unet = build_unet("tiny")
    with pytest.raises(ValueError, match="attn3.to_q"):
        add_lora(unet, rank=2, targets=("attn3.to_q",))


@pytest.fixture()
def tiny_branch():
    torch.manual_seed(0)
    return build_diffusion_branch(unet="tiny", vae="tiny", lora_rank=4, lora_alpha=1.0)


def test_moments_and_latent_sampling(tiny_branch):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    mom = tiny_branch.encode_moments(x)
    assert mom.shape == (2, 8, 8, 8) and not mom.requires_grad
    torch.testing.assert_close(mom, tiny_branch.vae.encode(x).latent_dist.parameters)
    # logvar clamped at -30: the sample equals the scaled mean up to exp(-15)
    m = torch.cat([torch.randn(2, 4, 8, 8), torch.full((2, 4, 8, 8), -100.0)], 1)
    torch.testing.assert_close(tiny_branch.sample_latents(m), 0.18215 * m[:, :4], atol=1e-6, rtol=0)
    # a fresh posterior sample every call, reproducible under the global seed
    m2 = torch.zeros(2, 8, 8, 8)
    torch.manual_seed(3)
    a = tiny_branch.sample_latents(m2)
    torch.manual_seed(3)
    b = tiny_branch.sample_latents(m2)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        a, 0.18215 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    )
    assert not torch.equal(a, tiny_branch.sample_latents(m2))
    with pytest.raises(ValueError, match="8 channels"):
        tiny_branch.sample_latents(torch.zeros(2, 4, 8, 8))


def test_loss_is_plain_mse_with_given_t_and_noise(tiny_branch):
    cond = torch.randn(2, 1, 32)
    mom = torch.cat([torch.randn(2, 4, 8, 8), torch.full((2, 4, 8, 8), -100.0)], 1)
    t, eps = torch.tensor([10, 900]), torch.randn(2, 4, 8, 8)
    loss = tiny_branch(cond, vae_moments=mom, t=t, noise=eps)
    z0 = 0.18215 * mom[:, :4]
    xt = tiny_branch.add_noise(z0, eps, t)
    ref = ((tiny_branch.unet(xt, t, encoder_hidden_states=cond).sample - eps) ** 2).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_branch(cond)
    with pytest.raises(ValueError, match="cond must be"):
        tiny_branch(torch.randn(2, 32), vae_moments=mom)


def test_single_token_cross_attention_qk_get_no_gradient(tiny_branch):
    unet = tiny_branch.unet
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B so that A matrices receive gradients too
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    cond = torch.randn(3, 1, 32, requires_grad=True)
    loss = tiny_branch(cond, x_vae=torch.rand(3, 3, 64, 64) * 2 - 1)
    loss.backward()
    assert cond.grad.abs().sum() > 0
    grads = {n: p.grad for n, p in unet.named_parameters() if "lora_" in n}
    live = sum(g.abs().sum().item() for n, g in grads.items() if "attn2.to_v" in n)
    dead = sum(g.abs().sum().item() for n, g in grads.items() if "attn2.to_q" in n or "attn2.to_k" in n)
    assert live > 1e-4 and dead < 1e-6 * live
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "attn1.to_q" in n)
    assert all(p.grad is None for n, p in unet.named_parameters() if "lora_" not in n)
    assert all(p.grad is None for p in tiny_branch.vae.parameters())


def test_lora_b_starts_at_zero_so_output_equals_base():
    torch.manual_seed(0)
    unet = build_unet("tiny")
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.randn(2, 1, 32)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=c).sample
        add_lora(unet, rank=4, alpha=1.0)
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=c).sample, ref)
    assert all(torch.all(p == 0) for n, p in unet.named_parameters() if "lora_B" in n)


def test_random_qkv_bias_values_and_order():
    torch.manual_seed(0)
    unet = build_unet("tiny")
    add_lora(unet, rank=2)
    with pytest.raises(RuntimeError, match="before add_lora"):
        add_random_qkv_bias(unet)
    unet = build_unet("tiny")
    names = add_random_qkv_bias(unet)
    assert len(names) == 4 * 2 * 3  # 4 transformer blocks (1 down, 1 mid, 2 up) x (attn1, attn2) x (q, k, v)
    for n in names:
        lin = unet.get_submodule(n[: -len(".bias")])
        assert lin.bias.abs().max() <= lin.in_features**-0.5 and not lin.bias.requires_grad
    assert unet._dcac_extra_state == tuple(names)


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    a = build_diffusion_branch(unet="tiny", vae="tiny", lora_rank=2)
    b = build_diffusion_branch(unet="tiny", vae="tiny", lora_rank=2, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    mom, cond = torch.randn(2, 8, 8, 8), torch.randn(2, 1, 32)
    grads = []
    for br in (a, b):
        br.train()
        c = cond.clone().requires_grad_(True)
        torch.manual_seed(5)
        br(c, vae_moments=mom).backward()
        grads.append(c.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert b.unet.is_gradient_checkpointing


def test_default_lora_targets_match_spec():
    assert DEFAULT_LORA_TARGETS == (
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
        "ff.net.0.proj",
    )
    assert json.loads((RESOURCES / "tiny" / "unet" / "config.json").read_text())["cross_attention_dim"] == 32
