"""Fast, memory-bounded re-ID ranking metrics (CMC, mAP, mINP).

Drop-in for torchreid's ``metrics.evaluate_rank`` plus a feature-level evaluator that never
materialises the full query x gallery distance matrix.

How it works (per chunk of queries, torch, CPU or GPU):

* The positives of a query (same pid, other camera) and its "junk" (same pid, same camera,
  removed from the ranking exactly like torchreid) come from a per-pid index of the gallery,
  so no ``[Q, G]`` match matrix is built.
* The 0-based position of the k-th positive among the kept gallery items is
  ``#{negatives closer than it} + k``. The negatives count is a histogram of the gallery
  distances bucketed by the sorted positive distances (``searchsorted`` + ``bincount``), so
  no row is ever fully sorted. For float32 distances only the items between the closest and
  the farthest positive are bucketed (one int64 key per item: ``row << 32 | ordered bits``).
* CMC, AP and INP follow from the positive positions.
* On CPU with float32/float64 distances and ``numba`` importable, the histogram is built by a
  compiled per-row kernel (``prange`` over rows, vectorised count of the sorted positives below each
  item, same tie rule) instead of ``searchsorted``/``bincount``; it yields bit-identical CMC/AP/INP.
  The kernels are compiled on first use and cached on disk (``cache=True``; in memory when no cache
  directory is writable). Set ``kernels._USE_NUMBA = False`` to force the pure-torch path (also used
  for CUDA tensors and other dtypes).

Tie-breaking: items at exactly equal distance are ordered by gallery index (a *stable* sort).
torchreid uses ``np.argsort`` (not stable), so with exact ties between a positive and a
negative its result depends on numpy's sort internals; whenever no negative has exactly the
distance of a positive, both agree to float rounding. Such ties are common with float32
distances at Market size (about one query in ten), and are resolved exactly: negatives tied with
a positive count as "before" it iff their gallery index is lower.

Differences from torchreid that only show on degenerate inputs: if fewer than ``max_rank``
gallery items remain for a valid query (or fewer than ``max_rank`` gallery identities in the
CUHK03 metric), torchreid builds a ragged array and fails; here the CMC is padded with its
last value (1 for a valid query). "No valid query" raises :class:`NoValidQueryError` instead
of an ``AssertionError``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcac_plugin.evaluation.kernels import numba_kernel

logger = logging.getLogger(__name__)

__all__ = [
    "NoValidQueryError",
    "evaluate_rank",
    "RankAccumulator",
]

_CUHK03_REPEATS = 10  # torchreid's eval_cuhk03 num_repeats
_DEFAULT_CHUNK_ELEMS = 1 << 26  # query-chunk budget: rows * gallery size (GEMM needs >= ~500 rows)
# float32 rows: bucket only the items between the closest and farthest positive when they are
# fewer than this fraction of the row, else bucket every item (2-D searchsorted)
_MID_FRACTION = 0.02


class NoValidQueryError(ValueError):
    """Raised when no query has a correct match in the gallery (torchreid asserts instead)."""


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _as_1d_long(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one entry per image), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.is_floating_point() and torch.equal(t, t.round()):
            return t.long()
        raise ValueError(f"{name} must hold integer ids, got dtype {t.dtype}")
    return t.long()


def _check_ids(q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, num_q: int, num_g: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    out = []
    for name, arr, n in (("q_pids", q_pids, num_q), ("g_pids", g_pids, num_g),
                         ("q_camids", q_camids, num_q), ("g_camids", g_camids, num_g)):
        t = _as_1d_long(arr, name)
        if t.numel() != n:
            raise ValueError(f"{name} has {t.numel()} entries but the {'query' if n == num_q else 'gallery'} "
                             f"side has {n} items; pass one id per row/column of the distances")
        out.append(t.to(device))
    return out[0], out[1], out[2], out[3]


def _resolve_device(device: Any, fallback: torch.device) -> torch.device:
    if device is None:
        return fallback
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# gallery index and per-chunk statistics
# --------------------------------------------------------------------------------------------


class _GalleryIndex:
    """Gallery items grouped by pid (ascending gallery index inside a group)."""

    def __init__(self, g_pids: torch.Tensor, g_camids: torch.Tensor) -> None:
        self.g_pids = g_pids
        self.g_camids = g_camids
        uniq, inv, counts = torch.unique(g_pids, return_inverse=True, return_counts=True)
        self.uniq = uniq
        self.counts = counts
        self.order = torch.sort(inv, stable=True).indices
        self.offsets = torch.cumsum(counts, 0) - counts

    def lists(self, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded gallery indices of each pid in ``pids``: ``[B, L]`` idx and validity mask."""
        u = torch.searchsorted(self.uniq, pids).clamp(max=self.uniq.numel() - 1)
        present = self.uniq[u] == pids
        cnt = torch.where(present, self.counts[u], torch.zeros_like(u))
        width = max(int(cnt.max().item()) if cnt.numel() else 0, 1)
        ar = torch.arange(width, device=pids.device)
        valid = ar[None, :] < cnt[:, None]
        pos = (self.offsets[u][:, None] + ar[None, :]).clamp(max=self.order.numel() - 1)
        idx = torch.where(valid, self.order[pos], torch.zeros_like(pos))
        return idx, valid


def _ordered_u32(x: torch.Tensor) -> torch.Tensor:
    """Map float32 to int64 in [0, 2**32) preserving order (-0.0 == +0.0; no NaN)."""
    bits = (x + 0.0).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    neg = bits >= 0x80000000
    return torch.where(neg, 0xFFFFFFFF - bits, bits | 0x80000000)


@dataclass
class _ChunkResult:
    valid: torch.Tensor  # [B] bool
    first: torch.Tensor  # [B] long, 0-based kept position of the first positive
    ap: torch.Tensor  # [B] float64
    inp: torch.Tensor  # [B] float64


def _count_less_mid(dist: torch.Tensor, bvals: torch.Tensor, bvalid: torch.Tensor,
                    npos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``#{g: d_g < b_k}`` per row bucketing only items in ``[b_min, b_max]`` (float32 rows).

    Returns ``(count_less [n, pm], tie_rows, tie_cols)``: items whose distance equals a positive's.
    One int64 key per item (``row << 32 | order-preserving float bits``) allows a single 1-D search.
    """
    nb, num_g = dist.shape
    pm = bvals.shape[1]
    rowar = torch.arange(nb, device=dist.device)
    bmin = bvals[:, 0:1]
    bmax = bvals.gather(1, (npos - 1)[:, None])
    below = (dist < bmin).sum(1)
    flat = torch.nonzero(((dist >= bmin) & (dist <= bmax)).view(-1)).squeeze(1)
    vrow = flat // num_g
    vkey = (vrow << 32) | _ordered_u32(dist.view(-1)[flat])
    bkey = torch.where(bvalid, _ordered_u32(bvals), torch.full_like(bvalid, 0xFFFFFFFF, dtype=torch.long))
    bkey = ((rowar[:, None] << 32) | bkey).flatten()
    pos = torch.searchsorted(bkey, vkey, right=True)
    width = pm + 1
    hist = torch.bincount(vrow * width + (pos - vrow * pm), minlength=nb * width).view(nb, width)
    count_less = below[:, None] + torch.cumsum(hist, 1)[:, :pm]
    eq = torch.nonzero((pos > 0) & (bkey[(pos - 1).clamp(min=0)] == vkey)).squeeze(1)
    return count_less, vrow[eq], flat[eq] - vrow[eq] * num_g


def _count_less_full(dist: torch.Tensor, bvals: torch.Tensor, bvalid: torch.Tensor,
                     npos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same as :func:`_count_less_mid` with a batched 2-D ``searchsorted`` of every item (any dtype)."""
    nb, num_g = dist.shape
    pm = bvals.shape[1]
    width = pm + 1
    rowar = torch.arange(nb, device=dist.device)
    r = torch.searchsorted(bvals, dist, right=True, out_int32=True)
    if nb * width < 2**31:
        hist = torch.bincount((r + (rowar * width).to(torch.int32)[:, None]).view(-1), minlength=nb * width)
    else:
        hist = torch.bincount((r + rowar[:, None] * width).view(-1), minlength=nb * width)
    count_less = torch.cumsum(hist.view(nb, width), 1)[:, :pm]
    eqm = bvals.gather(1, (r - 1).clamp_(min=0).long()) == dist
    eqm &= r > 0
    e_flat = torch.nonzero(eqm.view(-1)).squeeze(1)
    e_row = e_flat // num_g
    return count_less, e_row, e_flat - e_row * num_g


# --------------------------------------------------------------------------------------------
# optional compiled kernel (numba); the torch code above is the fallback and the CUDA path
# --------------------------------------------------------------------------------------------

prange = range  # replaced by numba.prange right before compilation (keeps the numba import lazy)


def _positions_py(dist, rows, qpid, gpid, bvals, bidx, npos, out, nanflag):  # pragma: no cover - compiled
    """Kept 0-based position of every sorted positive of each row (compiled by numba).

    For row ``r`` (``dist[rows[r]]``) a negative item ``j`` (other pid) counts before the k-th positive
    iff ``(d_j, j) < (bvals[r, k], bidx[r, k])`` lexicographically (stable-sort order). Same-pid items
    (positives and junk) are skipped: positive ``k`` has exactly ``k`` positives before it.
    """
    nb = rows.shape[0]
    ng = dist.shape[1]
    for r in prange(nb):
        n = npos[r]
        hist = np.zeros(n + 1, np.int64)
        row = rows[r]
        p = qpid[r]
        bv = bvals[r, :n]
        lo_v = bv[0]
        hi_v = bv[n - 1]
        bad = lo_v != lo_v or hi_v != hi_v
        for j in range(ng):
            d = dist[row, j]
            if d < lo_v:
                if gpid[j] != p:
                    hist[0] += 1
            elif d > hi_v:
                if gpid[j] != p:
                    hist[n] += 1
            elif d != d:
                bad = True
            elif gpid[j] != p:
                # positives closer than d (a vectorised count beats a binary search for typical n),
                # then exact ties: a positive tied with d stays after item j iff its index is higher
                c = 0
                for k in range(n):
                    c += bv[k] < d
                while c < n and bv[c] == d and bidx[r, c] < j:
                    c += 1
                hist[c] += 1
        nanflag[r] = bad
        c = 0
        for k in range(n):
            c += hist[k]
            out[r, k] = c + k


_NAN_MSG = "distance matrix contains NaN; check the features (NaN/inf in the model output)"


def _positions_torch(dist: torch.Tensor, q_pids_rows: torch.Tensor, g_pids: torch.Tensor, bvals: torch.Tensor,
                     bidx: torch.Tensor, bvalid: torch.Tensor, npos: torch.Tensor,
                     same_less: torch.Tensor) -> torch.Tensor:
    """Pure-torch kept positions ``[nb, pm]`` (histogram by ``searchsorted``; CPU/CUDA, any float dtype)."""
    nb, num_g = dist.shape
    dev = dist.device
    pm = bvals.shape[1]
    kar = torch.arange(pm, device=dev)
    mid_rows = torch.zeros(nb, dtype=torch.bool, device=dev)
    if dist.dtype == torch.float32:
        # per row, estimate on a column subsample the share of items lying between its closest and
        # farthest positive; rows where it is small use the sparse "mid" bucketing
        sample = dist[:, :: max(1, num_g // 1024)]
        bmax = bvals.gather(1, (npos - 1)[:, None])
        frac = ((sample >= bvals[:, 0:1]) & (sample <= bmax)).sum(1).double() / sample.shape[1]
        mid_rows = frac < _MID_FRACTION
    count_less = torch.zeros(nb, pm, dtype=torch.long, device=dev)
    e_rows, e_cols = [], []
    for sel, fn in ((mid_rows, _count_less_mid), (~mid_rows, _count_less_full)):
        ix = torch.nonzero(sel).flatten()
        if ix.numel() == 0:
            continue
        if ix.numel() == nb:
            cl, er, ec = fn(dist, bvals, bvalid, npos)
        else:
            cl, er, ec = fn(dist[ix], bvals[ix].contiguous(), bvalid[ix], npos[ix])
        count_less[ix] = cl
        e_rows.append(ix[er])
        e_cols.append(ec)
    e_row = torch.cat(e_rows)
    e_col = torch.cat(e_cols)
    # 0-based position among kept items: negatives strictly closer + positives before it
    positions = count_less - same_less + kar[None, :]
    if e_row.numel():
        # exact ties between a negative and a positive: the stable order puts the lower gallery index first
        e_val = dist[e_row, e_col]
        neg = g_pids[e_col] != q_pids_rows[e_row]
        e_row, e_col, e_val = e_row[neg], e_col[neg], e_val[neg]
        if e_row.numel():
            before = (bvals[e_row] == e_val[:, None]) & (e_col[:, None] < bidx[e_row]) & bvalid[e_row]
            positions = positions.index_add(0, e_row, before.to(positions.dtype))
    return positions


def _chunk_stats(dist: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor,
                 gindex: _GalleryIndex) -> _ChunkResult:
    """Per-query first-hit position, AP and INP for one chunk of distance rows ``[B, G]``."""
    bsz, num_g = dist.shape
    dev = dist.device
    kernel = None
    if dev.type == "cpu" and dist.dtype in (torch.float32, torch.float64):
        kernel = numba_kernel(_positions_py)
    if kernel is None and torch.isnan(dist).any():
        raise ValueError(_NAN_MSG)
    idx, lvalid = gindex.lists(q_pids)
    is_pos = lvalid & (gindex.g_camids[idx] != q_cams[:, None])
    npos = is_pos.sum(1)
    valid = npos > 0
    first = torch.zeros(bsz, dtype=torch.long, device=dev)
    ap = torch.zeros(bsz, dtype=torch.float64, device=dev)
    inp = torch.zeros(bsz, dtype=torch.float64, device=dev)
    rows = torch.nonzero(valid).flatten()
    if kernel is not None and rows.numel() < bsz and torch.isnan(dist[~valid]).any():
        raise ValueError(_NAN_MSG)  # rows the kernel does not scan
    if rows.numel() == 0:
        return _ChunkResult(valid, first, ap, inp)
    full_dist = dist
    if rows.numel() < bsz:
        is_pos, lvalid, npos, idx = (t[rows] for t in (is_pos, lvalid, npos, idx))
        if kernel is None:
            dist = dist[rows]
    qp = q_pids[rows]
    nb = rows.numel()
    pm = int(npos.max().item())
    same_d = full_dist[rows[:, None], idx] if kernel is not None else dist.gather(1, idx)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dev)
    # positives sorted by (distance, gallery index): the list is in gallery order and the sort is stable
    bsorted = torch.sort(torch.where(is_pos, same_d, inf), dim=1, stable=True)
    bvals = bsorted.values[:, :pm].contiguous()
    bidx = idx.gather(1, bsorted.indices[:, :pm]).contiguous()
    kar = torch.arange(pm, device=dev)
    bvalid = kar[None, :] < npos[:, None]
    if kernel is not None:
        positions = torch.zeros(nb, pm, dtype=torch.long)
        nanflag = torch.zeros(nb, dtype=torch.bool)
        kernel(full_dist.detach().contiguous().numpy(), rows.numpy(), qp.contiguous().numpy(),
               gindex.g_pids.contiguous().numpy(), bvals.numpy(), bidx.numpy(), npos.contiguous().numpy(),
               positions.numpy(), nanflag.numpy())
        if bool(nanflag.any()):
            raise ValueError(_NAN_MSG)
    else:
        dist = dist.contiguous()
        same_sorted = torch.sort(torch.where(lvalid, same_d, inf), dim=1).values.contiguous()
        # same-pid gallery items (positives and junk) strictly closer than each positive
        same_less = torch.searchsorted(same_sorted, bvals, right=False)
        positions = _positions_torch(dist, qp, gindex.g_pids, bvals, bidx, bvalid, npos, same_less)
    positions = torch.where(bvalid, positions, torch.zeros_like(positions))
    posf = positions.to(torch.float64) + 1.0
    prec = torch.where(bvalid, (kar[None, :] + 1).to(torch.float64) / posf, torch.zeros_like(posf))
    nposf = npos.to(torch.float64)
    last = posf.gather(1, (npos - 1)[:, None]).squeeze(1)
    first[rows] = positions[:, 0]
    ap[rows] = prec.sum(1) / nposf
    inp[rows] = nposf / last
    return _ChunkResult(valid, first, ap, inp)


class RankAccumulator:
    """Accumulates CMC / mAP / mINP over chunks of query rows (Market-1501 protocol).

    Args:
        g_pids: ``[G]`` gallery person ids.
        g_camids: ``[G]`` gallery camera ids.
        max_rank: CMC length (clipped to the gallery size, like torchreid).
    """

    def __init__(self, g_pids: torch.Tensor, g_camids: torch.Tensor, max_rank: int) -> None:
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        num_g = int(g_pids.numel())
        if num_g < max_rank:
            logger.info("number of gallery samples is quite small (%d); max_rank set to %d", num_g, num_g)
            max_rank = num_g
        self.max_rank = max_rank
        self.index = _GalleryIndex(g_pids, g_camids)
        self.cmc_counts = torch.zeros(max_rank, dtype=torch.float64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.num_seen = 0

    def update(self, dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor) -> None:
        """Add a chunk: ``dist`` ``[B, G]``, ``q_pids``/``q_camids`` ``[B]`` (same device)."""
        res = _chunk_stats(dist, q_pids, q_camids, self.index)
        self.num_seen += int(dist.shape[0])
        if not bool(res.valid.any()):
            return
        first = res.first[res.valid].cpu()
        hits = torch.bincount(first.clamp(max=self.max_rank), minlength=self.max_rank + 1)[: self.max_rank]
        self.cmc_counts += torch.cumsum(hits, 0).to(torch.float64)
        self.ap_sum += float(res.ap[res.valid].sum().item())
        self.inp_sum += float(res.inp[res.valid].sum().item())
        self.num_valid += int(res.valid.sum().item())

    def result(self) -> tuple[np.ndarray, float, float]:
        """``(cmc float32 [max_rank] fractions, mAP, mINP)``; raises if no query was valid."""
        if self.num_valid == 0:
            raise NoValidQueryError(
                f"none of the {self.num_seen} queries has a correct match in the gallery (same pid, "
                "different camera); check that query and gallery ids/cameras come from the same split")
        n = np.float32(self.num_valid)
        cmc = self.cmc_counts.numpy().astype(np.float32) / n
        return cmc, self.ap_sum / self.num_valid, self.inp_sum / self.num_valid


# --------------------------------------------------------------------------------------------
# CUHK03 single-gallery-shot metric (reproduces torchreid's eval_cuhk03 RNG use)
# --------------------------------------------------------------------------------------------


def _cuhk03_query(d: torch.Tensor, q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray,
                  max_rank: int) -> tuple[np.ndarray, float, float] | None:
    order = torch.sort(d, stable=True).indices.cpu().numpy()
    op = g_pids[order]
    keep = ~((op == q_pid) & (g_cams[order] == q_cam))
    kp = op[keep]
    raw = kp == q_pid
    if not raw.any():
        return None
    # identities in order of first appearance; positions of each in ascending order
    _, first_idx, inv = np.unique(kp, return_index=True, return_inverse=True)
    rank_of_group = np.argsort(np.argsort(first_idx, kind="stable"), kind="stable")
    grp = rank_of_group[inv]  # group id (first-appearance order) of each kept position
    pos_sorted = np.argsort(grp, kind="stable")  # positions grouped, ascending inside a group
    sizes = np.bincount(grp)
    starts = np.cumsum(sizes) - sizes
    ngroups = sizes.size
    # torchreid: for each of 10 repeats, np.random.choice(idxs) per identity in dict order,
    # i.e. one legacy randint(0, len) per identity; a vectorised call consumes the same stream.
    draws = np.random.randint(0, np.tile(sizes, _CUHK03_REPEATS)).reshape(_CUHK03_REPEATS, ngroups)
    chosen = pos_sorted[starts[None, :] + draws]  # [repeats, groups] kept positions
    pos_group = int(grp[np.argmax(raw)])
    hit_pos = chosen[:, pos_group]
    rank = (chosen < hit_pos[:, None]).sum(1)  # 0-based rank of the hit in the masked list
    cmc = (np.arange(max_rank)[None, :] >= rank[:, None]).astype(np.float32).sum(0) / _CUHK03_REPEATS
    hits = np.nonzero(raw)[0].astype(np.float64) + 1.0
    k = np.arange(1, hits.size + 1, dtype=np.float64)
    return cmc, float((k / hits).sum() / hits.size), float(hits.size / hits[-1])


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _query_chunks(num_q: int, num_g: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    if chunk_size is None:
        chunk_size = max(1, _DEFAULT_CHUNK_ELEMS // max(num_g, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 query row, got {chunk_size}")
    for a in range(0, num_q, chunk_size):
        yield a, min(num_q, a + chunk_size)


def _evaluate_blocks(blocks: Iterable[tuple[int, int, torch.Tensor]], q_pids: torch.Tensor,
                     g_pids: torch.Tensor, q_camids: torch.Tensor, g_camids: torch.Tensor, max_rank: int,
                     use_metric_cuhk03: bool) -> tuple[np.ndarray, float, float]:
    if not use_metric_cuhk03:
        acc = RankAccumulator(g_pids, g_camids, max_rank)
        for a, b, d in blocks:
            acc.update(d, q_pids[a:b], q_camids[a:b])
        return acc.result()
    num_g = int(g_pids.numel())
    if num_g < max_rank:
        logger.info("number of gallery samples is quite small (%d); max_rank set to %d", num_g, num_g)
        max_rank = num_g
    gp, gc = g_pids.cpu().numpy(), g_camids.cpu().numpy()
    qp, qc = q_pids.cpu().numpy(), q_camids.cpu().numpy()
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    n_valid = 0
    for a, b, d in blocks:
        if torch.isnan(d).any():
            raise ValueError("distance matrix contains NaN; check the features (NaN/inf in the model output)")
        for r in range(b - a):
            out = _cuhk03_query(d[r], int(qp[a + r]), int(qc[a + r]), gp, gc, max_rank)
            if out is None:
                continue
            cmc_sum += out[0]
            ap_sum += out[1]
            inp_sum += out[2]
            n_valid += 1
    if n_valid == 0:
        raise NoValidQueryError(
            f"none of the {int(q_pids.numel())} queries has a correct match in the gallery (same pid, "
            "different camera); check that query and gallery ids/cameras come from the same split")
    return (cmc_sum / n_valid).astype(np.float32), ap_sum / n_valid, inp_sum / n_valid


def evaluate_rank(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, max_rank: int = 50,
                  use_metric_cuhk03: bool = False, chunk_size: int | None = None,
                  device: Any = None) -> tuple[np.ndarray, float, float]:
    """Drop-in for torchreid's ``metrics.evaluate_rank`` returning mINP as well.

    Args:
        distmat: ``[Q, G]`` distances (numpy array or tensor; smaller = more similar).
        q_pids, g_pids: ``[Q]`` / ``[G]`` integer person ids.
        q_camids, g_camids: ``[Q]`` / ``[G]`` integer camera ids.
        max_rank: CMC length (clipped to ``G``).
        use_metric_cuhk03: CUHK03 single-gallery-shot CMC (10 random draws from numpy's global
            RNG, consumed exactly like torchreid's ``eval_cuhk03``); AP/INP use all items.
        chunk_size: query rows per chunk (default: about 64M distances per chunk).
        device: torch device for the computation (default: the tensor's device / CPU).

    Returns:
        ``(cmc, mAP, mINP)``: cmc float32 ``[min(max_rank, G)]`` fractions, mAP and mINP fractions.
        Queries without a match in another camera are skipped.

    Raises:
        NoValidQueryError: no query has a valid match.
        ValueError: shape/dtype mismatch or NaN distances.
    """
    dm = distmat if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
    if dm.dim() != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {tuple(dm.shape)}")
    if not dm.is_floating_point():
        dm = dm.to(torch.float64)
    dev = _resolve_device(device, dm.device)
    num_q, num_g = dm.shape
    qp, gp, qc, gc = _check_ids(q_pids, g_pids, q_camids, g_camids, num_q, num_g, dev)
    if num_g == 0 or num_q == 0:
        raise NoValidQueryError(f"empty query ({num_q}) or gallery ({num_g}) set; nothing to evaluate")
    blocks = ((a, b, dm[a:b].to(dev)) for a, b in _query_chunks(num_q, num_g, chunk_size))
    return _evaluate_blocks(blocks, qp, gp, qc, gc, max_rank, use_metric_cuhk03)


def _prep_features(x: Any, name: str, dev: torch.device, normalize: bool) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [num_images, feat_dim], got shape {tuple(t.shape)}")
    t = t.to(dev, torch.float32)
    if normalize:
        t = F.normalize(t, p=2, dim=1)
    return t
