"""Model families (dcac_plugin.families): which family a config gets, and what each family does for a run."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny
from PIL import Image

from dcac_plugin import runner
from dcac_plugin.config import get_default_config, merge_config
from dcac_plugin.data import transforms as tfm
from dcac_plugin.data.manager import eval_transform
from dcac_plugin.engine.build import build_plugin_model, is_plugin_config
from dcac_plugin.families import (
    ModelFamily,
    PluginFamily,
    TorchreidFamily,
    family_for,
    register_family,
    registered_families,
    unregister_family,
)
from dcac_plugin.models import DCAC
from dcac_plugin.models.weights import WeightLoadError

ROOT = Path(__file__).resolve().parents[1]
CLIP_PRIOR = "dcac_plugin/resources/priors/clip_tiny.safetensors"
TINY = tiny.TINY + ["train.print_freq", "1"]


def _cfg(config: str | None = None, *opts: str):
    return merge_config(get_default_config(), str(ROOT / config) if config else None, list(opts))


DCAC_TINY = ("configs/demo/dcac_tiny.yaml",)
CLIP_TINY = ("configs/demo/clip_tiny.yaml",)
CLIP_VIA_FLAG = ("configs/demo/dcac_tiny.yaml", "dcac.use_diffusion", "False")
OSNET = ("configs/demo/osnet.yaml",)


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (150, 70, 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------ which family


@pytest.mark.parametrize(("args", "family", "model"), [
    ((None,), PluginFamily, "dcac_vit_b16"),
    (DCAC_TINY, PluginFamily, "dcac_tiny"),
    (CLIP_TINY, PluginFamily, "clip_reid_tiny"),
    (CLIP_VIA_FLAG, PluginFamily, "clip_reid_tiny"),
    ((None, "model.name", "clip_reid_vit_b16"), PluginFamily, "clip_reid_vit_b16"),
    (OSNET, TorchreidFamily, "osnet_x0_25"),
    ((None, "model.name", "resnet50"), TorchreidFamily, "resnet50"),
])
def test_family_for_picks_the_family_and_the_recorded_model_name(args, family, model):
    cfg = _cfg(*args)
    fam = family_for(cfg)
    assert type(fam) is family
    assert fam.model_name(cfg) == model
    assert is_plugin_config(cfg) is (family is PluginFamily)  # the legacy question agrees


def test_diffusion_only_for_dcac_proper():
    fam = PluginFamily()
    assert fam.uses_diffusion(_cfg(*DCAC_TINY))
    assert not fam.uses_diffusion(_cfg(*CLIP_TINY))
    assert not fam.uses_diffusion(_cfg(*CLIP_VIA_FLAG))


def test_family_flags():
    assert PluginFamily.encoder_only_eval and not TorchreidFamily.encoder_only_eval
    assert TorchreidFamily.expects_imagenet_init and not PluginFamily.expects_imagenet_init
    assert PluginFamily().find_unused_parameters(_cfg(*DCAC_TINY)) is False
    assert PluginFamily().find_unused_parameters(_cfg(*DCAC_TINY, "dcac.noise_loss_begin_epoch", "2")) is True
    assert PluginFamily().find_unused_parameters(_cfg(*DCAC_TINY, "dcac.cond.hard_label", "True")) is True
    assert TorchreidFamily().find_unused_parameters(_cfg(*OSNET)) is False


def test_check_config_refuses_torchreid_finetuning_only_for_plugin_models():
    from dcac_plugin.config import ConfigError

    with pytest.raises(ConfigError, match="fixbase_epoch"):
        PluginFamily().check_config(_cfg(*CLIP_TINY, "train.fixbase_epoch", "2"))
    TorchreidFamily().check_config(_cfg(*OSNET, "train.fixbase_epoch", "2"))
    with pytest.raises(ConfigError, match="fixbase_epoch"):
        runner.load_config(ROOT / CLIP_TINY[0], ["train.fixbase_epoch", "2"])


# ------------------------------------------------------------------ transforms


@pytest.mark.parametrize(("args", "plugin"), [(DCAC_TINY, True), (CLIP_VIA_FLAG, True), (OSNET, False)])
def test_eval_transform_is_the_runners(args, plugin):
    cfg = _cfg(*args)
    img = _image()
    got = family_for(cfg).eval_transform(cfg)(img)
    assert torch.equal(got, eval_transform(cfg, plugin=plugin)(img))
    assert not torch.equal(got, eval_transform(cfg, plugin=not plugin)(img))


def test_preprocessing_describes_the_eval_transform():
    cfg = _cfg(*DCAC_TINY)
    assert PluginFamily().preprocessing(cfg) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "bicubic")
    cfg = _cfg(*OSNET)
    assert TorchreidFamily().preprocessing(cfg) == (list(cfg.data.norm_mean), list(cfg.data.norm_std), "bilinear")


@pytest.mark.parametrize(("args", "evaluate_only", "opts", "paired"), [
    (DCAC_TINY, False, (), True),                                   # DCAC trains on [x, x_vae]
    (DCAC_TINY, True, (), False),                                   # evaluation: no VAE view
    (DCAC_TINY, False, ("dcac.sd.cache_vae_moments", "True"), False),  # VAE moments come from the cache
    (CLIP_VIA_FLAG, False, (), False),                              # the CLIP baseline has no diffusion
])
def test_plugin_train_views(synthetic_tiny_root, args, evaluate_only, opts, paired):
    cfg = _cfg(*args, "data.root", str(synthetic_tiny_root), *TINY, *opts)
    dm = PluginFamily().build_datamanager(cfg, use_gpu=False, evaluate_only=evaluate_only)
    train_t = dm.train_loader.dataset.transform
    assert isinstance(train_t, tfm.PairedViews) is paired
    assert isinstance(dm.transform_memory, type(tfm.memory_transform(128, 64, [0.5] * 3, [0.5] * 3)))
    img = _image(1)
    loader = next(iter(next(iter(dm.test_loader.values())).values()))
    assert torch.equal(loader.dataset.transform(img), eval_transform(cfg, plugin=True)(img))


def test_torchreid_views_are_torchreids(synthetic_tiny_root):
    cfg = _cfg(*OSNET, "data.root", str(synthetic_tiny_root), *TINY)
    dm = TorchreidFamily().build_datamanager(cfg, use_gpu=False, evaluate_only=False)
    assert not isinstance(dm.train_loader.dataset.transform, tfm.PairedViews)
    assert not hasattr(dm, "transform_memory")
    img = _image(2)
    loader = next(iter(next(iter(dm.test_loader.values())).values()))
    assert torch.equal(loader.dataset.transform(img), eval_transform(cfg, plugin=False)(img))


# ------------------------------------------------------------------ models


def test_plugin_family_builds_dcac_and_the_encoder_only_model():
    fam = PluginFamily()
    dcac = fam.build_model(_cfg(*DCAC_TINY), 5, 0, load_init=False)
    assert isinstance(dcac, DCAC) and dcac.diffusion is not None
    enc = fam.build_model(_cfg(*DCAC_TINY), 5, 0, encoder_only=True, load_init=False)
    assert isinstance(enc, DCAC) and enc.diffusion is None
    base = fam.build_model(_cfg(*CLIP_VIA_FLAG), 5, 0, load_init=False)
    assert isinstance(base, DCAC) and base.diffusion is None


def test_torchreid_family_builds_torchreid_models():
    from dcac_plugin._torchreid import tr

    model = TorchreidFamily().build_model(_cfg(*OSNET), 7, 0)
    assert isinstance(model, tr.models.osnet.OSNet) and model.classifier.out_features == 7
    model = TorchreidFamily().build_model(_cfg(None, "model.name", "resnet50", "model.pretrained", "False"), 3, 0)
    assert isinstance(model, tr.models.resnet.ResNet)


# ------------------------------------------------------------------ weights


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_plugin_weights_ours_and_official(tmp_path):
    cfg = _cfg(*CLIP_TINY)
    torch.manual_seed(3)
    model = build_plugin_model(cfg, 5, 0, encoder_only=True, load_clip=False)
    torch.save({"model": model.trainable_state_dict()}, tmp_path / "ckpt.pth")
    loaded = PluginFamily().build_inference_model(cfg, tmp_path / "ckpt.pth")
    assert _same_params(loaded.encoder.image_encoder, model.encoder.image_encoder)
    assert loaded.encoder.fc.weight.shape[0] == 5
    official = {f"module.{k}": v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    official["module.denoiser.model.prompt_emb.prompt_emb"] = torch.randn(5, 8)
    torch.save({"state_dict": official}, tmp_path / "source_ma.pth")
    again = PluginFamily().build_inference_model(cfg, tmp_path / "source_ma.pth")
    assert _same_params(again.encoder.image_encoder, model.encoder.image_encoder)
    with pytest.raises(WeightLoadError):  # a torchreid file is not a plugin model's
        from dcac_plugin._torchreid import tr

        osnet = tr.models.build_model("osnet_x0_25", 3, pretrained=False, use_gpu=False)
        torch.save({"state_dict": osnet.state_dict()}, tmp_path / "osnet.pth")
        PluginFamily().build_inference_model(cfg, tmp_path / "osnet.pth")


def test_torchreid_weights(tmp_path):
    cfg = _cfg(*OSNET)
    torch.manual_seed(4)
    model = TorchreidFamily().build_model(cfg, 7, 0)
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "osnet.pth")
    loaded = TorchreidFamily().build_inference_model(cfg, tmp_path / "osnet.pth")
    assert loaded.classifier.out_features == 7 and _same_params(loaded, model)
    enc = build_plugin_model(_cfg(*CLIP_TINY), 5, 0, encoder_only=True, load_clip=False)
    torch.save({"model": enc.trainable_state_dict()}, tmp_path / "clip.pth")
    with pytest.raises(WeightLoadError):
        TorchreidFamily().build_inference_model(cfg, tmp_path / "clip.pth")


def test_load_dispatch_for_model_load_weights_and_saved_checkpoints(tmp_path, monkeypatch):
    import dcac_plugin.models.weights as weights

    calls = []
    monkeypatch.setattr(weights, "load_official_dcac_checkpoint", lambda m, p: calls.append(("official", p)))
    monkeypatch.setattr(weights, "load_torchreid_pretrained", lambda m, p: calls.append(("torchreid", p)))
    (tmp_path / "w.pth").write_bytes(b"x")
    engine = SimpleNamespace(model=object(), resume=lambda p: calls.append(("resume", p)))
    cfg_p = _cfg(*DCAC_TINY, "model.load_weights", str(tmp_path / "w.pth"))
    cfg_t = _cfg(*OSNET, "model.load_weights", str(tmp_path / "w.pth"))
    assert PluginFamily().load_config_weights(engine, cfg_p) == str(tmp_path / "w.pth")
    assert TorchreidFamily().load_config_weights(engine, cfg_t) == str(tmp_path / "w.pth")
    PluginFamily().load_saved(engine, "ckpt_p")
    TorchreidFamily().load_saved(engine, "ckpt_t")
    assert calls == [("official", str(tmp_path / "w.pth")), ("torchreid", str(tmp_path / "w.pth")),
                     ("official", "ckpt_p"), ("resume", "ckpt_t")]
    assert PluginFamily().load_config_weights(engine, _cfg(*DCAC_TINY)) == ""
    with pytest.raises(FileNotFoundError, match="model.load_weights"):
        TorchreidFamily().load_config_weights(engine, _cfg(*OSNET, "model.load_weights", str(tmp_path / "no")))


def test_initial_weights():
    plugin, torchreid = PluginFamily(), TorchreidFamily()
    assert plugin.initial_weights(_cfg(*DCAC_TINY), load_init=True) == ("clip:clip_tiny.safetensors", CLIP_PRIOR)
    assert plugin.initial_weights(_cfg(*DCAC_TINY), load_init=False) == ("random", None)
    assert plugin.initial_weights(_cfg(*DCAC_TINY, "dcac.clip_weights", ""), load_init=True) == ("random", None)
    # a CLIP path that is not a file (a folder, a missing file) is named but not hashed
    assert plugin.initial_weights(_cfg(*DCAC_TINY, "dcac.clip_weights", "x/ViT-B-16.pt"), True) == ("clip:ViT-B-16.pt",
                                                                                                  None)
    assert torchreid.initial_weights(_cfg(*OSNET), load_init=True) == ("random", None)
    cfg = _cfg(*OSNET, "model.pretrained", "True", "model.pretrained_path", "w/osnet_imagenet.pth")
    assert torchreid.initial_weights(cfg, load_init=True) == ("imagenet:osnet_imagenet.pth", "w/osnet_imagenet.pth")


# ------------------------------------------------------------------ results.json


def test_loss_labels():
    assert PluginFamily().loss_label(_cfg(*DCAC_TINY)) == "dcac"
    assert PluginFamily().loss_label(_cfg(*CLIP_TINY)) == "dcac"
    assert TorchreidFamily().loss_label(_cfg(*OSNET)) == "softmax"
    assert TorchreidFamily().loss_label(_cfg(*OSNET, "loss.name", "triplet")) == "softmax+triplet"


def test_record_fields():
    dcac = PluginFamily().record_fields(_cfg(*DCAC_TINY))
    assert list(dcac) == ["priors", "method"] and set(dcac["priors"]) == {"clip", "sd"}
    assert dcac["priors"]["clip"]["file"] == CLIP_PRIOR and len(dcac["priors"]["clip"]["sha256"]) == 64
    assert dcac["method"] == "DCAC (tiny)"
    base = PluginFamily().record_fields(_cfg(*CLIP_VIA_FLAG, "dcac.clip_weights", ""))
    assert base["priors"] == {"clip": {"file": "", "sha256": "", "init": "random"}}
    assert base["method"] == "CLIP baseline (tiny ViT, no diffusion branch) [random-init CLIP]"
    assert list(PluginFamily().record_fields(_cfg(None))) == ["priors"]  # the paper's model has no tiny label
    assert TorchreidFamily().record_fields(_cfg(*OSNET)) == {}


# ------------------------------------------------------------------ registry


class _RecordingFamily(TorchreidFamily):
    """A third family: torchreid's OSNet, with its own loss label and record field."""

    name = "recording"

    def __init__(self) -> None:
        self.engines = 0

    def matches(self, cfg) -> bool:
        return cfg.model.name == "osnet_x0_25"

    def build_engine(self, cfg, dm, device, distributed=False, encoder_only=False, load_init=True):
        self.engines += 1
        return super().build_engine(cfg, dm, device, distributed, encoder_only, load_init)

    def loss_label(self, cfg) -> str:
        return "recorded"

    def record_fields(self, cfg):
        return {"family": self.name}


def test_register_family_rules():
    fam = _RecordingFamily()
    assert register_family(fam) is fam
    try:
        assert registered_families()[0] is fam
        assert family_for(_cfg(*OSNET)) is fam
        assert type(family_for(_cfg(None, "model.name", "resnet50"))) is TorchreidFamily
        with pytest.raises(ValueError, match="already registered"):
            register_family(_RecordingFamily())
    finally:
        unregister_family(fam)
    assert type(family_for(_cfg(*OSNET))) is TorchreidFamily
    with pytest.raises(TypeError):
        register_family(TorchreidFamily)  # the class, not an instance
    with pytest.raises(TypeError):
        ModelFamily()  # abstract


def test_a_registered_family_is_used_by_the_runner(synthetic_tiny_root, tmp_path):
    fam = register_family(_RecordingFamily())
    try:
        cfg = runner.load_config(ROOT / OSNET[0], ["data.root", str(synthetic_tiny_root), "data.save_dir",
                                                   str(tmp_path / "run"), *TINY], eval_only=True)
        rec = runner.run(cfg)
    finally:
        unregister_family(fam)
    assert fam.engines == 1
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["loss"] == rec["loss"] == "recorded" and on_disk["family"] == "recording"
    assert rec["model"] == "osnet_x0_25" and rec["init"] == "random" and rec["status"] == "ok"
