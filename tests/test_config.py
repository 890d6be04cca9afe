"""Config: every shipped yaml merges; unknown keys and wrong types fail with the key named."""

from pathlib import Path

import pytest

from dcac_plugin.config import ConfigError, config_hash, get_default_config, merge_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "suites" not in p.parts)


def test_there_are_configs_for_every_protocol():
    names = {p.stem for p in CONFIGS}
    for kind in ("dcac", "clip_baseline"):
        for s in ("ma", "d", "ms", "c3"):
            for t in ("ma", "d", "ms", "c3"):
                if s != t:
                    assert f"{kind}_{s}2{t}" in names
            assert f"{kind}_multi2{s}" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_merges(path):
    cfg = merge_config(get_default_config(), str(path))
    assert cfg.data.sources and cfg.data.targets


def test_paper_hyperparameters_per_protocol():
    def load(name):
        return merge_config(get_default_config(), str(ROOT / "configs" / f"{name}.yaml"))

    ma = load("dcac_ma2ms")
    assert (ma.dcac.sd.lora_rank, ma.dcac.cond.tau) == (8, 0.6)
    assert ma.data.sources == ["market1501"] and ma.data.targets == ["msmt17"]
    assert (ma.train.lr, ma.train.max_epoch, ma.train.batch_size, ma.sampler.num_instances) == (5e-6, 60, 64, 4)
    assert ma.train.weight_decay == 1e-4 and ma.train.stepsize == [30, 50]
    assert ma.dcac.use_diffusion and ma.data.test_interpolation == "bilinear"
    ms = load("dcac_ms2ma")
    assert (ms.dcac.sd.lora_rank, ms.dcac.cond.tau) == (32, 1.0)
    c3 = load("dcac_c32ma")
    assert (c3.dcac.sd.lora_rank, c3.dcac.cond.tau) == (8, 0.1)
    multi = load("dcac_multi2c3")
    assert multi.data.sources == ["market1501", "dukemtmcreid", "msmt17"]
    assert (multi.dcac.sd.lora_rank, multi.dcac.cond.tau) == (32, 1.0)
    assert not load("clip_baseline_ma2ms").dcac.use_diffusion


def test_unknown_key_in_file_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        merge_config(get_default_config(), str(bad))


def test_unknown_key_and_wrong_type_in_overrides():
    with pytest.raises(ConfigError, match=r"'dcac\.tauu'"):
        merge_config(get_default_config(), None, ["dcac.tauu", "0.5"])
    with pytest.raises(ConfigError, match=r"train\.max_epoch"):
        merge_config(get_default_config(), None, ["train.max_epoch", "ten"])
    with pytest.raises(ConfigError, match="pairs"):
        merge_config(get_default_config(), None, ["train.lr"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        merge_config(get_default_config(), "no/such.yaml")


def test_list_keys_accept_plain_names():
    cfg = merge_config(get_default_config(), None, ["data.sources", "market1501,dukemtmcreid"])
    assert cfg.data.sources == ["market1501", "dukemtmcreid"]


def test_config_hash_ignores_output_folder_only():
    a = merge_config(get_default_config(), None, ["data.save_dir", "x"])
    b = merge_config(get_default_config(), None, ["data.save_dir", "y"])
    c = merge_config(get_default_config(), None, ["train.lr", "1e-5"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_an_upstream_torchreid_yaml_merges_unchanged(tmp_path):
    """torchreid's own experiment files (e.g. im_osnet_x0_25_softmax_256x128_amsgrad.yaml) keep working."""
    upstream = tmp_path / "im_osnet_x0_25_softmax_256x128_amsgrad.yaml"
    upstream.write_text(
        "model:\n  name: 'osnet_x0_25'\n  pretrained: True\n\n"
        "data:\n  type: 'image'\n  sources: ['market1501']\n  targets: ['market1501']\n  height: 256\n"
        "  width: 128\n  combineall: False\n  transforms: ['random_flip']\n  save_dir: 'log/osnet_x0_25'\n\n"
        "loss:\n  name: 'softmax'\n  softmax:\n    label_smooth: True\n\n"
        "train:\n  optim: 'amsgrad'\n  lr: 0.003\n  max_epoch: 180\n  batch_size: 128\n  fixbase_epoch: 10\n"
        "  open_layers: ['classifier']\n  lr_scheduler: 'single_step'\n  stepsize: [80]\n\n"
        "test:\n  batch_size: 300\n  dist_metric: 'euclidean'\n  normalize_feature: False\n  evaluate: False\n"
        "  eval_freq: -1\n  rerank: False\n"
    )
    cfg = merge_config(get_default_config(), str(upstream))
    assert cfg.model.name == "osnet_x0_25" and cfg.train.optim == "amsgrad" and cfg.train.stepsize == [80]


@pytest.mark.parametrize("text, key", [("train:\n  max_epoch: ten\n", "train.max_epoch"),
                                       ("dcac:\n  sd:\n    lora_rank: [8]\n", "dcac.sd.lora_rank"),
                                       ("data:\n  sources: 3\n", "data.sources")])
def test_wrong_type_in_a_yaml_file_names_the_key_and_the_file(tmp_path, text, key):
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as ei:
        merge_config(get_default_config(), str(bad))
    msg = str(ei.value)
    assert msg.startswith(f"{bad}: ") and key in msg and "Type mismatch" in msg


def test_amp_value_in_a_yaml_file_is_checked(tmp_path):
    bad = tmp_path / "amp.yaml"
    bad.write_text("train:\n  amp: fp8\n")
    with pytest.raises(ConfigError) as ei:
        merge_config(get_default_config(), str(bad))
    assert str(ei.value) == f"{bad}: train.amp must be auto, off, fp16 or bf16; got 'fp8'"
    with pytest.raises(ConfigError, match=r"^the overrides: train\.amp must be .*; got 'fp32'$"):
        merge_config(get_default_config(), None, ["train.amp", "fp32"])
