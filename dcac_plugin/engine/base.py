"""What every plugin engine adds to torchreid's ``Engine``.

torchreid's engines keep their ``forward_backward`` (the training step); this mixin replaces
the parts around it: one device, a progress bar and logging instead of prints, the
memory-bounded evaluator with mINP (``dcac_plugin.evaluation``), atomic checkpoints that hold
only what is trained, resume, and a per-target metrics dict for ``results.json``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dcac_plugin import distributed as dist_utils
from dcac_plugin import evaluation  # evaluate_features looked up on call (tests replace it)
from dcac_plugin.evaluation.hooks import EvalHook, TargetEvaluation, build_named_hook, run_hooks
from dcac_plugin.models.weights import read_state_dict
from dcac_plugin.runfolder import CHECKPOINT_PATTERN, checkpoint_name, checkpoints, latest_checkpoint  # noqa: F401
from dcac_plugin.utils.files import WriteError
from dcac_plugin.utils.io import atomic_torch_save

logger = logging.getLogger(__name__)



def _bar_disabled() -> bool | None:
    """Progress bars: off below INFO; ``None`` lets tqdm turn them off when stderr is not a terminal."""
    return True if not logger.isEnabledFor(logging.INFO) else None


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN/inf; the message names the step and every loss term."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PluginEngineMixin:
    """Mixed in before a torchreid ``Engine`` subclass. Call :meth:`setup` after ``__init__``."""

    device: torch.device

    def setup(self, *, device: torch.device, save_dir: str, eval_kwargs: dict[str, Any],
              print_freq: int = 20, checkpoint_period: int = 1, keep_checkpoints: int = 2,
              ddp: bool = False, find_unused_parameters: bool = False,
              eval_hooks: Sequence[EvalHook] = (), visrank_topk: int = 0) -> None:
        """Finish construction.

        Args:
            device: the run's single device.
            save_dir: output folder (checkpoints, tensorboard events).
            eval_kwargs: keyword arguments of :func:`dcac_plugin.evaluation.evaluate_features`
                (metric, normalize, rerank options, chunk size).
            print_freq: log the running losses every N batches.
            checkpoint_period: write a checkpoint every N epochs (and always at the end).
            keep_checkpoints: how many periodic checkpoints to keep.
            ddp: wrap the model in ``DistributedDataParallel`` for training (process group
                already initialised); evaluation and checkpoints use the plain model on rank 0.
            find_unused_parameters: DDP option (parameters without gradient in some steps).
            eval_hooks: called after each target's evaluation with a
                :class:`dcac_plugin.evaluation.hooks.TargetEvaluation` (e.g.
                :class:`dcac_plugin.inference.visrank.VisrankHook`, the ranked-list pictures).
            visrank_topk: > 0 adds the ranked-list hook with this many gallery images (the older
                spelling of ``eval_hooks=[VisrankHook(visrank_topk)]``; ``test.visrank``).
        """
        self.device = device
        self.save_dir = Path(save_dir)
        self.eval_kwargs = dict(eval_kwargs)
        self.print_freq = max(1, print_freq)
        self.checkpoint_period = max(1, checkpoint_period)
        self.keep_checkpoints = max(1, keep_checkpoints)
        self.global_step = 0
        self.last_results: dict[str, dict[str, float]] = {}
        self.epoch = 0
        self.visrank_topk = max(0, int(visrank_topk))
        self.eval_hooks: list[EvalHook] = list(eval_hooks)
        if self.visrank_topk > 0:
            self.eval_hooks.append(build_named_hook("visrank", topk=self.visrank_topk))
        self.train_model = self.raw_model()
        if ddp:
            self.train_model = DistributedDataParallel(
                self.raw_model(), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
            if self.uses_torchreid_step:
                self.model = self.train_model  # torchreid's forward_backward calls self.model

    uses_torchreid_step = True  # torchreid's forward_backward (self.model); the DCAC engine sets False

    def raw_model(self) -> torch.nn.Module:
        """The model without any DDP wrapper."""
        return self._models["model"]

    # ------------------------------------------------------------------ state
    def model_state(self) -> dict[str, torch.Tensor]:
        """What is trained (engines with frozen parts override this)."""
        return self.raw_model().state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`model_state`."""
        self.raw_model().load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        """Engine-specific state to checkpoint (e.g. the prototype memory)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    def save_checkpoint(self, epoch: int) -> Path | None:
        """Atomically write ``checkpoint_ep{epoch}.pth`` (epoch = completed epochs; rank 0 only)."""
        if not dist_utils.is_main_process():
            dist_utils.barrier()
            return None
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "extra": self.extra_state(),
            "rng": rng_state(),
            "results": self.last_results,
        }
        scaler = getattr(self, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        try:
            path = atomic_torch_save(state, self.save_dir / checkpoint_name(epoch))
        except WriteError as exc:
            kept = latest_checkpoint(self.save_dir)
            then = (f"; once fixed, --resume continues from {kept.name}" if kept is not None else
                    "; once fixed, start the run again")
            err = WriteError(f"{exc}{then}")
            err.errno, err.filename = exc.errno, exc.filename
            raise err from None
        self._prune_checkpoints()
        logger.info("saved %s", path)
        dist_utils.barrier()
        return path

    def _prune_checkpoints(self) -> None:
        for p in checkpoints(self.save_dir)[self.keep_checkpoints:]:  # newest first; keep_checkpoints >= 1
            p.unlink(missing_ok=True)

    def resume(self, path: str | Path) -> int:
        """Load a checkpoint written by :meth:`save_checkpoint`; return the epoch to start from.

        Half-written checkpoints left by a process killed mid-write (``.checkpoint_ep*.pth.*.tmp``
        beside it; they never took a checkpoint's name) are removed.
        """
        state = read_state_dict(path, "checkpoint")  # weights_only; an unreadable file gets its diagnosis
        if dist_utils.is_main_process():
            for stale in Path(path).parent.glob(".checkpoint_ep*.pth.*.tmp"):
                logger.info("removing %s, a checkpoint write that was interrupted", stale.name)
                stale.unlink(missing_ok=True)
        self.load_model_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self, "scaler", None)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("extra", {}))
        set_rng_state(state["rng"])
        self.global_step = int(state.get("global_step", 0))
        self.last_results = state.get("results", {})
        logger.info("resumed from %s (completed epochs: %d)", path, state["epoch"])
        return int(state["epoch"])

    # --------------------------------------------------------------- training
    def on_epoch_start(self) -> None:
        """Hook run before each epoch's batches (the DCAC engine rebuilds its memory here)."""

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> dict[str, float]:
        """One epoch: progress bar, running losses to the log and tensorboard, then the LR step."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.on_epoch_start()
        self.set_model_mode("train")
        # after the train mode, as torchreid does: during fixbase epochs the closed layers stay in eval
        # mode (their BatchNorm statistics are not updated), not only without gradients
        self.two_stepped_transfer_learning(self.epoch, fixbase_epoch, open_layers, model=self.raw_model())
        sums: dict[str, float] = {}
        n = 0
        loader = self.train_loader
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.max_epoch}", leave=False,
                   disable=_bar_disabled(), dynamic_ncols=True)
        for self.batch_idx, data in enumerate(bar):
            summary = self.forward_backward(data)
            self.global_step += 1
            n += 1
            for k, v in summary.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if self.writer is not None:
                for k, v in summary.items():
                    self.writer.add_scalar(f"Train/{k}", float(v), self.global_step)
                self.writer.add_scalar("Train/lr", self.get_current_lr(), self.global_step)
            if (self.batch_idx + 1) % self.print_freq == 0:
                logger.info("epoch %d batch %d/%d %s lr %.3g", self.epoch + 1, self.batch_idx + 1,
                            len(loader), " ".join(f"{k} {v / n:.4f}" for k, v in sums.items()),
                            self.get_current_lr())
        means = {k: v / max(n, 1) for k, v in sums.items()}
        logger.info("epoch %d done: %s", self.epoch + 1, " ".join(f"{k} {v:.4f}" for k, v in means.items()))
        self.update_lr()
        return means

    def fit(self, start_epoch: int, max_epoch: int, *, eval_freq: int = -1, start_eval: int = 0,
            fixbase_epoch: int = 0, open_layers=None) -> dict[str, dict[str, float]]:
        """Train from ``start_epoch`` (completed epochs) to ``max_epoch``; evaluate at the end.

        Returns the per-target metrics of the final evaluation.
        """
        self.max_epoch = max_epoch
        if self.writer is None and dist_utils.is_main_process():
            self.writer = SummaryWriter(log_dir=str(self.save_dir / "tensorboard"))
        try:
            for self.epoch in range(start_epoch, max_epoch):
                t0 = time.time()
                self.train(fixbase_epoch=fixbase_epoch, open_layers=open_layers)
                done = self.epoch + 1
                logger.info("epoch %d took %.1f s", done, time.time() - t0)
                periodic_eval = (eval_freq > 0 and done % eval_freq == 0 and done >= start_eval
                                 and done != max_epoch)
                if periodic_eval:
                    self.evaluate()
                if done % self.checkpoint_period == 0 or done == max_epoch:
                    self.save_checkpoint(done)
            self.epoch = max_epoch
            results = self.evaluate()
        finally:
            if self.writer is not None:
                self.writer.flush()
        return results

    # ------------------------------------------------------------- evaluation
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode embedding ``[B, D]`` in fp32."""
        return self.raw_model()(x).float()

    @torch.no_grad()
    def _features(self, loader) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        feats, pids, camids = [], [], []
        for data in tqdm(loader, desc="features", leave=False, disable=_bar_disabled()):
            imgs, p, c = self.parse_data_for_eval(data)
            feats.append(self.extract_features(imgs.to(self.device)).cpu())
            pids.append(p.numpy() if torch.is_tensor(p) else np.asarray(p))
            camids.append(c.numpy() if torch.is_tensor(c) else np.asarray(c))
        return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)

    def target_evaluation(self, name: str, qf: torch.Tensor, gf: torch.Tensor, q_pids: np.ndarray,
                          g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
                          metrics: dict[str, float]) -> TargetEvaluation:
        """What the evaluation hooks get for target ``name``."""
        data = self.datamanager.test_dataset[name]
        return TargetEvaluation(name, self.epoch, qf, gf, q_pids, g_pids, q_camids, g_camids, metrics,
                                self.eval_kwargs, data["query"], data["gallery"], self.save_dir)

    def write_visrank(self, name: str, qf: torch.Tensor, gf: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                      q_camids: np.ndarray, g_camids: np.ndarray, metrics: dict[str, float]) -> Path:
        """Ranked-list pictures of every query of target ``name`` (torchreid visrank style) and an
        ``index.html``, under ``<save_dir>/visrank/<name>/``; distances as the evaluator ranks them.
        (The ranked-list hook run once; ``eval_hooks`` runs it at every evaluation.)"""
        hook = build_named_hook("visrank", topk=self.visrank_topk)
        return hook(self.target_evaluation(name, qf, gf, q_pids, g_pids, q_camids, g_camids, metrics))

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Evaluate every target; returns ``{target: {mAP, rank1, rank5, rank10, mINP}}`` in percent.

        Under DDP only rank 0 evaluates (the others wait and return ``{}``).
        """
        if not dist_utils.is_main_process():
            dist_utils.barrier()
            return {}
        self.set_model_mode("eval")
        results: dict[str, dict[str, float]] = {}
        for name, loaders in self.test_loader.items():
            t0 = time.time()
            qf, q_pids, q_camids = self._features(loaders["query"])
            gf, g_pids, g_camids = self._features(loaders["gallery"])
            metrics = evaluation.evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, **self.eval_kwargs)
            row = {k: float(metrics[k]) for k in ("mAP", "rank1", "rank5", "rank10", "mINP")}
            results[name] = row
            logger.info("%s: mAP %.1f  R1 %.1f  R5 %.1f  R10 %.1f  mINP %.1f  (%d q x %d g, %.1f s)", name,
                        row["mAP"], row["rank1"], row["rank5"], row["rank10"], row["mINP"], len(q_pids),
                        len(g_pids), time.time() - t0)
            if self.writer is not None:
                for k, v in row.items():
                    self.writer.add_scalar(f"Test/{name}/{k}", v, self.epoch)
            hooks = getattr(self, "eval_hooks", ())
            if hooks:
                run_hooks(hooks, self.target_evaluation(name, qf, gf, q_pids, g_pids, q_camids, g_camids, row))
        self.last_results = results
        self.set_model_mode("train")
        dist_utils.barrier()
        return results

