"""List-valued config keys are lists once merged (yaml string, override, code), and the facts
defined once: re-ranking presets, AMP modes, the version."""

from pathlib import Path

import pytest

from dcac_plugin.config import LIST_KEYS, get_default_config, merge_config, normalise_list_keys

ROOT = Path(__file__).resolve().parents[1]


def test_list_keys_are_the_name_lists():
    assert set(LIST_KEYS) == {"data.sources", "data.targets", "data.transforms", "data.custom",
                              "train.open_layers", "train.new_layers"}


def test_yaml_string_for_a_list_key_becomes_a_one_element_list(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  sources: market1501\n  targets: msmt17\ntrain:\n  open_layers: classifier\n")
    cfg = merge_config(get_default_config(), str(f))
    assert cfg.data.sources == ["market1501"] and cfg.data.targets == ["msmt17"]
    assert cfg.train.open_layers == ["classifier"]
    as_lists = tmp_path / "l.yaml"
    as_lists.write_text("data:\n  sources: [market1501]\n  targets: [msmt17]\ntrain:\n  open_layers: [classifier]\n")
    from dcac_plugin.config import config_hash

    assert config_hash(cfg) == config_hash(merge_config(get_default_config(), str(as_lists)))


def test_numeric_list_keys_still_reject_a_string(tmp_path):
    from dcac_plugin.config import ConfigError

    f = tmp_path / "c.yaml"
    f.write_text("train:\n  stepsize: thirty\n")
    with pytest.raises(ConfigError):
        merge_config(get_default_config(), str(f))


def test_overrides_give_lists():
    cfg = merge_config(get_default_config(), None, ["data.targets", "msmt17", "data.sources", "market1501,dukemtmcreid",
                                                    "train.new_layers", "['classifier', 'fc']"])
    assert cfg.data.targets == ["msmt17"] and cfg.data.sources == ["market1501", "dukemtmcreid"]
    assert cfg.train.new_layers == ["classifier", "fc"]


def test_normalise_list_keys_for_configs_set_in_code():
    cfg = get_default_config()
    cfg.data.targets = "msmt17"
    assert normalise_list_keys(cfg).data.targets == ["msmt17"]
    assert merge_config(cfg).data.targets == ["msmt17"]


def test_rerank_presets_are_the_config_and_function_defaults():
    import inspect

    from dcac_plugin.evaluation import evaluate_features, re_ranking
    from dcac_plugin.evaluation.rerank import SparseReranker
    from dcac_plugin.protocols import DCAC_RERANK, TORCHREID_RERANK, RerankParams

    assert DCAC_RERANK == RerankParams(50, 15, 0.3) and TORCHREID_RERANK == RerankParams(20, 6, 0.3)
    t = get_default_config().test
    assert RerankParams.from_config(t) == DCAC_RERANK
    for fn in (evaluate_features, re_ranking, SparseReranker.from_features):
        p = inspect.signature(fn).parameters
        assert (p["k1"].default, p["k2"].default, p["lambda_value"].default) == (20, 6, 0.3)
    assert RerankParams.from_kwargs({"k1": 7}) == RerankParams(7, 6, 0.3)
    assert DCAC_RERANK.kwargs() == {"k1": 50, "k2": 15, "lambda_value": 0.3}


def test_amp_modes_defined_once():
    import argparse

    import torch

    from dcac_plugin.cli.extract import add_model_args
    from dcac_plugin.config import CHOICES, ConfigError
    from dcac_plugin.utils.precision import AMP_MODES, INFERENCE_AMP_MODES, check_inference_amp, resolve_amp

    assert CHOICES["train.amp"] is AMP_MODES and set(INFERENCE_AMP_MODES) == set(AMP_MODES) - {"auto"}
    p = argparse.ArgumentParser()
    add_model_args(p)
    assert next(a for a in p._actions if a.dest == "amp").choices is INFERENCE_AMP_MODES
    assert resolve_amp("auto", torch.device("cpu")) == ("off", False)
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    assert check_inference_amp("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="amp must be"):
        check_inference_amp("auto")
    with pytest.raises(ConfigError, match="train.amp"):
        merge_config(get_default_config(), None, ["train.amp", "fp8"])


def test_package_root_reexports():
    import dcac_plugin
    from dcac_plugin._version import __version__
    from dcac_plugin.config import ConfigError
    from dcac_plugin.errors import ConfigError as Moved
    from dcac_plugin.registry import register

    assert dcac_plugin.__version__ == __version__ and dcac_plugin.register is register and ConfigError is Moved
