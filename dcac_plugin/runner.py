"""Train and/or evaluate one run from Python: what ``tools/train.py`` does, without the shell.

::

    from dcac_plugin import runner
    cfg = runner.load_config("configs/demo/dcac_tiny.yaml", ["data.root", "data/synthetic-small"])
    record = runner.run(cfg)                      # train, evaluate every target, write results.json
    record = runner.run(cfg, eval_only=True)      # evaluate the run folder's latest checkpoint

A run writes, into ``data.save_dir``: the merged ``config.yaml``, ``train.log``, tensorboard events,
checkpoints and ``results.json`` (schema in :mod:`dcac_plugin.benchmark.records`). Evaluating a
finished run folder again (``eval_only``) on more ``data.targets`` merges the new targets into its
``results.json``; what is already there is kept.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from dcac_plugin import distributed as dist_utils
from dcac_plugin.config import ConfigError, config_hash, get_default_config, merge_config
from dcac_plugin.engine.base import latest_checkpoint
from dcac_plugin.engine.build import distribute_train_loader, eval_kwargs
from dcac_plugin.families import (  # TINY_METHODS, prior_files, tiny_method_label: moved there, importable here
    TINY_METHODS,  # noqa: F401
    ModelFamily,
    family_for,
    prior_files,  # noqa: F401
    tiny_method_label,  # noqa: F401
)
from dcac_plugin.inference.visrank import VisrankHook
from dcac_plugin.protocols import DATASET_CODES
from dcac_plugin.registry import register
from dcac_plugin.runfolder import SCHEMA_VERSION as RESULTS_SCHEMA_VERSION  # the results.json schema written
from dcac_plugin.runfolder import latest_loadable_checkpoint, read_results
from dcac_plugin.utils.files import file_sha256, write_error
from dcac_plugin.utils.io import atomic_write_json, atomic_write_text
from dcac_plugin.utils.runinfo import device_description, git_commit, library_versions

logger = logging.getLogger("dcac_plugin")

__all__ = ["RESULTS_SCHEMA_VERSION", "file_sha256", "load_config", "protocol_of", "run", "set_seed",
           "setup_logging"]


_FILE_ONLY = "dcac_file_only"


def load_config(config_file: str | Path | None = None, opts: Sequence[str] = (), *, eval_only: bool = False,
                resume: bool = False) -> CfgNode:
    """Defaults + yaml file + ``key value`` overrides, validated and frozen.

    Raises:
        ConfigError: unknown key, wrong type, or an unsupported setting (the message names it).
    """
    cfg = merge_config(get_default_config(), str(config_file) if config_file else None, list(opts))
    if eval_only:
        cfg.test.evaluate = True
    if cfg.test.visrank and cfg.test.visrank_topk < 1:
        raise ConfigError(f"test.visrank True needs test.visrank_topk >= 1; got {cfg.test.visrank_topk}")
    if cfg.data.type != "image":
        raise ConfigError(f"data.type must be 'image' (video re-ID is not supported); got '{cfg.data.type}'")
    if resume and not cfg.model.resume:
        cfg.model.resume = "auto"
    family_for(cfg).check_config(cfg)
    cfg.freeze()
    return cfg


class _LogFile(logging.FileHandler):
    """``train.log``: a record that cannot be written (full disk) is reported once, in one line."""

    _reported = False

    def handleError(self, record: logging.LogRecord | None) -> None:  # noqa: N802 - logging's name
        if not self._reported:
            self._reported = True
            sys.stderr.write(f"warning: cannot write to {self.baseFilename} ({sys.exc_info()[1]}); the log "
                             "continues on the console only\n")

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            self.handleError(None)


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, _FILE_ONLY, False)


def setup_logging(save_dir: Path, main_process: bool = True) -> logging.Handler:
    """Log to ``save_dir/train.log`` and stderr; returns the file handler (removed at the end).

    Under DDP only rank 0 writes the log; the other ranks log warnings and errors to stderr.
    Records logged with ``extra={"dcac_file_only": True}`` go to the file alone.
    """
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_error(save_dir / "train.log", exc, "create the folder of") or exc) from None
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
        return logging.NullHandler()
    try:
        fh = _LogFile(save_dir / "train.log", encoding="utf-8")
    except OSError as exc:
        raise (write_error(save_dir / "train.log", exc, "open") or exc) from None
    fh.setFormatter(fmt)
    root = logging.getLogger()
    root.addHandler(fh)
    streams = [h for h in root.handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    if not streams:
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        root.addHandler(sh)
        streams = [sh]
    for h in streams:
        if not any(isinstance(f, _NotFileOnly) for f in h.filters):
            h.addFilter(_NotFileOnly())
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return fh


def set_seed(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def protocol_of(cfg: CfgNode) -> dict[str, Any]:
    """Protocol description for the results record (benchmark = real or synthetic data)."""
    sources, targets = list(cfg.data.sources), list(cfg.data.targets)
    src = "+".join(DATASET_CODES.get(s, s) for s in sources)
    marker = Path(cfg.data.root) / "SYNTHETIC.json"
    variants: dict[str, Any] = {}
    if "msmt17" in sources + targets:
        variants["msmt17_include_val"] = bool(cfg.data.msmt17_include_val)
    if any(n in ("cuhk03", "cuhk03_np") for n in sources + targets):
        variants["cuhk03"] = "labeled" if cfg.cuhk03.labeled_images else "detected"
    variants["test_interpolation"] = cfg.data.test_interpolation
    return {
        "key": f"{src}->{'+'.join(DATASET_CODES.get(t, t) for t in targets)}",
        "kind": "multi_source" if len(sources) > 1 else "single_source",
        "sources": sources,
        "targets": targets,
        "benchmark": "synthetic" if marker.is_file() else "real",
        "variants": variants,
    }


def _checkpoint_entry(path: str | Path | None, save_dir: Path) -> dict[str, str] | None:
    """``{file, sha256}`` of the weights a result comes from (path relative to the run folder if inside)."""
    if not path:
        return None
    p = Path(path)
    try:
        shown = str(p.resolve().relative_to(save_dir.resolve()))
    except ValueError:
        shown = str(p)
    return {"file": shown, "sha256": file_sha256(p)}


def _status(results: dict[str, dict[str, float]], targets: list[str]) -> str:
    """``ok`` when every target has finite metrics; ``incomplete`` otherwise."""
    for t in targets:
        row = results.get(t)
        if not row or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in row.values()):
            return "incomplete"
    return "ok"


def default_command(config_file: str | Path | None, opts: Sequence[str], eval_only: bool = False,
                    resume: bool = False) -> list[str]:
    """The ``tools/train.py`` command line that reproduces a run (argv list, ``python`` first)."""
    argv = ["python", "tools/train.py"]
    if config_file:
        argv += ["--config-file", str(config_file)]
    if eval_only:
        argv.append("--eval-only")
    if resume:
        argv.append("--resume")
    return argv + [str(o) for o in opts]


def run(cfg: CfgNode, *, config_file: str | Path | None = None, command: Sequence[str] | None = None,
        eval_only: bool | None = None) -> dict[str, Any]:
    """Train (unless ``test.evaluate``) and evaluate one run; returns the results record.

    Args:
        cfg: a frozen config from :func:`load_config`.
        config_file: recorded in ``results.json`` (``config_file``).
        command: the command line that started the run (recorded; default: built from the config file).
        eval_only: evaluate only (default: ``cfg.test.evaluate``).

    Returns:
        The record written to ``<data.save_dir>/results.json`` (rank 0), with ``status`` ``ok`` when
        every target has finite metrics. Other DDP ranks return it with ``status`` ``worker``.
    """
    if eval_only is not None and bool(eval_only) != bool(cfg.test.evaluate):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.test.evaluate = bool(eval_only)
        cfg.freeze()
    save_dir = Path(cfg.data.save_dir)
    t_start = time.time()
    distributed, device = dist_utils.init_from_env(cfg.use_gpu)
    handler = setup_logging(save_dir, dist_utils.is_main_process())
    command = list(command) if command else default_command(config_file, [], bool(cfg.test.evaluate))
    try:
        return _run(cfg, str(config_file or ""), command, save_dir, t_start, device, distributed)
    except Exception as e:
        # into train.log only: the console shows the CLI's one-line message (or the traceback)
        logger.error("run failed: %s: %s", type(e).__name__, e, exc_info=True, extra={_FILE_ONLY: True})
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        if distributed:
            dist_utils.cleanup()


@dataclass
class _Run:
    """One run's state, filled step by step by :func:`_run`'s steps."""

    cfg: CfgNode
    config_file: str
    command: list[str]
    save_dir: Path
    t_start: float
    device: torch.device
    distributed: bool
    family: ModelFamily
    previous: dict[str, Any] | None = None  # the run folder's results.json when evaluating it again
    saved: str = ""  # the weights an evaluation reads instead of the initialisation file
    dm: Any = None
    engine: Any = None
    init: str = "random"
    init_file: str | None = None  # the weight file the model was initialised from, recorded with its sha256
    weights_file: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0

    @property
    def evaluate_only(self) -> bool:
        return bool(self.cfg.test.evaluate)

    @property
    def encoder_only(self) -> bool:
        """Evaluating saved weights of a family that needs only the encoder there (no UNet/VAE, no SD file)."""
        return self.family.encoder_only_eval and self.evaluate_only

    @property
    def load_init(self) -> bool:
        """Read the initialisation file (CLIP for the plugin's models) unless saved weights replace it."""
        return not (self.encoder_only and self.saved)


def _run(cfg: CfgNode, config_file: str, command: list[str], save_dir: Path, t_start: float,
         device: torch.device, distributed: bool) -> dict[str, Any]:
    r = _prepare(cfg, config_file, command, save_dir, t_start, device, distributed)
    _build(r)
    if r.evaluate_only:
        _evaluate_saved(r)
    else:
        _train(r)
    if not dist_utils.is_main_process():
        return {"status": "worker", "results": r.results}
    return _record(r)


def _prepare(cfg: CfgNode, config_file: str, command: list[str], save_dir: Path, t_start: float,
             device: torch.device, distributed: bool) -> _Run:
    """Config copy, seeding, the model's family and the checkpoint an evaluation reads."""
    r = _Run(cfg, config_file, command, save_dir, t_start, device, distributed, family_for(cfg))
    r.previous = read_results(save_dir) if r.evaluate_only else None
    if dist_utils.is_main_process() and r.previous is None:
        atomic_write_text(cfg.dump(), save_dir / "config.yaml")
    logger.info("config: %s (hash %s); output: %s", config_file or "<defaults>", config_hash(cfg), save_dir)
    set_seed(cfg.train.seed, cfg.train.deterministic)
    register()
    main = dist_utils.is_main_process()
    r.saved = cfg.model.load_weights or (str(latest_loadable_checkpoint(save_dir, move_aside=main) or "")
                                         if r.evaluate_only else "")
    return r


def _build(r: _Run) -> None:
    """Data manager, engine (set up for this run) and what the model starts from."""
    cfg, family = r.cfg, r.family
    r.dm = family.build_datamanager(cfg, use_gpu=r.device.type == "cuda", evaluate_only=r.evaluate_only)
    if r.distributed:
        distribute_train_loader(cfg, r.dm)
    r.engine = family.build_engine(cfg, r.dm, r.device, r.distributed, encoder_only=r.encoder_only,
                                   load_init=r.load_init)
    family.prepare_engine(cfg, r.dm, r.engine, r.device, r.evaluate_only)
    # Same initial weights on every rank (seeded above); from here each rank's augmentations differ.
    set_seed(cfg.train.seed + dist_utils.rank(), cfg.train.deterministic)
    r.engine.setup(device=r.device, save_dir=str(r.save_dir), eval_kwargs=eval_kwargs(cfg),
                   print_freq=cfg.train.print_freq, checkpoint_period=cfg.train.checkpoint_period,
                   keep_checkpoints=cfg.train.keep_checkpoints, ddp=r.distributed,
                   find_unused_parameters=family.find_unused_parameters(cfg),
                   eval_hooks=[VisrankHook(cfg.test.visrank_topk)] if cfg.test.visrank else [])
    r.init, r.init_file = family.initial_weights(cfg, r.load_init)


def _evaluate_saved(r: _Run) -> None:
    """Evaluate ``model.load_weights``, else the run folder's latest checkpoint, else the initial model."""
    if r.cfg.model.load_weights:
        r.weights_file = r.family.load_config_weights(r.engine, r.cfg)
    elif r.saved:
        r.weights_file = r.saved
        r.family.load_saved(r.engine, r.saved)
    else:
        logger.warning("--eval-only without model.load_weights and no checkpoint in %s: "
                       "evaluating the initial model", r.save_dir)
    if r.weights_file:
        r.init = f"weights:{Path(r.weights_file).name}"
    r.results = r.engine.evaluate()
    r.epochs = 0


def _train(r: _Run) -> None:
    """Train from ``model.load_weights`` or a resumed checkpoint (``model.resume``), evaluating as configured."""
    cfg = r.cfg
    if cfg.model.load_weights:
        r.family.load_config_weights(r.engine, cfg)
        r.init = f"weights:{Path(cfg.model.load_weights).name}"
    resume = cfg.model.resume
    if resume == "auto":
        ckpt = latest_loadable_checkpoint(r.save_dir, move_aside=dist_utils.is_main_process())
        resume = str(ckpt) if ckpt else ""
        if not ckpt:
            logger.info("--resume: no checkpoint in %s yet, starting from scratch", r.save_dir)
    start_epoch = r.engine.resume(resume) if resume else 0
    r.results = r.engine.fit(start_epoch, cfg.train.max_epoch, eval_freq=cfg.test.eval_freq,
                             start_eval=cfg.test.start_eval, fixbase_epoch=cfg.train.fixbase_epoch,
                             open_layers=list(cfg.train.open_layers))
    r.epochs = cfg.train.max_epoch
    r.weights_file = str(latest_checkpoint(r.save_dir) or "") or None


def _record(r: _Run) -> dict[str, Any]:
    """Write ``results.json`` (merged into the previous one when evaluating a run folder again)."""
    cfg, save_dir = r.cfg, r.save_dir
    protocol = protocol_of(cfg)
    record = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run_name": save_dir.name,
        "model": r.family.model_name(cfg),
        "loss": r.family.loss_label(cfg),
        "protocol": protocol,
        "results": r.results,
        "init": r.init,
        "init_weights": _checkpoint_entry(r.init_file, save_dir),
        "seed": int(cfg.train.seed),
        "config_file": r.config_file,
        "config_hash": config_hash(cfg),
        "command": shlex.join(r.command),
        "argv": r.command,
        "checkpoint": _checkpoint_entry(r.weights_file, save_dir),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "device": device_description(r.device),
        "wall_time_s": round(time.time() - r.t_start, 2),
        "epochs": r.epochs,
        "num_train_pids": r.dm.num_train_pids,
        "status": _status(r.results, protocol["targets"]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(r.family.record_fields(cfg))
    if r.distributed:
        record["world_size"] = dist_utils.world_size()
    if r.previous is not None:
        record = _merge_evaluation(r.previous, record)
    atomic_write_json(record, save_dir / "results.json")
    logger.info("results written to %s", save_dir / "results.json")
    return record


def _merge_evaluation(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Add an evaluation's targets to a run's record; keep its training provenance.

    Targets evaluated now replace the same targets' old values (which are kept under
    ``evaluations``); other targets stay as they were.
    """
    merged = dict(previous)
    old_results = dict(previous.get("results") or {})
    merged["results"] = {**old_results, **new["results"]}
    proto = dict(previous.get("protocol") or new["protocol"])
    targets = list(proto.get("targets") or [])
    targets += [t for t in new["protocol"]["targets"] if t not in targets]
    proto["targets"] = targets
    new_key = new["protocol"]["key"].split("->", 1)
    if len(new_key) == 2 and "->" in str(proto.get("key", "")):
        src = str(proto["key"]).split("->", 1)[0]
        proto["key"] = f"{src}->{'+'.join(DATASET_CODES.get(t, t) for t in targets)}"
    merged["protocol"] = proto
    merged["schema_version"] = RESULTS_SCHEMA_VERSION
    evaluations = list(previous.get("evaluations") or [])
    evaluations.append({
        "targets": list(new["results"]),
        "replaced": {t: old_results[t] for t in new["results"] if t in old_results},
        "command": new["command"], "checkpoint": new["checkpoint"], "git_commit": new["git_commit"],
        "device": new["device"], "wall_time_s": new["wall_time_s"], "created": new["created"],
    })
    merged["evaluations"] = evaluations
    if not previous.get("checkpoint"):
        merged["checkpoint"] = new["checkpoint"]
    merged["status"] = _status(merged["results"], targets)
    return merged


def command_line() -> list[str]:
    """This process's command line as a user would type it (``python tools/train.py ...``, or
    ``dcac-train ...`` under the installed console script)."""
    prog = sys.argv[0] if sys.argv else "tools/train.py"
    if Path(prog).name.startswith("dcac-"):
        return [Path(prog).name, *sys.argv[1:]]
    return ["python", prog, *sys.argv[1:]]
