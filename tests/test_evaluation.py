"""Ranking metrics: hand-checked cases, ties, CUHK03, agreement with torchreid's evaluator."""

import numpy as np
import pytest
import torch
from components import require_import

from dcac_plugin._torchreid import tr
from dcac_plugin.evaluation import NoValidQueryError, evaluate_features, evaluate_rank
from dcac_plugin.evaluation import kernels as kernels_mod
from dcac_plugin.evaluation import ranking as ranking_mod


@pytest.fixture(params=[-1.0, 2.0, 0.5, None], ids=["full-row", "mid-only", "mixed", "numba"])
def path(request, monkeypatch):
    """Force each ranking path: the torch float32 bucketings (full/mid/mixed) or the numba kernel."""
    if request.param is None:
        require_import("numba")
        assert kernels_mod.numba_kernel(ranking_mod._positions_py) is not None
    else:
        monkeypatch.setattr(kernels_mod, "_USE_NUMBA", False)
        monkeypatch.setattr(ranking_mod, "_MID_FRACTION", request.param)
    return request.param


def _both_backends(fn, monkeypatch):
    """Run ``fn()`` with the numba kernel (the CPU default) and with the pure-torch path."""
    require_import("numba")
    assert kernels_mod._USE_NUMBA and kernels_mod.numba_kernel(ranking_mod._positions_py) is not None
    a = fn()
    with monkeypatch.context() as m:
        m.setattr(kernels_mod, "_USE_NUMBA", False)
        assert kernels_mod.numba_kernel(ranking_mod._positions_py) is None
        b = fn()
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_numba_and_torch_paths_are_bitwise_identical(seed, dtype, monkeypatch):
    rng = np.random.default_rng(seed)
    nq, ng = 60, 700
    ties = rng.integers(0, 30, size=(nq, ng)).astype(dtype)  # many negative/positive ties
    smooth = rng.normal(size=(nq, ng)).astype(dtype)
    qp, gp = rng.integers(0, 40, nq), rng.integers(0, 40, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    for d in (ties, smooth, np.abs(smooth) * (rng.random((nq, ng)) < 0.5)):  # also +0.0 / -0.0 mixes
        for chunk in (None, 7):
            (c1, m1, i1), (c2, m2, i2) = _both_backends(
                lambda d=d, chunk=chunk: evaluate_rank(d, qp, gp, qc, gc, max_rank=20, chunk_size=chunk),
                monkeypatch)
            np.testing.assert_array_equal(c1, c2)
            assert (m1, i1) == (m2, i2)
    qf, gf, qp, gp, qc, gc = _clustered(seed, nq=80, ng=500)
    a, b = _both_backends(lambda: evaluate_features(qf, gf, qp, gp, qc, gc, chunk_size=16), monkeypatch)
    assert a == b


def test_nan_raises_on_both_paths_even_in_rows_without_a_match(monkeypatch):
    g_pids, g_cams = np.array([1, 2, 3]), np.array([1, 1, 1])
    for row in (0, 1):  # query 0 is valid, query 1 (pid 9) has no match and is skipped by the kernel
        d = np.ones((2, 3), dtype=np.float32)
        d[row, 2] = np.nan
        for use in (True, False):
            monkeypatch.setattr(kernels_mod, "_USE_NUMBA", use)
            with pytest.raises(ValueError, match="distance matrix contains NaN"):
                evaluate_rank(d, [1, 9], g_pids, [0, 0], g_cams)


def _clustered(seed, nq=40, ng=200, nid=25, ncam=4, dim=16, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(nid, dim))
    qp, gp = rng.integers(0, nid, nq), rng.integers(0, nid, ng)
    qf = torch.tensor(centers[qp] + noise * rng.normal(size=(nq, dim)), dtype=torch.float32)
    gf = torch.tensor(centers[gp] + noise * rng.normal(size=(ng, dim)), dtype=torch.float32)
    return qf, gf, qp, gp, rng.integers(0, ncam, nq), rng.integers(0, ncam, ng)


def test_hand_computed_with_junk_distractors_and_skipped_query(path):
    # query 0: pid 1 cam 0. gallery (distance): junk pid1/cam0 (.1), pid2 (.2), pos (.3),
    # distractor pid0 (.4), pos (.5), pid -1 (.6), pid3 (.65). Kept: pid2, POS, pid0, POS, -1, 3.
    # query 1: pid 3 cam 1, its only gallery match (pid3 cam1) shares its camera -> skipped.
    g_pids = np.array([1, 2, 1, 0, 1, -1, 3])
    g_cams = np.array([0, 1, 1, 1, 2, 1, 1])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65],
                     [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.01]], dtype=np.float32)
    cmc, mAP, mINP = evaluate_rank(dist, np.array([1, 3]), g_pids, np.array([0, 1]), g_cams, max_rank=5)
    np.testing.assert_array_equal(cmc, np.array([0, 1, 1, 1, 1], dtype=np.float32))
    assert cmc.dtype == np.float32
    assert mAP == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-12)
    assert mINP == pytest.approx(2 / 4, abs=1e-12)
    tr_cmc, tr_map = tr.metrics.evaluate_rank(dist, np.array([1, 3]), g_pids, np.array([0, 1]), g_cams,
                                              max_rank=5, use_cython=False)
    np.testing.assert_array_equal(cmc, tr_cmc)
    assert mAP == pytest.approx(tr_map, abs=1e-12)


def test_ties_are_broken_stably_by_gallery_index(path):
    # negative (index 0) and positive (index 1) at the same distance: the lower index ranks first
    g_pids, g_cams = np.array([2, 1, 3]), np.array([1, 1, 1])
    for dt in (np.float32, np.float64):
        d = np.array([[0.5, 0.5, 0.7]], dtype=dt)
        cmc, mAP, mINP = evaluate_rank(d, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=3)
        np.testing.assert_array_equal(cmc, [0, 1, 1])
        assert (mAP, mINP) == (0.5, 0.5)
        # swap the gallery order: now the positive has the lower index and comes first
        cmc, mAP, _ = evaluate_rank(d, np.array([1]), g_pids[[1, 0, 2]], np.array([0]), g_cams, max_rank=3)
        np.testing.assert_array_equal(cmc, [1, 1, 1])
        assert mAP == 1.0


def test_heavy_ties_equal_a_stable_argsort_reference(path):
    # integer distances -> many ties; torchreid on (d + index * eps) sorts like a stable argsort
    rng = np.random.default_rng(3)
    nq, ng = 30, 120
    d = rng.integers(0, 6, size=(nq, ng)).astype(np.float64)
    qp, gp = rng.integers(0, 8, nq), rng.integers(0, 8, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    ref_cmc, ref_map = tr.metrics.evaluate_rank(d + np.arange(ng)[None, :] * 1e-6, qp, gp, qc, gc,
                                                max_rank=10, use_cython=False)
    for dt in (np.float32, np.float64):
        cmc, mAP, _ = evaluate_rank(d.astype(dt), qp, gp, qc, gc, max_rank=10, chunk_size=7)
        np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
        assert mAP == pytest.approx(ref_map, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchreid_on_random_cases(seed, path):
    qf, gf, qp, gp, qc, gc = _clustered(seed)
    qp[0] = 999  # a query whose identity is absent from the gallery
    dist = tr.metrics.compute_distance_matrix(qf, gf).numpy()
    tr_cmc, tr_map = tr.metrics.evaluate_rank(dist, qp, gp, qc, gc, max_rank=50, use_cython=False)
    for chunk in (1, 7, None):
        cmc, mAP, mINP = evaluate_rank(dist, qp, gp, qc, gc, max_rank=50, chunk_size=chunk)
        np.testing.assert_allclose(cmc, tr_cmc, atol=1e-6)
        assert abs(mAP - tr_map) < 1e-6
        assert 0 < mINP <= mAP
    cmc64, map64, _ = evaluate_rank(dist.astype(np.float64), qp, gp, qc, gc)
    np.testing.assert_allclose(cmc64, tr_cmc, atol=1e-6)
    assert abs(map64 - tr_map) < 1e-6


def test_minp_matches_definition():
    qf, gf, qp, gp, qc, gc = _clustered(5)
    dist = tr.metrics.compute_distance_matrix(qf, gf).numpy()
    inps = []
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        hits = np.nonzero(gp[order][keep] == qp[i])[0]
        if hits.size:
            inps.append(hits.size / (hits[-1] + 1))
    assert evaluate_rank(dist, qp, gp, qc, gc)[2] == pytest.approx(np.mean(inps), abs=1e-12)


def test_cuhk03_metric_matches_torchreid_and_consumes_same_rng(monkeypatch):
    monkeypatch.setattr(np, "bool", np.bool_, raising=False)  # torchreid's eval_cuhk03 uses np.bool
    qf, gf, qp, gp, qc, gc = _clustered(7, nq=30, ng=150, nid=15)
    dist = tr.metrics.compute_distance_matrix(qf, gf).numpy()
    np.random.seed(11)
    tr_cmc, tr_map = tr.metrics.evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, use_metric_cuhk03=True,
                                              use_cython=False)
    after_tr = np.random.rand()
    np.random.seed(11)
    cmc, mAP, _ = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, use_metric_cuhk03=True, chunk_size=4)
    assert np.random.rand() == after_tr
    np.testing.assert_allclose(cmc, tr_cmc, atol=1e-6)
    assert abs(mAP - tr_map) < 1e-9
    # the random draws matter: the single-shot CMC differs from the all-gallery one
    assert not np.allclose(cmc, evaluate_rank(dist, qp, gp, qc, gc, max_rank=10)[0])


def test_no_valid_query_raises_clear_error():
    with pytest.raises(NoValidQueryError, match="none of the 1 queries has a correct match"):
        evaluate_rank(np.ones((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))
    assert issubclass(NoValidQueryError, ValueError)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="g_pids has 3 entries"):
        evaluate_rank(np.ones((1, 2)), [1], [1, 2, 3], [0], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 1.0]]), [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="unknown distance metric 'l1'"):
        evaluate_features(torch.ones(1, 2), torch.ones(2, 2), [1], [1, 2], [0], [1, 1], metric="l1")
    with pytest.raises(ValueError, match="distmat must be 2-D"):
        evaluate_rank(np.ones(3), [1], [1, 2, 3], [0], [0, 1, 1])


@pytest.mark.parametrize("metric,normalize", [("euclidean", False), ("euclidean", True), ("cosine", False)])
def test_evaluate_features_equals_evaluate_rank_on_full_matrix(metric, normalize):
    qf, gf, qp, gp, qc, gc = _clustered(9, nq=50, ng=300)
    q, g = (torch.nn.functional.normalize(qf), torch.nn.functional.normalize(gf)) if normalize else (qf, gf)
    dist = tr.metrics.compute_distance_matrix(q, g, metric).numpy()
    cmc, mAP, mINP = evaluate_rank(dist, qp, gp, qc, gc)
    for chunk in (3, None):
        out = evaluate_features(qf, gf, qp, gp, qc, gc, metric=metric, normalize=normalize, chunk_size=chunk)
        assert set(out) == {"mAP", "rank1", "rank5", "rank10", "mINP", "cmc"}
        assert out["mAP"] == pytest.approx(100 * mAP, abs=1e-4)
        assert out["mINP"] == pytest.approx(100 * mINP, abs=1e-4)
        np.testing.assert_allclose(out["cmc"], 100 * cmc, atol=1e-4)
        assert (out["rank1"], out["rank5"], out["rank10"]) == (out["cmc"][0], out["cmc"][4], out["cmc"][9])
        assert len(out["cmc"]) == 50


def test_small_gallery_clips_max_rank():
    out = evaluate_features(torch.eye(3)[:1], torch.eye(3), [0], [0, 1, 2], [0], [1, 1, 1], max_rank=50)
    assert out["cmc"] == [100.0, 100.0, 100.0] and out["rank10"] == 100.0 and out["mAP"] == 100.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["query", "gallery"])
def test_non_finite_features_are_refused(bad, where):
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    (qf if where == "query" else gf)[1, 2] = bad
    for kw in ({}, {"normalize": False, "metric": "cosine"}, {"rerank": True, "k1": 2, "k2": 1}):
        with pytest.raises(ValueError, match="features contain NaN or inf"):
            evaluate_features(qf, gf, [0, 1, 2], [0, 1, 2, 0, 1], [0, 0, 0], [1, 1, 1, 1, 1], **kw)


def test_non_finite_model_output_stops_the_engine_evaluation(synthetic_tiny_root, tmp_path):
    """Through the engine: a model whose embedding is NaN (e.g. diverged weights) gives the clear error,
    not metrics computed on garbage."""
    from pathlib import Path

    from dcac_plugin.config import get_default_config, merge_config
    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.build import build_engine, eval_kwargs

    root = Path(__file__).resolve().parents[1]
    cfg = merge_config(get_default_config(), str(root / "configs/demo/clip_tiny.yaml"),
                       ["data.root", str(synthetic_tiny_root), "data.save_dir", str(tmp_path), "data.workers", "0",
                        "data.targets", "market1501", "test.batch_size", "64"])
    dm = build_datamanager(cfg, use_gpu=False, plugin_views=True, vae_view=False)
    engine = build_engine(cfg, dm, torch.device("cpu"), is_plugin=True)
    engine.setup(device=torch.device("cpu"), save_dir=str(tmp_path), eval_kwargs=eval_kwargs(cfg))
    assert set(engine.evaluate()) == {"market1501"}  # finite features: metrics
    with torch.no_grad():
        engine.model.encoder.bnneck.weight[3] = float("nan")
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        engine.evaluate()


def test_numba_kernels_leave_torchs_thread_count_alone(tmp_path):
    """numba's OpenMP layer used to reset torch to one thread per core at its first parallel call."""
    import os
    import subprocess
    import sys

    require_import("numba")
    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from dcac_plugin.evaluation import evaluate_features\n"
        "rng = np.random.default_rng(0)\n"
        "q, g = rng.normal(size=(40, 8)).astype('float32'), rng.normal(size=(300, 8)).astype('float32')\n"
        "evaluate_features(q, g, np.arange(40) % 10, np.arange(300) % 10, np.zeros(40), np.ones(300))\n"
        "evaluate_features(q, g, np.arange(40) % 10, np.arange(300) % 10, np.zeros(40), np.ones(300), rerank=True)\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    env["NUMBA_NUM_THREADS"] = "2"  # more than torch's: what an unset variable gives on a 2-core machine
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
