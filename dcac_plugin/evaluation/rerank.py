"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on sparse neighbour sets.

Same result as torchreid's ``utils.re_ranking`` (which follows the authors' code) but with memory
that grows with ``N * k`` (``N = Q + G``) instead of several dense ``N x N`` matrices:

* ``original_dist`` of torchreid is ``O[i, j] = D[j, i]^2 / max_a D[a, i]^2`` over the joint
  query+gallery set (``D`` = the input distances, squared once more). Only its top-``k`` entries per
  row, its column maxima and the few entries inside the k-reciprocal sets are needed; they are
  computed block by block (from features: symmetric blocks, each GEMM used for both triangles).
* k-reciprocal sets, the ``round(k1/2)`` expansion with the 2/3 overlap rule, the Gaussian weights
  ``exp(-O)`` normalised per row, the ``k2`` local query expansion (a sparse ``S @ V / k2``) and the
  Jaccard distance through an inverted index (sum of ``min`` over shared support) are all exact on
  sparse structures; only float summation order differs from torchreid (~1e-7).
* The final distance ``jaccard * (1 - lambda) + O * lambda`` is produced for a block of query rows at
  a time (:meth:`SparseReranker.final_block`), so evaluation at MSMT17 size never holds ``Q x G``.

Exact ties in ``O`` are broken by ``torch.topk`` (torch path) or by lower index (numba path) rather
than ``np.argsort``; with float distances this only matters for duplicated features.

On CPU with ``numba`` importable (see :func:`dcac_plugin.evaluation.kernels.numba_kernel`), compiled
kernels replace the hot spots: the streaming top-k / column maxima of each distance block and its
transpose (no ``topk``/transpose copies), the k-reciprocal expansion, the exact ``O`` entries of the
expanded sets (pairwise dot products) and the Jaccard + final mix per query row. The torch/scipy code
is the fallback (CUDA, or numba missing / ``ranking._USE_NUMBA = False``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from dcac_plugin.evaluation import kernels as _kernels
from dcac_plugin.evaluation.kernels import compute_distance_chunk
from dcac_plugin.protocols import DCAC_RERANK, TORCHREID_RERANK, RerankParams  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

__all__ = ["SparseReranker", "re_ranking", "re_ranking_features"]

_TRIPLET_CAP = 1 << 23  # jaccard (query, feature, gallery) triplets expanded at once
_PAIR_CHUNK = 1 << 16  # (row, neighbour) pairs gathered at once for exact O entries
_ROW_CHUNK = 4096


# --------------------------------------------------------------------------------------------
# numba kernels (compiled lazily by kernels.numba_kernel; the torch/scipy code is the fallback)
# --------------------------------------------------------------------------------------------

prange = range  # replaced by numba.prange right before compilation


def _block_topk_py(d, a0, b0, both, best_v, best_i, rowmax):  # pragma: no cover - compiled
    """Square block ``d`` ``[ra, cb]`` (rows ``a0+r``, cols ``b0+c``) in place and merge it into the
    running per-row top-k (``best_v``/``best_i`` ``[N, k]``) and row maxima; with ``both`` also
    merge its transpose (column ``b0+c`` receives rows ``a0+r``). Insertion keeps ties in arrival
    order, and entries arrive in increasing index order, so this is a stable top-k."""
    ra, cb = d.shape
    k = best_v.shape[1]
    for r in prange(ra):
        row = a0 + r
        bv = best_v[row]
        bi = best_i[row]
        thr = bv[k - 1]
        m = rowmax[row]
        for c in range(cb):
            v = d[r, c]
            v = v * v
            d[r, c] = v
            if v > m:
                m = v
            if v < thr:
                p = k - 1
                while p > 0 and bv[p - 1] > v:
                    bv[p] = bv[p - 1]
                    bi[p] = bi[p - 1]
                    p -= 1
                bv[p] = v
                bi[p] = b0 + c
                thr = bv[k - 1]
        rowmax[row] = m
    if both:
        width = 64
        nstripe = (cb + width - 1) // width
        for s in prange(nstripe):
            c0 = s * width
            c1 = min(cb, c0 + width)
            for r in range(ra):
                for c in range(c0, c1):
                    v = d[r, c]
                    col = b0 + c
                    if v > rowmax[col]:
                        rowmax[col] = v
                    if v < best_v[col, k - 1]:
                        p = k - 1
                        while p > 0 and best_v[col, p - 1] > v:
                            best_v[col, p] = best_v[col, p - 1]
                            best_i[col, p] = best_i[col, p - 1]
                            p -= 1
                        best_v[col, p] = v
                        best_i[col, p] = a0 + r


def _expand_py(top, kf, kh, ent, cnt):  # pragma: no cover - compiled
    """k-reciprocal sets with the round(k1/2) expansion (2/3 overlap rule), sorted and unique.

    ``top`` ``[N, K]`` neighbour ranks; writes row ``i``'s set into ``ent[i, :cnt[i]]``.
    """
    n = top.shape[0]
    for i in prange(n):
        w = 0
        rset = np.empty(kf, np.int64)
        nr = 0
        for a in range(kf):
            j = top[i, a]
            for b in range(kf):
                if top[j, b] == i:
                    rset[nr] = j
                    nr += 1
                    break
        for a in range(nr):
            ent[i, w] = rset[a]
            w += 1
        hset = np.empty(kh, np.int64)
        for a in range(nr):
            c = rset[a]
            nh = 0
            for b in range(kh):
                h = top[c, b]
                for e in range(kh):
                    if top[h, e] == c:
                        hset[nh] = h
                        nh += 1
                        break
            inter = 0
            for b in range(nh):
                for e in range(nr):
                    if rset[e] == hset[b]:
                        inter += 1
                        break
            if 3 * inter > 2 * nh:
                for b in range(nh):
                    ent[i, w] = hset[b]
                    w += 1
        srt = np.sort(ent[i, :w])
        u = 0
        for a in range(w):
            if a == 0 or srt[a] != srt[a - 1]:
                ent[i, u] = srt[a]
                u += 1
        cnt[i] = u


def _pair_sqdist_py(x, sq, rows, cols, rowmax, dot_metric, out):  # pragma: no cover - compiled
    """``out[p] = d(rows[p], cols[p])^2 / rowmax[rows[p]]`` from features ``x`` ``[N, D]``."""
    dim = x.shape[1]
    for p in prange(rows.shape[0]):
        i = rows[p]
        j = cols[p]
        acc = np.float32(0.0)
        for t in range(dim):
            acc += x[i, t] * x[j, t]
        if dot_metric:
            dd = np.float32(1.0) - acc
        else:
            dd = sq[i] + sq[j] - np.float32(2.0) * acc
        out[p] = dd * dd / rowmax[i]


def _temp_min_py(q_ptr, q_idx, q_val, g_ptr, g_idx, g_val, out):  # pragma: no cover - compiled
    """``out[i, g] = sum_f min(Vq[i, f], V[g, f])`` through the inverted index (CSR inputs)."""
    for i in prange(out.shape[0]):
        for a in range(q_ptr[i], q_ptr[i + 1]):
            f = q_idx[a]
            v = q_val[a]
            for b in range(g_ptr[f], g_ptr[f + 1]):
                gv = g_val[b]
                out[i, g_idx[b]] += v if v < gv else gv


def _final_rows_py(q_ptr, q_idx, q_val, g_ptr, g_idx, g_val, o, lam):  # pragma: no cover - compiled
    """In place: ``o[i, g] <- jaccard(i, g) * (1 - lam) + o[i, g] * lam`` with the Jaccard term from
    ``sum_f min(Vq[i, f], V[g, f])`` (float64 row accumulator) through the inverted index."""
    ng = o.shape[1]
    for i in prange(o.shape[0]):
        tm = np.zeros(ng, np.float64)
        for a in range(q_ptr[i], q_ptr[i + 1]):
            f = q_idx[a]
            v = q_val[a]
            for b in range(g_ptr[f], g_ptr[f + 1]):
                gv = g_val[b]
                tm[g_idx[b]] += v if v < gv else gv
        for g in range(ng):
            t = np.float32(tm[g])
            jac = np.float32(1.0) - t / (np.float32(2.0) - t)
            o[i, g] = jac * np.float32(1.0 - lam) + o[i, g] * np.float32(lam)


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if int(k1) != k1 or k1 < 1:
        raise ValueError(f"k1 must be a positive integer, got {k1!r}")
    if int(k2) != k2 or k2 < 1:
        raise ValueError(f"k2 must be a positive integer, got {k2!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")


def _merge_topk(best_v: torch.Tensor, best_i: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    cv = torch.cat([best_v, v], 1)
    ci = torch.cat([best_i, i], 1)
    nv, pos = torch.topk(cv, k, dim=1, largest=False, sorted=True)
    return nv, ci.gather(1, pos)


def _reciprocal(top: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, k]`` bool: is row ``i`` among the first ``k`` neighbours of its j-th neighbour."""
    n = top.shape[0]
    fwd = top[:, :k]
    out = torch.empty(n, k, dtype=torch.bool)
    step = max(1, (1 << 22) // (k * k))
    for a in range(0, n, step):
        b = min(n, a + step)
        back = fwd[fwd[a:b]]  # [c, k, k]
        out[a:b] = (back == torch.arange(a, b)[:, None, None]).any(-1)
    return out


# ---------------------------------------------------------------------------------------------
# the steps of SparseReranker.from_features
# ---------------------------------------------------------------------------------------------

BlockDistance = Callable[[int, int, int, int], torch.Tensor]


def _joint_points(qf: torch.Tensor, gf: torch.Tensor, metric: str, dev: torch.device) -> tuple[torch.Tensor, bool]:
    """Query then gallery features as one float32 ``[N, D]`` matrix on ``dev``, and whether the base
    distance is ``1 - dot`` (cosine: the rows are L2-normalised here) rather than squared euclidean."""
    x = torch.cat([qf, gf], 0).to(dev, torch.float32)
    if metric == "cosine":
        return F.normalize(x, p=2, dim=1), True
    if metric == "euclidean":
        return x, False
    raise ValueError(f"unknown distance metric {metric!r}; use 'euclidean' or 'cosine'")


def _block_distance(x: torch.Tensor, sq: torch.Tensor, dot: bool) -> BlockDistance:
    """``dist(a0, a1, b0, b1)``: the base distances of rows ``a0:a1`` to rows ``b0:b1`` of ``x``."""

    def dist(a0: int, a1: int, b0: int, b1: int) -> torch.Tensor:
        if dot:
            return 1 - x[a0:a1] @ x[b0:b1].t()
        return compute_distance_chunk(x[a0:a1], x[b0:b1], "euclidean", sq[b0:b1])

    return dist


@torch.no_grad()
def _neighbour_pass(dist: BlockDistance, n: int, num_q: int, k: int, bs: int, dev: torch.device,
                    qg: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the upper-triangular blocks of the squared joint distances: every row's ``k``
    nearest rows (``[N, k]``, nearest first) and its maximum squared distance (``[N]``); the
    query-gallery block is kept in ``qg`` (squared, not yet divided) when given."""
    starts = list(range(0, n, bs))
    best_v = torch.full((n, k), float("inf"), device=dev)
    best_i = torch.zeros((n, k), dtype=torch.long, device=dev)
    rowmax = torch.zeros(n, device=dev)
    topk_kernel = _kernels.numba_kernel(_block_topk_py) if dev.type == "cpu" else None
    for bi, a0 in enumerate(starts):
        a1 = min(n, a0 + bs)
        for b0 in starts[bi:]:
            b1 = min(n, b0 + bs)
            d = dist(a0, a1, b0, b1)
            if topk_kernel is not None:
                # squares d in place and merges the block (and its transpose) into the top-k
                topk_kernel(d.numpy(), a0, b0, b0 != a0, best_v.numpy(), best_i.numpy(), rowmax.numpy())
            else:
                d = _merge_block_torch(d, a0, a1, b0, b1, k, best_v, best_i, rowmax)
            if qg is not None and a0 < num_q and b1 > num_q:
                r1, c0 = min(a1, num_q), max(b0, num_q)
                qg[a0:r1, c0 - num_q:b1 - num_q] = d[: r1 - a0, c0 - b0:]
    return best_i, rowmax


def _merge_block_torch(d: torch.Tensor, a0: int, a1: int, b0: int, b1: int, k: int, best_v: torch.Tensor,
                       best_i: torch.Tensor, rowmax: torch.Tensor) -> torch.Tensor:
    """The torch path of :func:`_neighbour_pass` for one block: merge the squared block (and, off the
    diagonal, its transpose) into the running top-k and row maxima; returns the squared block."""
    d2 = d * d
    kk = min(k, b1 - b0)
    v, i = torch.topk(d2, kk, dim=1, largest=False, sorted=True)
    best_v[a0:a1], best_i[a0:a1] = _merge_topk(best_v[a0:a1], best_i[a0:a1], v, i + b0, k)
    rowmax[a0:a1] = torch.maximum(rowmax[a0:a1], d2.max(1).values)
    if b0 != a0:
        kk = min(k, a1 - a0)
        d2t = d2.t().contiguous()
        v, i = torch.topk(d2t, kk, dim=1, largest=False, sorted=True)
        best_v[b0:b1], best_i[b0:b1] = _merge_topk(best_v[b0:b1], best_i[b0:b1], v, i + a0, k)
        rowmax[b0:b1] = torch.maximum(rowmax[b0:b1], d2t.max(1).values)
    return d2


def _exact_pairs(x: torch.Tensor, sq: torch.Tensor, rowmax: torch.Tensor,
                 dot: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``pair_fn(rows, cols)``: exact ``O[rows[p], cols[p]]`` (squared distance over the row maximum)
    for flat int64 index vectors ``[P]`` -> ``[P]``, computed on CPU."""
    rm_cpu = rowmax.cpu()
    x_cpu = x.cpu()
    sq_cpu = sq.cpu()
    pair_kernel = _kernels.numba_kernel(_pair_sqdist_py)

    def pair_fn(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        out = torch.empty(rows.numel(), dtype=torch.float32)
        if pair_kernel is not None:
            pair_kernel(x_cpu.numpy(), sq_cpu.numpy(), rows.contiguous().numpy(),
                        cols.contiguous().numpy(), rm_cpu.numpy(), dot, out.numpy())
            return out
        for s0 in range(0, rows.numel(), _PAIR_CHUNK):
            r, c = rows[s0:s0 + _PAIR_CHUNK], cols[s0:s0 + _PAIR_CHUNK]
            dt = (x_cpu[r] * x_cpu[c]).sum(1)
            dd = 1 - dt if dot else sq_cpu[r] + sq_cpu[c] - 2 * dt
            out[s0:s0 + _PAIR_CHUNK] = dd * dd / rm_cpu[r]
        return out

    return pair_fn


def _qg_rows(qg: torch.Tensor | None, dist: BlockDistance, rowmax: torch.Tensor, num_q: int,
             n: int) -> Callable[[int, int], torch.Tensor]:
    """``qg_fn(a, b)``: rows ``a:b`` of the query-gallery block of ``O``, from the kept ``qg`` or
    recomputed."""

    def qg_fn(a: int, b: int) -> torch.Tensor:
        if qg is not None:
            return qg[a:b] / rowmax[a:b, None]
        d = dist(a, b, num_q, n)
        return d * d / rowmax[a:b, None]

    return qg_fn


class SparseReranker:
    """Prepared sparse re-ranking state; produces final re-ranked distances by query block.

    Build with :meth:`from_features` or :meth:`from_distances`.
    """

    def __init__(self, num_q: int, num_g: int, top_idx: torch.Tensor, pair_fn: Callable,
                 qg_fn: Callable[[int, int], torch.Tensor], k1: int, k2: int, lambda_value: float,
                 device: torch.device) -> None:
        self.num_q, self.num_g = num_q, num_g
        self.lambda_value = float(lambda_value)
        self.device = device
        self._qg_fn = qg_fn
        n = num_q + num_g
        top = top_idx.cpu().long()
        kf = min(k1 + 1, top.shape[1])
        kh = min(int(np.around(k1 / 2.0)) + 1, top.shape[1])
        expand = _kernels.numba_kernel(_expand_py)
        if expand is not None:
            ent = np.empty((n, kf + kf * kh), dtype=np.int64)
            cnt = np.empty(n, dtype=np.int64)
            expand(top.numpy(), kf, kh, ent, cnt)
            w = max(int(cnt.max()), 1)
            keep = np.arange(w)[None, :] < cnt[:, None]
            rows = torch.from_numpy(np.nonzero(keep)[0])
            cols = torch.from_numpy(ent[:, :w][keep])
            o = pair_fn(rows, cols)
        else:
            rows, cols, o = self._expand_torch(top, kf, kh, pair_fn)
        w = torch.exp(-o.float())
        wsum = torch.zeros(n, dtype=torch.float32).index_add_(0, rows, w)
        vals = (w / wsum[rows]).numpy()
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows.numpy(), minlength=n), out=indptr[1:])
        v = sp.csr_matrix((vals, cols.numpy(), indptr), shape=(n, n))
        if k2 != 1:
            kk = min(k2, top.shape[1])
            s = sp.csr_matrix((np.ones(n * kk, dtype=np.float32), top[:, :kk].reshape(-1).numpy(),
                               np.arange(0, n * kk + 1, kk)), shape=(n, n))
            v = (s @ v).tocsr()
            v.data = (v.data / np.float32(k2)).astype(np.float32)  # np.mean over k2 rows
        self.nnz = int(v.nnz)
        self._vq = v[:num_q].tocsr()
        self._gt = v[num_q:].T.tocsr()  # [N features, G]: inverted index over gallery rows
        logger.debug("re-ranking sparse V: %d non-zeros (%.1f per row)", self.nnz, self.nnz / max(n, 1))

    @staticmethod
    def _expand_torch(top: torch.Tensor, kf: int, kh: int,
                      pair_fn: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pure-torch expanded k-reciprocal sets: flat ``(rows, cols, O[rows, cols])``."""
        n = top.shape[0]
        recip = _reciprocal(top, kf)
        recip_h = _reciprocal(top, kh)
        fwd, fwdh = top[:, :kf], top[:, :kh]
        rows_l, cols_l, o_l = [], [], []
        step = max(1, (1 << 22) // (kf * kh * kf))
        for a in range(0, n, step):
            b = min(n, a + step)
            rset = torch.where(recip[a:b], fwd[a:b], torch.full_like(fwd[a:b], -1))
            cand = fwd[a:b]
            h = fwdh[cand]  # [c, kf, kh]
            hv = recip_h[cand]
            inter = ((h[..., None] == rset[:, None, None, :]).any(-1) & hv).sum(-1)
            accept = recip[a:b] & (3 * inter > 2 * hv.sum(-1))  # |R_h(c) & R(i)| > 2/3 |R_h(c)|
            ent = torch.cat([torch.where(recip[a:b], fwd[a:b], n),
                             torch.where(hv & accept[..., None], h, n).flatten(1)], 1)
            ent = torch.sort(ent, 1).values
            dup = torch.zeros_like(ent, dtype=torch.bool)
            dup[:, 1:] = ent[:, 1:] == ent[:, :-1]
            ent = torch.sort(torch.where((ent < n) & ~dup, ent, n), 1).values  # valid entries first
            cnt = (ent < n).sum(1)
            ent = ent[:, : max(int(cnt.max().item()), 1)]
            keep = ent < n
            o = torch.empty(ent.shape, dtype=torch.float32)
            sub = max(1, _PAIR_CHUNK // ent.shape[1])
            for s0 in range(0, b - a, sub):
                s1 = min(b - a, s0 + sub)
                pr = torch.arange(a + s0, a + s1)[:, None].expand(s1 - s0, ent.shape[1]).reshape(-1)
                o[s0:s1] = pair_fn(pr, ent[s0:s1].clamp(max=n - 1).reshape(-1)).view(s1 - s0, -1)
            r, c = torch.nonzero(keep, as_tuple=True)
            rows_l.append(r + a)
            cols_l.append(ent[r, c])
            o_l.append(o[r, c])
        return torch.cat(rows_l), torch.cat(cols_l), torch.cat(o_l)

    # ---------------------------------------------------------------------------------------
    def _temp_min(self, a: int, b: int) -> np.ndarray:
        """``sum_f min(V[i, f], V[j, f])`` for query rows ``a:b`` and all gallery ``j``: ``[b-a, G]``."""
        ng = self.num_g
        vq = self._vq[a:b]
        gt = self._gt
        kernel = _kernels.numba_kernel(_temp_min_py)
        if kernel is not None:
            res = np.zeros((b - a, ng), dtype=np.float64)
            kernel(vq.indptr, vq.indices, vq.data, gt.indptr, gt.indices, gt.data, res)
            return res
        out = np.zeros((b - a) * ng, dtype=np.float64)
        qrows = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(vq.indptr))
        feats = vq.indices.astype(np.int64)
        lens = (gt.indptr[feats + 1] - gt.indptr[feats]).astype(np.int64)
        csum = np.cumsum(lens)
        s = 0
        while s < feats.size:  # split the expansion so at most ~_TRIPLET_CAP triplets exist at once
            base = csum[s - 1] if s else 0
            e = int(np.searchsorted(csum, base + _TRIPLET_CAP, side="right"))
            e = max(e, s + 1)
            ln = lens[s:e]
            tot = int(ln.sum())
            if tot:
                rep = np.repeat(np.arange(s, e), ln)
                within = np.arange(tot) - np.repeat(np.cumsum(ln) - ln, ln)
                gi = gt.indptr[feats[rep]] + within
                m = np.minimum(vq.data[rep], gt.data[gi])
                out += np.bincount(qrows[rep] * ng + gt.indices[gi], weights=m, minlength=out.size)
            s = e
        return out.reshape(b - a, ng)

    def final_block(self, a: int, b: int) -> torch.Tensor:
        """Re-ranked distances ``[b-a, G]`` (float32, on ``device``) for query rows ``a:b``."""
        kernel = _kernels.numba_kernel(_final_rows_py) if self.device.type == "cpu" else None
        if kernel is not None:
            o = self._qg_fn(a, b).contiguous()
            vq, gt = self._vq[a:b], self._gt
            kernel(vq.indptr, vq.indices, vq.data, gt.indptr, gt.indices, gt.data, o.numpy(),
                   self.lambda_value)
            return o  # overwritten in place with the final distance
        tm = torch.from_numpy(self._temp_min(a, b).astype(np.float32)).to(self.device)
        jac = 1 - tm / (2.0 - tm)
        lam = self.lambda_value
        return jac * (1 - lam) + self._qg_fn(a, b) * lam

    def full(self, chunk_size: int | None = None) -> np.ndarray:
        """The whole ``[Q, G]`` re-ranked distance matrix (float32 numpy)."""
        out = np.empty((self.num_q, self.num_g), dtype=np.float32)
        step = chunk_size or max(1, (1 << 23) // max(self.num_g, 1))
        for a in range(0, self.num_q, step):
            b = min(self.num_q, a + step)
            out[a:b] = self.final_block(a, b).cpu().numpy()
        return out

    # ---------------------------------------------------------------------------------------
    @classmethod
    def from_features(cls, qf: torch.Tensor, gf: torch.Tensor, k1: int = TORCHREID_RERANK.k1,
                      k2: int = TORCHREID_RERANK.k2, lambda_value: float = TORCHREID_RERANK.lambda_value,
                      metric: str = "euclidean", chunk_size: int | None = None, device: Any = None,
                      keep_qg_bytes: int = 1 << 29) -> SparseReranker:
        """Prepare from features ``qf`` ``[Q, D]``, ``gf`` ``[G, D]``.

        The base distance is torchreid's ``compute_distance_matrix(metric)`` (squared euclidean or
        ``1 - cos``), which re-ranking squares again, exactly like torchreid's engine with
        ``rerank=True``. The ``Q x G`` block of ``O`` is kept from the first pass when it needs at
        most ``keep_qg_bytes``; otherwise it is recomputed per query block.
        """
        _check_params(k1, k2, lambda_value)
        dev = torch.device(device) if device is not None else qf.device
        x, dot = _joint_points(qf, gf, metric, dev)
        num_q, num_g = qf.shape[0], gf.shape[0]
        n = num_q + num_g
        sq = x.pow(2).sum(1)
        dist = _block_distance(x, sq, dot)
        qg = torch.empty((num_q, num_g), device=dev) if num_q * num_g * 4 <= keep_qg_bytes else None
        best_i, rowmax = _neighbour_pass(dist, n, num_q, min(max(k1 + 1, k2), n), chunk_size or _ROW_CHUNK, dev,
                                         qg)
        # torchreid divides by the column maximum of the (symmetric) squared distance matrix
        rowmax = torch.where(rowmax > 0, rowmax, torch.ones_like(rowmax))
        return cls(num_q, num_g, best_i, _exact_pairs(x, sq, rowmax, dot), _qg_rows(qg, dist, rowmax, num_q, n),
                   k1, k2, lambda_value, dev)

    @classmethod
    def from_distances(cls, q_g_dist: Any, q_q_dist: Any, g_g_dist: Any, k1: int = TORCHREID_RERANK.k1,
                       k2: int = TORCHREID_RERANK.k2, lambda_value: float = TORCHREID_RERANK.lambda_value,
                       chunk_size: int | None = None) -> SparseReranker:
        """Prepare from torchreid-style distances (numpy or tensors): ``[Q,G]``, ``[Q,Q]``, ``[G,G]``."""
        _check_params(k1, k2, lambda_value)
        qg, qq, gg = (np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t)
                      for t in (q_g_dist, q_q_dist, g_g_dist))
        num_q, num_g = qg.shape
        if qq.shape != (num_q, num_q) or gg.shape != (num_g, num_g):
            raise ValueError(f"re-ranking shapes disagree: q_g {qg.shape}, q_q {qq.shape}, g_g {gg.shape}; "
                             "expected [Q,G], [Q,Q], [G,G]")
        n = num_q + num_g
        k = min(max(k1 + 1, k2), n)

        def sq(a: np.ndarray) -> np.ndarray:
            return np.power(a, 2).astype(np.float32)  # torchreid: power in input dtype, then float32

        def d2_cols(c0: int, c1: int) -> np.ndarray:
            """Columns ``c0:c1`` of torchreid's squared joint matrix, ``[N, c1-c0]`` float32."""
            parts = []
            if c0 < num_q:
                e = min(c1, num_q)
                parts.append((c0, np.concatenate([sq(qq[:, c0:e]), sq(qg[c0:e, :]).T], 0)))
            if c1 > num_q:
                s = max(c0, num_q) - num_q
                parts.append((s, np.concatenate([sq(qg[:, s:c1 - num_q]), sq(gg[:, s:c1 - num_q])], 0)))
            return np.concatenate([p for _, p in parts], 1)

        bs = chunk_size or max(1, (1 << 24) // max(n, 1))
        cmax = np.empty(n, dtype=np.float32)
        best_i = torch.empty((n, k), dtype=torch.long)
        for c0 in range(0, n, bs):
            c1 = min(n, c0 + bs)
            blk = d2_cols(c0, c1)
            cmax[c0:c1] = blk.max(0)
            o = torch.from_numpy(np.ascontiguousarray((blk / cmax[c0:c1][None, :]).T))
            best_i[c0:c1] = torch.topk(o, k, dim=1, largest=False, sorted=True).indices
        cmax_t = torch.from_numpy(cmax)

        def pair_fn(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            i, j = rows.numpy(), cols.numpy()
            val = np.empty(i.shape, dtype=np.float32)
            iq, jq = i < num_q, j < num_q
            for mask, mat, r, c in ((jq & iq, qq, j, i), (jq & ~iq, qg, j, i - num_q),
                                    (~jq & iq, qg, i, j - num_q), (~jq & ~iq, gg, j - num_q, i - num_q)):
                if mask.any():
                    val[mask] = sq(mat[r[mask], c[mask]])
            return torch.from_numpy(val) / cmax_t[rows]

        def qg_fn(a: int, b: int) -> torch.Tensor:
            return torch.from_numpy(sq(qg[a:b])) / cmax_t[a:b, None]

        return cls(num_q, num_g, best_i, pair_fn, qg_fn, k1, k2, lambda_value, torch.device("cpu"))


def re_ranking(q_g_dist: Any, q_q_dist: Any, g_g_dist: Any, k1: int = TORCHREID_RERANK.k1,
               k2: int = TORCHREID_RERANK.k2, lambda_value: float = TORCHREID_RERANK.lambda_value) -> np.ndarray:
    """Drop-in for torchreid's ``utils.re_ranking``: re-ranked ``[Q, G]`` float32 distances.

    Args:
        q_g_dist: ``[Q, G]`` query-gallery distances. q_q_dist: ``[Q, Q]``. g_g_dist: ``[G, G]``.
        k1, k2, lambda_value: re-ranking parameters (default :data:`TORCHREID_RERANK`: 20, 6, 0.3).
    """
    return SparseReranker.from_distances(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value).full()


def re_ranking_features(qf: Any, gf: Any, k1: int = TORCHREID_RERANK.k1, k2: int = TORCHREID_RERANK.k2,
                        lambda_value: float = TORCHREID_RERANK.lambda_value, metric: str = "euclidean",
                        normalize: bool = False, chunk_size: int | None = None,
                        device: Any = None) -> np.ndarray:
    """Memory-lean re-ranking from features; equals ``re_ranking`` on torchreid's distance matrices.

    Args:
        qf: ``[Q, D]`` query features. gf: ``[G, D]`` gallery features.
        k1, k2, lambda_value: re-ranking parameters.
        metric: base distance, ``'euclidean'`` (squared) or ``'cosine'`` as torchreid computes it.
        normalize: L2-normalise the features first.
        chunk_size: rows per distance block (default 2048).
        device: torch device for the distance pass (default: ``qf``'s device / CPU).

    Returns:
        ``[Q, G]`` float32 numpy array. For MSMT17-size sets use
        ``evaluate_features(..., rerank=True)`` instead, which never holds ``Q x G``.
    """
    q = qf if isinstance(qf, torch.Tensor) else torch.from_numpy(np.asarray(qf))
    g = gf if isinstance(gf, torch.Tensor) else torch.from_numpy(np.asarray(gf))
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"qf {tuple(q.shape)} and gf {tuple(g.shape)} must be 2-D with the same feature dim")
    q, g = q.float(), g.float()
    if normalize:
        q, g = F.normalize(q, p=2, dim=1), F.normalize(g, p=2, dim=1)
    rr = SparseReranker.from_features(q, g, k1, k2, lambda_value, metric, chunk_size, device)
    return rr.full()
