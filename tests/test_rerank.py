"""k-reciprocal re-ranking: agreement with torchreid's dense implementation, sparse paths."""

import numpy as np
import pytest
import torch
from components import require_import

from dcac_plugin._torchreid import tr
from dcac_plugin.evaluation import (
    SparseReranker,
    evaluate_features,
    evaluate_rank,
    re_ranking,
    re_ranking_features,
)
from dcac_plugin.evaluation import kernels as kernels_mod
from dcac_plugin.evaluation import rerank as rerank_mod


@pytest.fixture(params=["numba", "torch"])
def backend(request, monkeypatch):
    """Run with the numba kernels (the CPU default when numba imports) or the torch/scipy fallback."""
    if request.param == "numba":
        require_import("numba")
        assert kernels_mod.numba_kernel(rerank_mod._block_topk_py) is not None
    else:
        monkeypatch.setattr(kernels_mod, "_USE_NUMBA", False)
    return request.param


def _clustered(seed, nq=30, ng=120, nid=15, dim=16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(nid, dim))
    qp, gp = rng.integers(0, nid, nq), rng.integers(0, nid, ng)
    qf = torch.tensor(centers[qp] + rng.normal(size=(nq, dim)), dtype=torch.float32)
    gf = torch.tensor(centers[gp] + rng.normal(size=(ng, dim)), dtype=torch.float32)
    return qf, gf, qp, gp, rng.integers(0, 4, nq), rng.integers(0, 4, ng)


def _tr_dists(qf, gf, metric="euclidean"):
    cd = tr.metrics.compute_distance_matrix
    return cd(qf, gf, metric).numpy(), cd(qf, qf, metric).numpy(), cd(gf, gf, metric).numpy()


@pytest.mark.parametrize("seed,k1,k2,lam", [(0, 20, 6, 0.3), (1, 5, 1, 0.5), (2, 7, 3, 0.0), (3, 20, 6, 1.0)])
def test_re_ranking_matches_torchreid(seed, k1, k2, lam, backend):
    qf, gf, *_ = _clustered(seed)
    qg, qq, gg = _tr_dists(qf, gf)
    ref = tr.utils.re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    out = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    # float64 and tensor inputs are accepted like torchreid's numpy path
    qq64, gg64 = qq.astype(np.float64), gg.astype(np.float64)
    out64 = re_ranking(torch.from_numpy(qg).double(), qq64, gg64, k1, k2, lam)
    np.testing.assert_allclose(out64, tr.utils.re_ranking(qg.astype(np.float64), qq.astype(np.float64),
                                                          gg.astype(np.float64), k1, k2, lam), atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_re_ranking_features_matches_torchreid_engine_path(metric, backend):
    qf, gf, *_ = _clustered(4)
    ref = tr.utils.re_ranking(*_tr_dists(qf, gf, metric), 20, 6, 0.3)
    for chunk in (None, 17):
        out = re_ranking_features(qf, gf, 20, 6, 0.3, metric=metric, chunk_size=chunk)
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_recomputed_qg_block_equals_stored_one(backend):
    qf, gf, *_ = _clustered(5)
    a = SparseReranker.from_features(qf, gf, chunk_size=40).full()
    b = SparseReranker.from_features(qf, gf, chunk_size=40, keep_qg_bytes=0).full(chunk_size=7)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_sparse_state_is_small():
    qf, gf, *_ = _clustered(6, nq=60, ng=400)
    rr = SparseReranker.from_features(qf, gf, k1=20, k2=6)
    n = 460
    assert 0 < rr.nnz < n * n / 4  # torchreid holds several dense n x n matrices


def test_evaluate_features_rerank_equals_dense_path(backend):
    qf, gf, qp, gp, qc, gc = _clustered(8)
    dense = re_ranking_features(qf, gf, 20, 6, 0.3)
    cmc, mAP, mINP = evaluate_rank(dense, qp, gp, qc, gc)
    ref_cmc, ref_map = tr.metrics.evaluate_rank(tr.utils.re_ranking(*_tr_dists(qf, gf), 20, 6, 0.3),
                                                qp, gp, qc, gc, use_cython=False)
    assert mAP == pytest.approx(ref_map, abs=1e-4)
    out = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=True, chunk_size=9)
    assert out["mAP"] == pytest.approx(100 * mAP, abs=1e-4)
    assert out["mINP"] == pytest.approx(100 * mINP, abs=1e-4)
    np.testing.assert_allclose(out["cmc"], 100 * cmc, atol=1e-4)
    # re-ranking changes the ranking on these features
    assert out["mAP"] != pytest.approx(evaluate_features(qf, gf, qp, gp, qc, gc)["mAP"], abs=1e-3)


def test_bad_parameters_raise():
    qf, gf, *_ = _clustered(0, nq=4, ng=10)
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        re_ranking_features(qf, gf, k1=0)
    with pytest.raises(ValueError, match="lambda_value must be in"):
        re_ranking_features(qf, gf, lambda_value=2.0)
    with pytest.raises(ValueError, match="re-ranking shapes disagree"):
        re_ranking(np.ones((4, 10)), np.ones((4, 4)), np.ones((9, 9)))
    with pytest.raises(ValueError, match="same feature dim"):
        re_ranking_features(qf, gf[:, :3])


def test_numba_and_torch_rerank_agree(monkeypatch):
    require_import("numba")
    qf, gf, *_ = _clustered(11, nq=40, ng=160)
    a = re_ranking_features(qf, gf, 20, 6, 0.3, chunk_size=50)
    rr = SparseReranker.from_features(qf, gf, chunk_size=50)
    with monkeypatch.context() as m:
        m.setattr(kernels_mod, "_USE_NUMBA", False)
        b = re_ranking_features(qf, gf, 20, 6, 0.3, chunk_size=50)
        rr_t = SparseReranker.from_features(qf, gf, chunk_size=50)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert rr.nnz == rr_t.nnz  # identical k-reciprocal sets and k2 expansion support
    np.testing.assert_array_equal(rr._vq.indices, rr_t._vq.indices)
