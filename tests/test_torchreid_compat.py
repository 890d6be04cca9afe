"""The one door into torchreid: registration, model delegation, torchreid-written checkpoints."""

import logging

import numpy as np
import pytest
import torch

import dcac_plugin
from dcac_plugin._torchreid import image_dataset_registry, load_torchreid_checkpoint, model_factory, tr


def test_register_is_idempotent_and_fills_torchreid_registries():
    dcac_plugin.register()
    dcac_plugin.register()
    assert {"cuhk03_np", "msmt17_trainval"} <= set(image_dataset_registry())
    assert {"dcac_vit_b16", "dcac_tiny", "clip_reid_vit_b16", "clip_reid_tiny"} <= set(model_factory())
    # torchreid's own builder reaches the plugin model through its registry
    m = tr.models.build_model("clip_reid_tiny", 7, loss="softmax", pretrained=False, use_gpu=False)
    assert m.encoder.fc.out_features == 7


def test_build_model_delegates_other_names_to_torchreid_with_random_init_logged(caplog):
    with caplog.at_level(logging.WARNING):
        m = dcac_plugin.build_model("osnet_x0_25", 5, loss="softmax", pretrained=False)
    assert type(m).__module__.endswith("osnet")
    assert m.classifier.out_features == 5
    assert "random" in caplog.text.lower()
    with pytest.raises(ValueError):
        dcac_plugin.build_model("osnet_x0_25", 5, pretrained=True)  # never downloads


def test_checkpoints_written_by_torchreid_reload_with_weights_only(tmp_path):
    model = dcac_plugin.build_model("osnet_x0_25", 5, pretrained=False)
    optim = torch.optim.Adam(model.parameters())
    state = {"state_dict": model.state_dict(), "epoch": 3, "rank1": np.float32(0.5),
             "optimizer": optim.state_dict()}
    tr.utils.save_checkpoint(state, str(tmp_path), is_best=False)
    path = next(tmp_path.glob("model.pth.tar-*"))
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, weights_only=True)  # what torchreid's own loader trips on under torch >= 2.6
    ckpt = load_torchreid_checkpoint(str(path))
    assert ckpt["epoch"] == 3 and float(ckpt["rank1"]) == 0.5
    fresh = dcac_plugin.build_model("osnet_x0_25", 5, pretrained=False)
    fresh.load_state_dict(ckpt["state_dict"])
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
