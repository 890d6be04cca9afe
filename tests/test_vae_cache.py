"""VAE posterior-moment cache: values, lookup, reuse, invalidation, corruption, training semantics."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from dcac_plugin.data.reader import read_image
from dcac_plugin.data.transforms import vae_transform
from dcac_plugin.data.vae_cache import MissingVAEMomentError, VAECacheError, VAEMomentCache
from dcac_plugin.models.diffusion import DiffusionBranch


@pytest.fixture(scope="module")
def model():
    from dcac_plugin.models import build_model

    torch.manual_seed(0)
    return build_model("dcac_tiny", 5, image_size=(128, 64), vae_image_size=64)


def _person(seed: int, h: int = 96, w: int = 48) -> Image.Image:
    """A coloured background with a 'torso' and 'legs' rectangle plus noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float64)
    img[:] = rng.uniform(0, 255, 3)
    img[h // 8 : h // 2, w // 4 : 3 * w // 4] = rng.uniform(0, 255, 3)
    img[h // 2 : 7 * h // 8, w // 3 : 2 * w // 3] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    paths = []
    for i in range(6):
        p = d / f"{i:04d}_c{i % 2 + 1}.{'png' if i % 2 else 'jpg'}"
        _person(i).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def count_encodes(monkeypatch):
    calls = {"n": 0, "images": 0}
    real = DiffusionBranch.encode_moments

    def counting(self, x):
        calls["n"] += 1
        calls["images"] += x.shape[0]
        return real(self, x)

    monkeypatch.setattr(DiffusionBranch, "encode_moments", counting)
    return calls


def _direct(model, paths, tf):
    return model.diffusion.encode_moments(torch.stack([tf(read_image(p)) for p in paths]))


def test_moments_match_encoder_and_lookup_order(model, images, tmp_path, count_encodes):
    tf = vae_transform(64)
    model.diffusion.vae.train()  # must be put in eval for the build and restored afterwards
    try:
        cache = VAEMomentCache.build_or_load(images[::-1] + images[:2], model.diffusion, tf, tmp_path / "c",
                                             batch_size=4)
        assert model.diffusion.vae.training
    finally:
        model.diffusion.vae.eval()
    assert count_encodes == {"n": 2, "images": 6}  # deduplicated, batched 4 + 2
    assert len(cache) == 6 and cache.paths == sorted(images)
    assert re.fullmatch(r"[0-9a-f]{64}", cache.key)
    assert cache.path == tmp_path / "c" / f"vae_moments_{cache.key}.safetensors" and cache.path.is_file()
    assert [p.name for p in (tmp_path / "c").iterdir()] == [cache.path.name]  # no temp file left
    assert cache.moments.shape == (6, 8, 8, 8) and cache.moments.dtype == torch.float32

    order = [images[3], images[0], images[5], images[3]]
    got = cache.lookup(order)
    assert got.shape == (4, 8, 8, 8) and got.dtype == torch.float32 and got.device.type == "cpu"
    # Equal up to rounding only: the VAE convolutions' summation order depends on the batch size on
    # CPU (batch 1 vs 8 differ by at most 1.0e-6 at |moments| <= 1.04; batch 4 vs 8 are bit-equal).
    torch.testing.assert_close(got, _direct(model, order, tf), rtol=0, atol=1e-6)
    assert torch.equal(got[0], got[3]) and not torch.equal(got[0], got[1])
    assert cache.lookup(order, device="cpu").shape == (4, 8, 8, 8)

    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(KeyError, match=re.escape(missing)) as ei:
        cache.lookup([images[0], missing])
    assert isinstance(ei.value, MissingVAEMomentError)
    assert str(ei.value).startswith(f"image {missing!r} is not in the VAE moment cache")


def test_second_call_reads_file(model, images, tmp_path, count_encodes, caplog):
    tf = vae_transform(64)
    a = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    assert count_encodes["n"] == 1
    mtime = a.path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="dcac_plugin.data.vae_cache"):
        b = VAEMomentCache.build_or_load(list(reversed(images)), model.diffusion, tf, tmp_path)
    assert count_encodes["n"] == 1  # no recompute
    assert b.key == a.key and b.path == a.path and a.path.stat().st_mtime_ns == mtime
    assert torch.equal(a.moments, b.moments)
    assert a.channels_last and b.channels_last  # layout recorded in the file
    assert b.lookup(images[:3]).stride() == a.lookup(images[:3]).stride() == (512, 1, 64, 8)
    assert any("loaded: 6 images" in r.getMessage() for r in caplog.records)


def test_invalidation(model, images, tmp_path, count_encodes):
    tf = vae_transform(64)
    cdir = tmp_path / "c"
    base = VAEMomentCache.build_or_load(images, model.diffusion, tf, cdir)
    keys = {base.key}

    # (a) one image's bytes change (same path)
    _person(100).save(images[2])
    new = VAEMomentCache.build_or_load(images, model.diffusion, tf, cdir)
    assert new.key not in keys and count_encodes["n"] == 2
    keys.add(new.key)
    torch.testing.assert_close(new.lookup([images[2]]), _direct(model, [images[2]], tf), rtol=0, atol=1e-6)
    assert not torch.allclose(new.lookup([images[2]]), base.lookup([images[2]]))
    assert torch.equal(new.lookup([images[0]]), base.lookup([images[0]]))
    count_encodes["n"] = 2  # _direct encoded once more

    # (b) one VAE encoder weight changes
    w = model.diffusion.vae.encoder.conv_in.weight
    w0 = w.detach().clone()
    with torch.no_grad():
        w[0, 0, 0, 0] += 0.5
    try:
        changed = VAEMomentCache.build_or_load(images, model.diffusion, tf, cdir)
        assert changed.key not in keys and count_encodes["n"] == 3
        keys.add(changed.key)
    finally:
        with torch.no_grad():
            w.copy_(w0)
    # the decoder is not part of the key
    d = model.diffusion.vae.decoder.conv_in.weight
    d0 = d.detach().clone()
    with torch.no_grad():
        d[0, 0, 0, 0] += 0.5
    try:
        assert VAEMomentCache.build_or_load(images, model.diffusion, tf, cdir).key == new.key
        assert count_encodes["n"] == 3
    finally:
        with torch.no_grad():
            d.copy_(d0)

    # (c) transform changes (VAE view 32x32 -> 4x4 latent)
    small = VAEMomentCache.build_or_load(images, model.diffusion, vae_transform(32), cdir)
    assert small.key not in keys and count_encodes["n"] == 4
    assert small.moments.shape == (6, 8, 4, 4)
    keys.add(small.key)

    # stale files of other keys are left alone
    assert {p.name for p in cdir.iterdir()} == {f"vae_moments_{k}.safetensors" for k in keys}


def test_corrupt_file_is_rebuilt(model, images, tmp_path, count_encodes, caplog):
    tf = vae_transform(64)
    good = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    ref = good.moments.clone()

    good.path.write_bytes(good.path.read_bytes()[:-100])  # truncated
    with caplog.at_level(logging.WARNING, logger="dcac_plugin.data.vae_cache"):
        again = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    assert count_encodes["n"] == 2 and torch.equal(again.moments, ref)
    assert any(str(good.path) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()

    # a readable file with the right name but another path list
    from safetensors.torch import save_file

    save_file({"moments": ref}, str(good.path),
              metadata={"format_version": "1", "key": good.key, "paths": json.dumps(images[:1] * 6),
                        "layout": "channels_last"})
    with caplog.at_level(logging.WARNING, logger="dcac_plugin.data.vae_cache"):
        third = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    assert count_encodes["n"] == 3 and torch.equal(third.moments, ref)
    assert any("path list differs" in r.getMessage() for r in caplog.records)

    # NaN moments under the right metadata
    bad = ref.clone()
    bad[0, 0, 0, 0] = float("nan")
    save_file({"moments": bad}, str(good.path),
              metadata={"format_version": "1", "key": good.key, "paths": json.dumps(sorted(images)),
                        "layout": "channels_last"})
    fourth = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    assert count_encodes["n"] == 4 and torch.equal(fourth.moments, ref)


def test_bad_inputs(model, images, tmp_path):
    with pytest.raises(VAECacheError, match="memory address"):
        VAEMomentCache.build_or_load(images, model.diffusion, lambda im: vae_transform(64)(im), tmp_path)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        VAEMomentCache.build_or_load(images + [str(tmp_path / "gone.jpg")], model.diffusion,
                                     vae_transform(64), tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        VAEMomentCache.build_or_load([], model.diffusion, vae_transform(64), tmp_path)


def test_training_semantics_match_online_encoding(model, images, tmp_path):
    tf = vae_transform(64)
    cache = VAEMomentCache.build_or_load(images, model.diffusion, tf, tmp_path)
    batch = [images[4], images[1], images[1], images[0]]
    x_vae = torch.stack([tf(read_image(p)) for p in batch])
    moments = cache.lookup(batch)
    # randn_like in DiffusionBranch.sample_latents follows the moments' memory layout; diffusers'
    # AutoencoderKL returns channels-last moments, and lookup mirrors the layout recorded at build time
    assert cache.channels_last and moments.stride() == model.diffusion.encode_moments(x_vae).stride()
    cond = torch.randn(4, 1, model.diffusion.context_dim)
    with torch.no_grad():
        torch.manual_seed(123)
        online = model.diffusion(cond, x_vae=x_vae)
        torch.manual_seed(123)
        cached = model.diffusion(cond, vae_moments=moments)
        torch.manual_seed(124)
        other = model.diffusion(cond, vae_moments=moments)
    # The moments agree up to the VAE's batch-size-dependent rounding (see above), and so do the losses;
    torch.testing.assert_close(moments, model.diffusion.encode_moments(x_vae), rtol=0, atol=1e-6)
    torch.testing.assert_close(cached, online, rtol=1e-5, atol=1e-6)
    # given the same moments the two paths are bit-identical: the cache changes no draw and no arithmetic.
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(model.diffusion, "encode_moments", lambda x: moments)
        torch.manual_seed(123)
        online_same = model.diffusion(cond, x_vae=x_vae)
    assert torch.equal(cached, online_same)
    assert not torch.allclose(other, online)  # the posterior / timestep / noise draws do matter
