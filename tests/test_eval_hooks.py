"""Evaluation hooks: the engine calls them with each target's evaluation; visrank_topk= still draws."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dcac_plugin.evaluation import evaluate_features
from dcac_plugin.evaluation.hooks import EvalHook, TargetEvaluation, build_named_hook, run_hooks
from dcac_plugin.inference.visrank import VisrankHook

ROOT = Path(__file__).resolve().parents[1]


def _evaluation(tmp_path: Path, **eval_kwargs) -> TargetEvaluation:
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(6, 4, generator=g), torch.randn(15, 4, generator=g)
    q_pids, g_pids = np.arange(6) % 3, np.arange(15) % 3
    q_cams, g_cams = np.zeros(6, dtype=np.int64), np.ones(15, dtype=np.int64)
    m = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, **eval_kwargs)
    row = {k: float(m[k]) for k in ("mAP", "rank1", "rank5", "rank10", "mINP")}
    return TargetEvaluation("t", 3, qf, gf, q_pids, g_pids, q_cams, g_cams, row, eval_kwargs,
                            [(f"q{i}.jpg", int(p), 0) for i, p in enumerate(q_pids)],
                            [(f"g{i}.jpg", int(p), 1) for i, p in enumerate(g_pids)], tmp_path)


@pytest.mark.parametrize("kw", [{}, {"metric": "cosine", "normalize": True},
                                {"rerank": True, "k1": 4, "k2": 2, "lambda_value": 0.3}])
def test_distance_blocks_are_the_evaluators(tmp_path, kw):
    ev = _evaluation(tmp_path, **kw)
    blocks = list(ev.distance_blocks(chunk_size=4))
    assert [(a, b) for a, b, _ in blocks] == [(0, 4), (4, 6)]
    dist = torch.cat([d for _, _, d in blocks])
    assert dist.shape == (6, 15)
    from dcac_plugin.inference.search import distance_blocks

    ref = torch.cat([d for _, _, d in distance_blocks(ev.qf, ev.gf, **ev.distance_kwargs(), chunk_size=4)])
    assert torch.equal(dist, ref)


def test_distance_kwargs_fill_rerank_defaults(tmp_path):
    ev = _evaluation(tmp_path, rerank=True)
    assert ev.distance_kwargs() == dict(metric="euclidean", normalize=False, rerank=True, k1=20, k2=6,
                                        lambda_value=0.3)
    assert _evaluation(tmp_path).distance_kwargs() == dict(metric="euclidean", normalize=False, rerank=False)


def test_run_hooks_in_order_and_protocol(tmp_path):
    seen = []

    def first(ev: TargetEvaluation) -> None:
        seen.append(("first", ev.target, ev.qf.shape, ev.gf.shape, len(ev.q_pids), len(ev.gallery)))

    def second(ev: TargetEvaluation) -> None:
        seen.append(("second", ev.metrics["mAP"]))

    ev = _evaluation(tmp_path)
    run_hooks([first, second], ev)
    assert seen[0] == ("first", "t", (6, 4), (15, 4), 6, 15) and seen[1] == ("second", ev.metrics["mAP"])
    assert isinstance(first, EvalHook) and isinstance(VisrankHook(3), EvalHook)
    assert build_named_hook("visrank", topk=3) == VisrankHook(3)
    with pytest.raises(KeyError, match="visrank"):
        build_named_hook("nope")


def _engine(synthetic_tiny_root, tmp_path, **setup_kw):
    from dcac_plugin.config import get_default_config, merge_config
    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.build import build_engine, eval_kwargs

    cfg = merge_config(get_default_config(), str(ROOT / "configs/demo/clip_tiny.yaml"),
                       ["data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path), "data.workers", "0",
                        "data.targets", "market1501", "test.batch_size", "64"])
    dm = build_datamanager(cfg, use_gpu=False, plugin_views=True, vae_view=False)
    engine = build_engine(cfg, dm, torch.device("cpu"), is_plugin=True)
    engine.setup(device=torch.device("cpu"), save_dir=str(tmp_path), eval_kwargs=eval_kwargs(cfg), **setup_kw)
    return engine, dm


def test_engine_calls_hooks_with_the_targets_evaluation(synthetic_tiny_root, tmp_path):
    seen: list[TargetEvaluation] = []
    engine, dm = _engine(synthetic_tiny_root, tmp_path, eval_hooks=[seen.append])
    results = engine.evaluate()
    assert len(seen) == 1
    ev = seen[0]
    query, gallery = dm.test_dataset["market1501"]["query"], dm.test_dataset["market1501"]["gallery"]
    assert ev.target == "market1501" and ev.metrics == results["market1501"] and ev.save_dir == tmp_path
    assert ev.qf.shape[0] == len(ev.q_pids) == len(ev.q_camids) == len(query)
    assert ev.gf.shape[0] == len(ev.g_pids) == len(ev.g_camids) == len(gallery)
    assert ev.qf.shape[1] == ev.gf.shape[1] and ev.eval_kwargs == engine.eval_kwargs
    assert [it[1] for it in ev.query] == ev.q_pids.tolist()
    again = evaluate_features(ev.qf, ev.gf, ev.q_pids, ev.g_pids, ev.q_camids, ev.g_camids, **ev.eval_kwargs)
    assert again["mAP"] == pytest.approx(ev.metrics["mAP"])
    assert not (tmp_path / "visrank").exists()


def test_visrank_topk_shim_builds_the_hook_and_writes_pictures(synthetic_tiny_root, tmp_path):
    engine, dm = _engine(synthetic_tiny_root, tmp_path, visrank_topk=3)
    assert engine.eval_hooks == [VisrankHook(3)]
    engine.evaluate()
    d = tmp_path / "visrank" / "market1501"
    assert len(list(d.glob("*.png"))) == len(dm.test_dataset["market1501"]["query"])
    assert "ranked lists: market1501" in (d / "index.html").read_text()


def test_engine_base_does_not_import_inference():
    import ast

    tree = ast.parse((ROOT / "dcac_plugin/engine/base.py").read_text())
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [n for n in names if n and n.startswith("dcac_plugin.inference")]
