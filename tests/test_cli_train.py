"""The CLI's main(argv) end to end, in-process, on generated data (DCAC, CLIP baseline, OSNet)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny
from helpers.tiny import returned_record

from dcac_plugin.cli.train import main
from dcac_plugin.config import ConfigError
from dcac_plugin.data.datasets import DatasetLayoutError
from dcac_plugin.models.weights import WeightLoadError

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny.TINY + ["train.print_freq", "1"]


def run(config: str, data_root: Path, out: Path, *extra: str) -> dict:
    argv = ["--config-file", str(ROOT / config), "data.root", str(data_root), "data.save_dir", str(out),
            *TINY, *extra]
    return main(argv)


def test_dcac_train_and_eval_writes_the_run_folder(tiny_dcac_run):
    out = tiny_dcac_run  # dcac_tiny.yaml, 1 epoch, data.targets msmt17,market1501
    rec = returned_record(out)
    for name in ("config.yaml", "train.log", "results.json", "checkpoint_ep1.pth"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(rec))
    assert set(rec["results"]) == {"msmt17", "market1501"}
    for metrics in rec["results"].values():
        assert set(metrics) == {"mAP", "rank1", "rank5", "rank10", "mINP"}
        assert all(0.0 <= v <= 100.0 for v in metrics.values())
        assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"]
    assert rec["protocol"]["key"] == "MA->MS+MA"
    assert rec["protocol"]["benchmark"] == "synthetic"
    assert rec["protocol"]["variants"]["msmt17_include_val"] is True
    assert rec["model"] == "dcac_tiny" and rec["epochs"] == 1 and rec["status"] == "ok"
    assert rec["method"] == "DCAC (tiny)"  # kept apart from the paper's ViT-B/16 rows
    assert len(rec["config_hash"]) == 16 and rec["versions"]["torch"] == torch.__version__.split("+")[0]
    assert rec["device"].startswith("cpu")
    # The checkpoint holds only trained tensors: no frozen UNet/VAE base weights.
    state = torch.load(out / "checkpoint_ep1.pth", map_location="cpu", weights_only=True)
    keys = list(state["model"])
    assert any(k.startswith("encoder.") for k in keys)
    assert any("lora_" in k for k in keys)
    assert any("prompt_emb" in k for k in keys)
    assert not any(k.startswith("diffusion.vae.") for k in keys)
    assert not any(k.startswith("diffusion.unet.") and "lora_" not in k for k in keys)
    assert state["epoch"] == 1 and "memory" in state["extra"]


def test_eval_only_reloads_the_checkpoint_and_reproduces_metrics(tiny_dcac_run, synthetic_tiny_root, tmp_path):
    out = tiny_dcac_run
    rec = returned_record(out)
    again = main(["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), "--eval-only",
                  "data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path / "eval"), *TINY,
                  "model.load_weights", str(out / "checkpoint_ep1.pth")])
    assert again["epochs"] == 0
    for k, v in rec["results"]["msmt17"].items():
        assert again["results"]["msmt17"][k] == pytest.approx(v, abs=1e-6)


def test_clip_baseline_has_no_diffusion_branch(tiny_clip_run, synthetic_tiny_root, tmp_path):
    out = tiny_clip_run  # clip_tiny.yaml, 1 epoch
    rec = returned_record(out)
    assert rec["model"] == "clip_reid_tiny"
    state = torch.load(out / "checkpoint_ep1.pth", map_location="cpu", weights_only=True)
    assert not any("lora_" in k or "prompt_emb" in k for k in state["model"])
    # The same switch on the DCAC config gives the same model name.
    rec2 = run("configs/demo/dcac_tiny.yaml", synthetic_tiny_root, tmp_path / "switch", "train.max_epoch", "1",
               "dcac.use_diffusion", "False")
    assert rec2["model"] == "clip_reid_tiny"


def test_osnet_baseline_through_torchreid_engine(tiny_osnet_run):
    out = tiny_osnet_run  # osnet.yaml, 1 epoch
    rec = returned_record(out)
    assert rec["model"] == "osnet_x0_25" and rec["loss"] == "softmax" and rec["init"] == "random"
    assert set(rec["results"]) == {"msmt17"}
    assert (out / "checkpoint_ep1.pth").is_file()


def test_resume_continues_from_the_last_checkpoint(tiny_clip_run, synthetic_tiny_root, tmp_path):
    out = Path(shutil.copytree(tiny_clip_run, tmp_path / "resumed"))  # clip_tiny.yaml, 1 epoch
    rec = main(["--config-file", str(ROOT / "configs/demo/clip_tiny.yaml"), "--resume", "data.root",
                str(synthetic_tiny_root), "data.save_dir", str(out), *TINY, "train.max_epoch", "2"])
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "checkpoint_ep1.pth" in log
    assert (out / "checkpoint_ep2.pth").is_file()
    straight = run("configs/demo/clip_tiny.yaml", synthetic_tiny_root, tmp_path / "straight", "train.max_epoch",
                   "2")
    for k, v in straight["results"]["msmt17"].items():
        assert rec["results"]["msmt17"][k] == pytest.approx(v, abs=1e-4), k


def test_bad_inputs_give_clear_errors(synthetic_tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="dcac.nope"):
        run("configs/demo/dcac_tiny.yaml", synthetic_tiny_root, tmp_path / "a", "dcac.nope", "1")
    with pytest.raises(DatasetLayoutError, match="dukemtmcreid"):
        run("configs/demo/dcac_tiny.yaml", tmp_path / "empty", tmp_path / "b", "data.sources", "dukemtmcreid")
    with pytest.raises(ConfigError, match="pretrained_path"):
        run("configs/demo/osnet.yaml", synthetic_tiny_root, tmp_path / "c", "model.pretrained", "True")
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        run("configs/demo/dcac_tiny.yaml", synthetic_tiny_root, tmp_path / "d", "model.load_weights",
            str(tmp_path / "no_such.pth"))


PAPER_TINY_OVERRIDES = [
    "model.name", "dcac_tiny", "data.height", "128", "data.width", "64", "dcac.sd.vae_image_size", "64",
    "dcac.clip_weights", "", "dcac.sd.weights", "", "dcac.sd.lora_rank", "4", "train.max_epoch", "1",
    "train.lr", "3e-4",
]


def test_paper_protocol_config_runs_with_tiny_overrides(synthetic_tiny_root, tmp_path):
    """The issue's command: the paper's MA->MS config + generated data + tiny overrides, on CPU."""
    out = tmp_path / "paper_ma2ms"
    rec = main(["--config-file", str(ROOT / "configs/dcac_ma2ms.yaml"), "data.root", str(synthetic_tiny_root),
                "data.save_dir", str(out), *TINY, *PAPER_TINY_OVERRIDES])
    assert rec["protocol"]["key"] == "MA->MS" and rec["model"] == "dcac_tiny"
    cfg = (out / "config.yaml").read_text()
    assert "tau: 0.6" in cfg and "test_interpolation: bilinear" in cfg


def test_paper_config_without_weights_names_the_missing_file(synthetic_tiny_root, tmp_path):
    from dcac_plugin.models.weights import WeightLoadError

    with pytest.raises(WeightLoadError, match=r"ViT-B-16\.pt.*never downloaded"):
        main(["--config-file", str(ROOT / "configs/dcac_ma2ms.yaml"), "data.root", str(synthetic_tiny_root),
              "data.save_dir", str(tmp_path / "x"), *TINY, "model.name", "clip_reid_tiny", "data.height", "128",
              "data.width", "64"])


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs/baselines").glob("*.yaml")))
def test_every_torchreid_baseline_recipe_trains_and_evaluates(config, synthetic_tiny_root, tmp_path):
    """Each baseline config (torchreid's softmax / softmax+triplet recipes) runs end to end, small.

    The configs name torchreid's ImageNet weight files, which this machine does not have: random init.
    """
    rec = main(["--config-file", str(ROOT / "configs/baselines" / config), "model.pretrained", "False",
                "data.root", str(synthetic_tiny_root),
                "data.save_dir", str(tmp_path / "run"), "data.sources", "market1501", "data.targets", "msmt17",
                "data.height", "64", "data.width", "32", "data.workers", "0", "train.batch_size", "8",
                "test.batch_size", "64", "train.max_epoch", "1"])
    assert rec["loss"] == ("softmax+triplet" if config.endswith("_triplet.yaml") else "softmax")
    assert rec["init"] == "random" and rec["model"] == config.rsplit("_", 1)[0]
    assert 0.0 <= rec["results"]["msmt17"]["mAP"] <= 100.0


def test_test_time_reranking_option(synthetic_tiny_root, tmp_path):
    base = ["--config-file", str(ROOT / "configs/demo/osnet.yaml"), "--eval-only", "data.root",
            str(synthetic_tiny_root), *TINY, "data.targets", "market1501"]
    plain = main([*base, "data.save_dir", str(tmp_path / "plain")])
    rr = main([*base, "data.save_dir", str(tmp_path / "rr"), "test.rerank", "True", "test.rerank_k1", "4",
               "test.rerank_k2", "2"])
    assert "rerank: true" in (tmp_path / "rr" / "config.yaml").read_text()
    assert rr["results"]["market1501"] != plain["results"]["market1501"]  # re-ranking changed the ranking
    assert set(rr["results"]["market1501"]) == {"mAP", "rank1", "rank5", "rank10", "mINP"}


def test_eval_only_of_dcac_weights_needs_no_clip_or_sd_file_and_keeps_the_dcac_name(tiny_dcac_run,
                                                                                     synthetic_tiny_root, tmp_path):
    """Evaluating saved DCAC weights builds the encoder alone: missing CLIP/SD files are never opened."""
    from dcac_plugin.runner import file_sha256

    out = tiny_dcac_run
    rec = returned_record(out)
    weights = out / "checkpoint_ep1.pth"
    missing = ["dcac.clip_weights", str(tmp_path / "no" / "ViT-B-16.pt"),
               "dcac.sd.weights", str(tmp_path / "no" / "v1-5-pruned.ckpt")]
    # The same missing files stop a training run that needs them ...
    with pytest.raises(WeightLoadError, match="not found"):
        run("configs/demo/dcac_tiny.yaml", synthetic_tiny_root, tmp_path / "train", "train.max_epoch", "1", *missing)
    # ... but not the evaluation of weights that hold the encoder.
    again = main(["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), "--eval-only",
                  "data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path / "eval"), *TINY,
                  *missing, "model.load_weights", str(weights)])
    assert again["model"] == "dcac_tiny" and again["method"] == "DCAC (tiny)"
    assert again["init"] == "weights:checkpoint_ep1.pth"
    assert again["checkpoint"] == {"file": str(weights), "sha256": file_sha256(weights)}
    for k, v in rec["results"]["msmt17"].items():
        assert again["results"]["msmt17"][k] == pytest.approx(v, abs=1e-6)
    # The same weights in the layout of the authors' release files (docs/METHOD.md §11.3): the whole
    # model's state dict under 'state_dict' with the 'module.' prefix of their DataParallel, the
    # encoder as encoder.image_encoder.* / encoder.bnneck.* / encoder.fc.weight, the diffusion branch
    # under denoiser.*, which evaluation ignores. Still no CLIP or SD file.
    ours = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    encoder = {k: v for k, v in ours.items() if k.startswith("encoder.")}
    assert {k.split(".")[1] for k in encoder} == {"image_encoder", "bnneck", "fc"}
    official = {f"module.{k}": v for k, v in encoder.items()}
    official.update({"module.denoiser.model.prompt_emb.prompt_emb": torch.randn(10, 768),
                     "module.denoiser.unet.conv_in.weight": torch.randn(320, 4, 3, 3),
                     "module.denoiser.betas": torch.linspace(1e-4, 2e-2, 1000)})
    torch.save({"state_dict": official, "epoch": 60}, tmp_path / "source_ma.pth")
    released = main(["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), "--eval-only",
                     "data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path / "eval_official"), *TINY,
                     *missing, "model.load_weights", str(tmp_path / "source_ma.pth")])
    assert released["init"] == "weights:source_ma.pth" and released["status"] == "ok"
    for k, v in rec["results"]["msmt17"].items():
        assert released["results"]["msmt17"][k] == pytest.approx(v, abs=1e-6)


def test_results_record_traces_the_run(synthetic_tiny_root, tmp_path):
    from dcac_plugin.runner import RESULTS_SCHEMA_VERSION, file_sha256

    out = tmp_path / "clip"
    rec = run("configs/demo/clip_tiny.yaml", synthetic_tiny_root, out, "train.max_epoch", "1", "train.seed", "7")
    assert rec["schema_version"] == RESULTS_SCHEMA_VERSION == 2
    assert rec["seed"] == 7
    assert rec["argv"][:4] == ["python", "tools/train.py", "--config-file", str(ROOT / "configs/demo/clip_tiny.yaml")]
    assert rec["argv"][-2:] == ["train.seed", "7"]
    assert rec["command"].startswith("python tools/train.py --config-file ")
    assert rec["checkpoint"] == {"file": "checkpoint_ep1.pth", "sha256": file_sha256(out / "checkpoint_ep1.pth")}
    assert rec["status"] == "ok"


def test_eval_only_on_a_run_folder_merges_new_targets(tiny_clip_run, synthetic_tiny_root, tmp_path):
    """More targets for a finished run: no retraining, nothing already in results.json is lost."""
    out = Path(shutil.copytree(tiny_clip_run, tmp_path / "clip"))  # clip_tiny.yaml, 1 epoch, targets msmt17
    first = returned_record(tiny_clip_run)
    config_before = (out / "config.yaml").read_text()
    merged = main(["--config-file", str(ROOT / "configs/demo/clip_tiny.yaml"), "--eval-only",
                   "data.root", str(synthetic_tiny_root), "data.save_dir", str(out), *TINY,
                   "data.targets", "dukemtmcreid,msmt17"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(merged))
    assert set(merged["results"]) == {"msmt17", "dukemtmcreid"}
    assert merged["protocol"]["targets"] == ["msmt17", "dukemtmcreid"]
    assert merged["protocol"]["key"] == "MA->MS+D"
    # the re-evaluated target gives the same numbers from the same checkpoint; training provenance stays
    for k, v in first["results"]["msmt17"].items():
        assert merged["results"]["msmt17"][k] == pytest.approx(v, abs=1e-6)
    assert merged["epochs"] == 1 and merged["wall_time_s"] == first["wall_time_s"]
    assert merged["command"] == first["command"] and merged["checkpoint"] == first["checkpoint"]
    assert [e["targets"] for e in merged["evaluations"]] == [["dukemtmcreid", "msmt17"]]
    assert "--eval-only" in merged["evaluations"][0]["command"]
    assert (out / "config.yaml").read_text() == config_before
    assert merged["status"] == "ok"


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python tools/train.py ARGS`` in a fresh process (this checkout's package first on the path)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "tools/train.py"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_cli_errors_exit_2_with_one_line_and_no_traceback(synthetic_tiny_root, tmp_path):
    """The console entry point: bad input gives exit status 2 and the message once on stderr, both for
    a config error (before the run starts) and for one raised inside the run (after logging is set up)."""
    base = ["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), *TINY]
    bad_key = _cli(*base, "data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path / "a"),
                   "dcac.nope", "1")
    no_data = _cli(*base, "data.root", str(tmp_path / "empty"), "data.save_dir", str(tmp_path / "b"),
                   "data.sources", "dukemtmcreid")
    for proc, needle in ((bad_key, "dcac.nope"), (no_data, "dataset 'dukemtmcreid'")):
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.splitlines()
        assert [ln for ln in lines if needle in ln] == [next(ln for ln in lines if ln.startswith("error: "))]
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert bad_key.stderr.startswith("error: unknown config key 'dcac.nope'")
    # the run's log keeps the full record of the runtime error (with its traceback)
    log = (tmp_path / "b" / "train.log").read_text()
    assert "run failed: DatasetLayoutError" in log and "Traceback" in log


def test_msmt17_errors_name_the_dataset_the_user_typed(tmp_path):
    """With train+val (the default) the source is read by the plugin's msmt17_trainval class; the
    message names 'msmt17', what the config says."""
    for include_val in ("True", "False"):
        with pytest.raises(DatasetLayoutError) as ei:
            main(["--config-file", str(ROOT / "configs/demo/clip_tiny.yaml"), "data.root", str(tmp_path / "none"),
                  "data.save_dir", str(tmp_path / "out"), *TINY, "data.sources", "msmt17",
                  "data.msmt17_include_val", include_val])
        msg = str(ei.value)
        assert msg.startswith("dataset 'msmt17'") and "msmt17_trainval" not in msg, msg


@pytest.mark.parametrize("opts", [["train.fixbase_epoch", "2"], ["train.open_layers", "fc"],
                                  ["train.fixbase_epoch", "1", "train.open_layers", "encoder,fc"]])
def test_fixbase_keys_are_refused_for_plugin_models(opts, tmp_path):
    with pytest.raises(ConfigError) as ei:
        main(["--config-file", str(ROOT / "configs/demo/dcac_tiny.yaml"), "data.root", str(tmp_path / "none"),
              "data.save_dir", str(tmp_path / "out"), *TINY, *opts])
    msg = str(ei.value)
    assert opts[0] in msg and "dcac_tiny" in msg and "all layers" in msg
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_fixbase_keys_still_reach_torchreid_models(synthetic_tiny_root, tmp_path, capsys):
    rec = run("configs/demo/osnet.yaml", synthetic_tiny_root, tmp_path / "osnet", "train.max_epoch", "1",
              "train.fixbase_epoch", "1", "train.open_layers", "classifier", "data.height", "64", "data.width", "32")
    assert rec["status"] == "ok"
    assert "* Only train ['classifier'] (epoch: 1/1)" in capsys.readouterr().out  # torchreid's own print


def test_status_is_ok_only_when_every_target_has_finite_metrics():
    from dcac_plugin.runner import _status

    good = {"mAP": 12.5, "rank1": 20.0, "rank5": 40.0, "rank10": 60.0, "mINP": 3.0}
    assert _status({"msmt17": good, "market1501": good}, ["msmt17", "market1501"]) == "ok"
    assert _status({"msmt17": good}, ["msmt17", "market1501"]) == "incomplete"  # a target is missing
    assert _status({"msmt17": good, "market1501": {}}, ["msmt17", "market1501"]) == "incomplete"
    for bad in (float("nan"), float("inf"), None, "12.5"):
        assert _status({"msmt17": {**good, "mINP": bad}}, ["msmt17"]) == "incomplete", bad


def test_merging_an_evaluation_recomputes_the_status():
    from dcac_plugin.runner import _merge_evaluation

    good = {"mAP": 12.5, "rank1": 20.0, "rank5": 40.0, "rank10": 60.0, "mINP": 3.0}
    nan = {**good, "mAP": float("nan")}
    prov = {"command": "c", "checkpoint": None, "git_commit": "x", "device": "cpu", "wall_time_s": 1.0,
            "created": "t"}
    previous = {"results": {"msmt17": nan}, "protocol": {"key": "MA->MS", "targets": ["msmt17"]},
                "status": "incomplete", **prov}
    fixed = _merge_evaluation(previous, {"results": {"msmt17": good}, "status": "ok",
                                         "protocol": {"key": "MA->MS", "targets": ["msmt17"]}, **prov})
    assert fixed["status"] == "ok" and fixed["evaluations"][0]["replaced"]["msmt17"]["mAP"] != 12.5
    broken = _merge_evaluation({**previous, "results": {"msmt17": good}, "status": "ok"},
                               {"results": {"dukemtmcreid": nan}, "status": "incomplete",
                                "protocol": {"key": "MA->D", "targets": ["dukemtmcreid"]}, **prov})
    assert broken["status"] == "incomplete" and broken["protocol"]["targets"] == ["msmt17", "dukemtmcreid"]


def test_a_target_without_finite_metrics_makes_the_run_incomplete_and_the_cli_exit_1(
        synthetic_tiny_root, tmp_path, monkeypatch, capsys):
    from dcac_plugin.cli.train import cli
    from dcac_plugin.engine.base import PluginEngineMixin

    real = PluginEngineMixin.evaluate

    def one_target_nan(self):
        results = real(self)
        results["market1501"]["mAP"] = float("nan")
        return results

    monkeypatch.setattr(PluginEngineMixin, "evaluate", one_target_nan)
    out = tmp_path / "osnet"
    monkeypatch.setattr("sys.argv", ["tools/train.py", "--config-file", str(ROOT / "configs/demo/osnet.yaml"),
                                     "--eval-only", "data.root", str(synthetic_tiny_root), "data.save_dir", str(out),
                                     *TINY, "data.targets", "msmt17,market1501"])
    with pytest.raises(SystemExit) as ei:
        cli()
    assert ei.value.code == 1
    err = capsys.readouterr().err
    assert "error: run status 'incomplete': a target has no finite metrics" in err
    rec = json.loads((out / "results.json").read_text())
    assert rec["status"] == "incomplete" and rec["results"]["msmt17"]["mAP"] >= 0
