"""FeatureExtractor and the extract/search CLIs on generated data: features equal the evaluation's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

import dcac_plugin
import dcac_plugin.evaluation as evaluation
from dcac_plugin.cli import extract as extract_cli
from dcac_plugin.cli import search as search_cli
from dcac_plugin.cli.train import main as train_main
from dcac_plugin.data.manager import test_split as split_of
from dcac_plugin.data.reader import CorruptImageError
from dcac_plugin.evaluation import compute_distance_chunk, re_ranking_features
from dcac_plugin.inference import FeatureExtractor, list_images, load_features, run_weights
from dcac_plugin.models.weights import WeightLoadError


@pytest.fixture(scope="module")
def dcac_run(tiny_dcac_run):
    """dcac_tiny.yaml, 1 epoch, data.targets msmt17,market1501 (shared: read only)."""
    return tiny_dcac_run


@pytest.fixture(scope="module")
def osnet_run(tiny_osnet_run):
    """osnet.yaml, 1 epoch (shared: read only)."""
    return tiny_osnet_run


def _evaluation_features(run: Path, data_root: Path, save_dir: Path, monkeypatch) -> dict:
    """Re-evaluate the run (eval-only) and capture the features the evaluator receives."""
    seen = {}
    real = evaluation.evaluate_features

    def spy(qf, gf, q_pids, g_pids, q_camids, g_camids, **kw):
        seen[len(seen)] = (qf.clone(), gf.clone(), kw)
        return real(qf, gf, q_pids, g_pids, q_camids, g_camids, **kw)

    monkeypatch.setattr(evaluation, "evaluate_features", spy)
    train_main(["--config-file", str(run / "config.yaml"), "--eval-only", "data.save_dir", str(save_dir),
                "data.root", str(data_root), "data.workers", "0", "model.load_weights", str(run_weights(run))])
    return seen


@pytest.mark.parametrize("which", ["dcac", "osnet"])
def test_extractor_gives_exactly_the_evaluation_features(which, dcac_run, osnet_run, synthetic_tiny_root,
                                                         tmp_path, monkeypatch):
    run = dcac_run if which == "dcac" else osnet_run
    seen = _evaluation_features(run, synthetic_tiny_root, tmp_path / "re_eval", monkeypatch)
    qf, gf, kw = seen[0]  # first target: msmt17
    assert kw["normalize"] is True and kw["metric"] == "euclidean"
    fx = FeatureExtractor.from_run(run, opts=["data.root", str(synthetic_tiny_root)], device="cpu", batch_size=7)
    query, gallery = split_of(fx.cfg, "msmt17")
    got_q = fx([it[0] for it in query])
    got_g = fx([it[0] for it in gallery])
    assert got_q.dtype == torch.float32 and got_q.shape == qf.shape
    assert torch.allclose(got_q, F.normalize(qf, dim=1), atol=1e-6, rtol=0)
    assert torch.allclose(got_g, F.normalize(gf, dim=1), atol=1e-6, rtol=0)
    assert torch.allclose(got_q.norm(dim=1), torch.ones(len(query)), atol=1e-6)
    if which == "dcac":
        assert fx.model.diffusion is None and fx.interpolation == "bicubic" and fx.feature_dim == 32
    else:
        assert fx.interpolation == "bilinear" and fx.pixel_mean == [0.485, 0.456, 0.406]


def test_every_input_form_gives_the_same_feature(dcac_run, synthetic_tiny_root):
    fx = dcac_plugin.FeatureExtractor.from_run(dcac_run, device="cpu")
    paths = list_images(synthetic_tiny_root / "market1501" / "Market-1501-v15.09.15" / "query")[:3]
    ref = fx(paths)
    pils = [Image.open(p).convert("RGB") for p in paths]
    assert torch.equal(fx(pils), ref)
    assert torch.equal(fx([np.asarray(p) for p in pils]), ref)
    assert torch.equal(fx(np.stack([np.asarray(p) for p in pils])), ref)
    tensors = [TF.to_tensor(p) for p in pils]  # raw RGB in [0, 1], original size
    assert torch.equal(fx(tensors), ref)
    assert torch.equal(fx(torch.stack(tensors)), ref)
    assert torch.equal(fx(paths[1]), ref[1:2])
    with pytest.raises(ValueError, match="CHW"):
        fx(torch.zeros(5, 5, 3))
    with pytest.raises(ValueError, match="uint8"):
        fx(np.zeros((8, 4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="unsupported input"):
        fx([3])


def test_config_plus_weights_and_official_layout_match_the_run(dcac_run, tmp_path):
    fx_run = FeatureExtractor.from_run(dcac_run, device="cpu")
    ckpt = run_weights(dcac_run)
    assert ckpt.name == "checkpoint_ep1.pth"
    x = torch.rand(2, 3, 70, 30)
    ref = fx_run(x)
    fx_cfg = FeatureExtractor.from_config(dcac_run / "config.yaml", ckpt, device="cpu")
    assert torch.equal(fx_cfg(x), ref)
    # an official DCAC release file: {'state_dict': {'module.encoder.*', 'module.denoiser.*'}}
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    official = {f"module.{k}": v for k, v in state.items() if k.startswith("encoder.")}
    official["module.denoiser.unet.conv_in.weight"] = torch.zeros(4, 4, 3, 3)
    torch.save({"state_dict": official}, tmp_path / "source_ma.pth")
    fx_off = FeatureExtractor.from_config(dcac_run / "config.yaml", tmp_path / "source_ma.pth", device="cpu")
    assert torch.equal(fx_off(x), ref)
    torch.save({"model": {"something.else": torch.zeros(3)}}, tmp_path / "wrong.pth")
    with pytest.raises(WeightLoadError, match="checkpoint of another model: nothing in it matches"):
        FeatureExtractor.from_config(dcac_run / "config.yaml", tmp_path / "wrong.pth", device="cpu")


def test_extractor_options_and_device(dcac_run):
    with pytest.raises(ValueError, match="amp"):
        FeatureExtractor.from_run(dcac_run, device="cpu", amp="fp8")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        FeatureExtractor.from_run(dcac_run, device="cpu", amp="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            FeatureExtractor.from_run(dcac_run, device="cuda")
        assert FeatureExtractor.from_run(dcac_run).device.type == "cpu"
    fx = FeatureExtractor.from_run(dcac_run, device="cpu", amp="bf16")
    x = torch.rand(3, 3, 128, 64)
    fp32 = FeatureExtractor.from_run(dcac_run, device="cpu")
    ref, again = fp32(x), fp32(x)
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in fx.model.modules() if isinstance(m, torch.nn.Linear)]
    got = fx(x)
    for h in hooks:
        h.remove()
    # bf16 really ran (every linear layer computed in bf16) and is close to fp32 without being it:
    # max gap measured 0.0041; fp32 twice is bit-identical
    assert len(seen) >= 2 and set(seen) == {torch.bfloat16}, set(seen)
    assert torch.equal(ref, again)
    gap = (got - ref).abs().max().item()
    assert got.dtype == torch.float32 and 1e-4 < gap < 0.1, gap


def test_run_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        FeatureExtractor.from_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        FeatureExtractor.from_run(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="no weights"):
        run_weights(tmp_path / "r")


def _image_dir(root: Path, tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    src = list_images(root / "market1501" / "Market-1501-v15.09.15" / "query")[:4]
    for i, p in enumerate(src):
        (d / ("sub" if i % 2 else "") / Path(p).name).write_bytes(Path(p).read_bytes())
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_extract_cli_writes_features_paths_and_metadata(suffix, dcac_run, synthetic_tiny_root, tmp_path, capsys):
    d = _image_dir(synthetic_tiny_root, tmp_path)
    out = tmp_path / f"f{suffix}"
    res = extract_cli.main(["--run-dir", str(dcac_run), "--images", str(d), "--output", str(out), "--device", "cpu",
                            "--batch-size", "3"])
    assert res["num_images"] == 4 and "wrote 4 features of dimension 32" in capsys.readouterr().out
    feats, paths, meta, skipped = load_features(out)
    assert feats.shape == (4, 32) and feats.dtype == np.float32 and skipped == []
    assert paths == list_images(d) and all(Path(p).suffix == ".jpg" for p in paths)
    fx = FeatureExtractor.from_run(dcac_run, device="cpu")
    np.testing.assert_allclose(feats, fx(paths).numpy(), atol=1e-6)
    assert meta["model"] == "dcac_tiny" and meta["l2_normalized"] is True and meta["input_size"] == [128, 64]
    assert meta["interpolation"] == "bicubic" and meta["feature_dim"] == 32 and meta["dist_metric"] == "euclidean"
    assert "name: dcac_tiny" in meta["config"] and meta["weights"] == str(run_weights(dcac_run).resolve())
    # a list file, relative to its folder
    (d / "list.txt").write_text("# two images\n" + "\n".join(str(Path(p).relative_to(d)) for p in paths[:2]) + "\n")
    extract_cli.main(["--run-dir", str(dcac_run), "--images", str(d / "list.txt"), "--output", str(out)])
    assert load_features(out)[1] == paths[:2]


def test_extract_cli_corrupt_image_stops_or_is_skipped(dcac_run, synthetic_tiny_root, tmp_path):
    d = _image_dir(synthetic_tiny_root, tmp_path)
    bad = d / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "f.npz"
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        extract_cli.main(["--run-dir", str(dcac_run), "--images", str(d), "--output", str(out)])
    assert not out.exists()
    res = extract_cli.main(["--run-dir", str(dcac_run), "--images", str(d), "--output", str(out), "--skip-bad"])
    feats, paths, _, skipped = load_features(out)
    assert res["skipped"] == [str(bad)] and len(paths) == 4 and feats.shape[0] == 4
    assert len(skipped) == 1 and skipped[0].startswith(str(bad)) and "cannot decode" in skipped[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        extract_cli.main(["--run-dir", str(dcac_run), "--images", str(tmp_path / "empty"), "--output", str(out)])
    with pytest.raises(FileNotFoundError, match="no such folder or list file"):
        extract_cli.main(["--run-dir", str(dcac_run), "--images", str(tmp_path / "nope"), "--output", str(out)])
    with pytest.raises(ValueError, match=".npz or .safetensors"):
        extract_cli.main(["--run-dir", str(dcac_run), "--images", str(d), "--output", str(tmp_path / "f.csv")])


def test_extract_cli_main_errors_exit_2(dcac_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["extract.py", "--config-file", str(dcac_run / "config.yaml"), "--images",
                                     str(tmp_path), "--output", str(tmp_path / "x.npz")])
    with pytest.raises(SystemExit) as e:
        extract_cli.cli()
    assert e.value.code == 2
    assert "error: say which model" in capsys.readouterr().err


def test_search_cli_ranks_with_the_evaluator_distance(dcac_run, synthetic_tiny_root, tmp_path, capsys):
    market = synthetic_tiny_root / "market1501" / "Market-1501-v15.09.15"
    qdir, gdir = market / "query", market / "bounding_box_test"
    out = tmp_path / "m.json"
    res = search_cli.main(["--run-dir", str(dcac_run), "--query", str(qdir), "--gallery", str(gdir), "--topk", "5",
                           "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    fx = FeatureExtractor.from_run(dcac_run, device="cpu")
    qp, gp = list_images(qdir), list_images(gdir)
    qf, gf = fx(qp), fx(gp)
    d = compute_distance_chunk(qf, gf, "euclidean")
    order = torch.sort(d, dim=1, stable=True).indices[:, :5]
    assert res["num_query"] == len(qp) and res["rerank"] is False
    for i, q in enumerate(res["queries"]):
        assert q["query"] == qp[i]
        assert [m["gallery"] for m in q["matches"]] == [gp[j] for j in order[i]]
        assert [m["distance"] for m in q["matches"]] == pytest.approx(d[i, order[i]].tolist(), abs=1e-6)
    # re-ranking with the run's k1/k2/lambda, from feature files written by extract
    extract_cli.main(["--run-dir", str(dcac_run), "--images", str(qdir), "--output", str(tmp_path / "q.npz")])
    rr = search_cli.main(["--run-dir", str(dcac_run), "--query", str(tmp_path / "q.npz"), "--gallery", str(gdir),
                          "--topk", "3", "--rerank"])
    cfg = fx.cfg.test
    full = re_ranking_features(qf, gf, cfg.rerank_k1, cfg.rerank_k2, cfg.rerank_lambda)
    want = np.argsort(full, axis=1, kind="stable")[:, :3]
    assert rr["rerank"] == {"k1": cfg.rerank_k1, "k2": cfg.rerank_k2, "lambda_value": cfg.rerank_lambda}
    for i, q in enumerate(rr["queries"]):
        assert [m["gallery"] for m in q["matches"]] == [gp[j] for j in want[i]]
    table = capsys.readouterr().out
    assert "re-ranked distance" in table and Path(qp[0]).name in table
    # a query image also in the gallery finds itself first, at distance 0
    same = search_cli.main(["--run-dir", str(dcac_run), "--query", str(qdir), "--gallery", str(qdir), "--topk", "1"])
    for q in same["queries"]:
        assert q["matches"][0]["gallery"] == q["query"] and abs(q["matches"][0]["distance"]) < 1e-5


def test_search_refuses_features_of_another_model(dcac_run, osnet_run, synthetic_tiny_root, tmp_path):
    qdir = synthetic_tiny_root / "market1501" / "Market-1501-v15.09.15" / "query"
    extract_cli.main(["--run-dir", str(osnet_run), "--images", str(qdir), "--output", str(tmp_path / "o.npz")])
    with pytest.raises(ValueError, match="osnet_x0_25"):
        search_cli.main(["--run-dir", str(dcac_run), "--query", str(tmp_path / "o.npz"), "--gallery", str(qdir)])
