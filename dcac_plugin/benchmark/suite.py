"""Benchmark suites: protocols x models x seeds resolved to training runs, run resumably.

A training run is (model, sources, seed) evaluated on every target of its protocol: the runner
writes one ``results.json`` with one entry per target, and the leaderboard shows one cell per
source -> target pair. Suite yaml::

    name: demo                          # required
    output_root: output/demo            # optional; default output/<name>; --output overrides
    common_opts: [data.root, data/synthetic, train.max_epoch, 1]   # key value list, every run
    seeds: [1234, 1235, 1236]           # optional; --seeds overrides (default: the config's train.seed)
    allow_random_init: false            # optional; true lets torchreid baselines train from random
                                        # weights on the real benchmark
    launcher: inline                    # optional default launcher: inline | local | slurm
    gpus_per_run: 1                     # optional (local and slurm launchers)
    max_parallel: 1                     # optional (local launcher; slurm: jobs submitted at once)
    slurm:                              # optional sbatch resources of every job (--slurm-* override)
      partition: gpu
      time: "12:00:00"                  # minutes, HH:MM:SS or D-HH:MM:SS
      cpus_per_task: 8
      mem: 64G
      account: null                     # also qos, constraint
      sbatch: {exclusive: true}         # any further sbatch option
      setup: ["module load cuda"]       # shell lines run in the job before the training
    matrix:                             # every protocol x every model
      protocols:
        - name: ma                      # required; run name is <model>_<name>
          sources: [market1501]         # required -> opts data.sources "['market1501']"
          targets: [dukemtmcreid, msmt17]   # required -> opts data.targets (one training, every target)
          config_protocol: ma2ms        # optional: {protocol} in model config paths (default: name)
          data: {msmt17_include_val: true}   # optional extra data.* keys -> data.msmt17_include_val True
          opts: [test.rerank, false]    # optional, any further key value pairs
      models:
        - name: dcac                    # required
          config: dcac_{protocol}       # required; a config name (dcac_plugin.configs) or a yaml path
          opts: [train.max_epoch, 2]    # optional
    runs:                               # optional explicit runs (alone or next to a matrix)
      - name: osnet_sanity              # required, unique within the suite
        config: baselines/osnet_x1_0_softmax
        protocol: ma                    # optional: a protocol name defined under matrix.protocols
        opts: [...]                     # optional

Opts values are written as a yacs command line would carry them: strings unchanged, numbers and
booleans with ``repr`` (``1``, ``True``), lists as Python literals (``"['market1501']"``).

Each run resolves to ``argv = ['--config-file', config, *common_opts, *model/run opts,
('train.seed', seed), *protocol opts, 'data.save_dir', <output_root>/<run_name>]`` -- the
protocol's data keys come last so every model of a protocol gets the same data configuration.
Run names are ``<model>_<protocol>`` for a single seed and ``<model>_<protocol>_s<seed>`` when
several seeds are asked; ``train.seed`` is passed only when seeds are given.

:func:`run_suite` runs every selected entry through a launcher
(:mod:`dcac_plugin.benchmark.launchers`). Per run it skips a finished run (``results.json`` with
status ok, never rerun) and a failed one (``failed.json``, or a ``results.json`` of another status;
rerun with ``retry_failed``), claims the run atomically (:mod:`dcac_plugin.benchmark.claims`) so
that two runners never train it twice, starts it, records a failure in ``failed.json`` and
carries on.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcac_plugin.benchmark import claims
from dcac_plugin.benchmark.cost import RunCost, throughput_for, train_images
from dcac_plugin.benchmark.entries import RunEntry, entry_config
from dcac_plugin.benchmark.launchers import (
    LAUNCHERS,
    SLURM_KEYS,
    InlineLauncher,
    Launcher,
    LauncherError,
    Outcome,
    SlurmSettings,
    parse_slurm_time,
    sacct_state,
    squeue_state,
)
from dcac_plugin.benchmark.runfiles import atomic_write_json, write_failure
from dcac_plugin.config import ConfigError, read_yaml
from dcac_plugin.configs import resolve
from dcac_plugin.runfolder import FAILED_FILE, RESULTS_FILE, clear_failure, results_state

logger = logging.getLogger(__name__)

__all__ = ["FAILED_FILE", "RESULTS_FILE", "SUMMARY_FILE", "Protocol", "RunEntry", "Suite", "SuiteError",
           "SuiteSummary", "check_random_init", "entry_config", "load_suite", "parse_seeds", "parse_suite",
           "plan_costs", "run_suite", "run_status", "select"]

SUMMARY_FILE = "suite_summary.json"


class SuiteError(ValueError):
    """A suite file is malformed, or the suite cannot run as asked (the message names the fix)."""


@dataclass(frozen=True)
class Protocol:
    """One data protocol of a suite: one training on ``sources``, evaluated on every target."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    opts: tuple[str, ...] = ()
    config_name: str | None = None

    def as_opts(self) -> list[str]:
        """The yacs key/value list that applies this protocol."""
        return ["data.sources", _opt_str(list(self.sources)), "data.targets", _opt_str(list(self.targets)),
                *self.opts]

    @property
    def config_key(self) -> str:
        """What ``{protocol}`` in a model's config path becomes."""
        return self.config_name or self.name


@dataclass
class Suite:
    """A parsed suite file (see the module docstring for the format)."""

    name: str
    output_root: str | None
    common_opts: tuple[str, ...]
    protocols: dict[str, Protocol]
    models: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    path: Path | None = None
    seeds: tuple[int, ...] | None = None
    allow_random_init: bool = False
    launcher: str = "inline"
    gpus_per_run: int | None = None
    max_parallel: int | None = None
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def root(self, output_root: str | Path | None = None) -> Path:
        """Where the runs write: ``output_root``, else the suite's, else ``output/<name>``."""
        return Path(output_root or self.output_root or Path("output") / self.name)

    def entries(self, output_root: str | Path | None = None,
                seeds: Sequence[int] | None = None) -> list[RunEntry]:
        """Resolve the suite into runs (matrix first, protocol-major, then explicit runs; seeds innermost).

        Args:
            output_root: overrides the suite's ``output_root`` (default ``output/<name>``).
            seeds: overrides the suite's ``seeds``.

        Raises:
            SuiteError: duplicate run names or seeds, or an explicit run naming an unknown protocol.
        """
        root = self.root(output_root)
        seed_list: Sequence[int | None] = _check_seeds(seeds, self._where()) if seeds is not None else \
            (self.seeds or (None,))
        out = [*self._matrix_entries(root, seed_list), *self._explicit_entries(root, seed_list)]
        seen: set[str] = set()
        for e in out:
            if e.run_name in seen:
                raise SuiteError(f"{self._where()}: run name '{e.run_name}' occurs twice; give runs "
                                 f"unique names")
            seen.add(e.run_name)
        return out

    def _matrix_entries(self, root: Path, seed_list: Sequence[int | None]) -> list[RunEntry]:
        """Every protocol x every model (protocol-major)."""
        out: list[RunEntry] = []
        for proto in self.protocols.values():
            for model in self.models:
                cfg = model["config"].replace("{protocol}", proto.config_key)
                out += _expand(root, seed_list, f"{model['name']}_{proto.name}", cfg,
                               (*self.common_opts, *model["opts"]), proto, model["name"])
        return out

    def _explicit_entries(self, root: Path, seed_list: Sequence[int | None]) -> list[RunEntry]:
        """The ``runs:`` list, each with its protocol (when it names one)."""
        out: list[RunEntry] = []
        for run in self.runs:
            proto = None
            pname = run.get("protocol")
            if pname is not None:
                if pname not in self.protocols:
                    raise SuiteError(f"{self._where()}: run '{run['name']}' names protocol '{pname}', which "
                                     f"is not defined under matrix.protocols ({sorted(self.protocols)})")
                proto = self.protocols[pname]
            cfg = run["config"].replace("{protocol}", proto.config_key) if proto else run["config"]
            out += _expand(root, seed_list, run["name"], cfg, (*self.common_opts, *run["opts"]), proto, run["name"])
        return out

    def _where(self) -> str:
        return str(self.path) if self.path else f"suite '{self.name}'"


def _expand(root: Path, seed_list: Sequence[int | None], base: str, cfg: str, head: tuple[str, ...],
            proto: Protocol | None, model: str) -> list[RunEntry]:
    """One run per seed (``<base>_s<seed>`` when there are several seeds)."""
    several = len(seed_list) > 1
    out = []
    for seed in seed_list:
        name = f"{base}_s{seed}" if several else base
        seed_opts = ("train.seed", str(seed)) if seed is not None else ()
        opts = (*head, *seed_opts, *(proto.as_opts() if proto else ()))
        out.append(RunEntry(name, cfg, opts, root / name, proto.name if proto else None, model, seed,
                            proto.targets if proto else ()))
    return out


def _opt_str(value: Any) -> str:
    """A yaml value as a yacs command-line string (lists as Python literals)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr([_literal(v) for v in value])
    raise SuiteError(f"opts value {value!r} ({type(value).__name__}) cannot be passed on a yacs command line")


def _literal(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_literal(v) for v in value]
    raise SuiteError(f"list element {value!r} cannot be passed on a yacs command line")


def _opts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise SuiteError(f"{where}: opts must be a flat list of key value pairs (even length), got {value!r}")
    out = []
    for i, v in enumerate(value):
        if i % 2 == 0 and not isinstance(v, str):
            raise SuiteError(f"{where}: opts key {v!r} must be a string like 'train.max_epoch'")
        out.append(_opt_str(v))
    return tuple(out)


def _need(d: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(d, dict):
        raise SuiteError(f"{where}: expected a mapping, got {d!r}")
    if key not in d:
        raise SuiteError(f"{where}: missing required key '{key}'")
    if not isinstance(d[key], typ) or (typ is str and not d[key]):
        raise SuiteError(f"{where}: '{key}' must be a non-empty {typ.__name__}, got {d[key]!r}")
    return d[key]


def _names(d: dict, key: str, where: str) -> tuple[str, ...]:
    val = _need(d, key, list, where)
    if not val or not all(isinstance(v, str) and v for v in val):
        raise SuiteError(f"{where}: '{key}' must be a non-empty list of dataset names, got {val!r}")
    return tuple(val)


def _check_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise SuiteError(f"{where}: seeds must be a non-empty list of integers, e.g. [1234, 1235, 1236]")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise SuiteError(f"{where}: seeds must be non-negative integers, got {list(seeds)!r}")
    dup = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if dup:
        raise SuiteError(f"{where}: seed(s) {dup} occur more than once in {list(seeds)}; each seed is one run "
                         f"folder, list every seed once")
    return tuple(seeds)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1234,1235"`` (the ``--seeds`` flag) -> ``(1234, 1235)``.

    Raises:
        SuiteError: not a comma list of distinct non-negative integers.
    """
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SuiteError(f"--seeds '{text}': give integers separated by commas, e.g. --seeds 1234,1235") from None
    return _check_seeds(seeds, "--seeds")


_SUITE_KEYS = {"name", "output_root", "common_opts", "matrix", "runs", "description", "seeds",
               "allow_random_init", "launcher", "gpus_per_run", "max_parallel", "slurm"}
_PROTOCOL_KEYS = {"name", "sources", "targets", "data", "opts", "config_protocol"}
_MODEL_KEYS = {"name", "config", "opts"}
_RUN_KEYS = {"name", "config", "opts", "protocol"}


def _no_unknown(d: Any, allowed: set[str], where: str) -> None:
    if isinstance(d, dict):
        unknown = set(d) - allowed
        if unknown:
            raise SuiteError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _count(data: dict, key: str, where: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SuiteError(f"{where}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_slurm(block: Any, where: str) -> SlurmSettings:
    if block is None:
        return SlurmSettings()
    if not isinstance(block, dict):
        raise SuiteError(f"{where}: 'slurm' must be a mapping of {list(SLURM_KEYS)}")
    _no_unknown(block, set(SLURM_KEYS), f"{where}: slurm")
    for key in ("partition", "mem", "account", "qos", "constraint"):
        if block.get(key) is not None and not isinstance(block[key], str):
            raise SuiteError(f"{where}: slurm.{key} must be a string, got {block[key]!r}")
    sbatch = block.get("sbatch") or {}
    if not isinstance(sbatch, dict):
        raise SuiteError(f"{where}: slurm.sbatch must map sbatch options to values, e.g. {{exclusive: true}}")
    setup = block.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(x, str) for x in setup):
        raise SuiteError(f"{where}: slurm.setup must be a list of shell lines")
    try:
        minutes = parse_slurm_time(block.get("time"))
    except ValueError as e:
        raise SuiteError(f"{where}: {e}") from None
    return SlurmSettings(partition=block.get("partition"), time=minutes,
                         cpus_per_task=_count(block, "cpus_per_task", f"{where}: slurm", 1), mem=block.get("mem"),
                         account=block.get("account"), qos=block.get("qos"), constraint=block.get("constraint"),
                         sbatch=dict(sbatch), setup=list(setup))


def _output_root(data: dict, where: str) -> str | None:
    output_root = data.get("output_root")
    if output_root is not None and not isinstance(output_root, str):
        raise SuiteError(f"{where}: 'output_root' must be a string path")
    return output_root


def _allow_random_init(data: dict, where: str) -> bool:
    allow = data.get("allow_random_init", False)
    if not isinstance(allow, bool):
        raise SuiteError(f"{where}: 'allow_random_init' must be true or false, got {allow!r}")
    return allow


def _launcher_name(data: dict, where: str) -> str:
    launcher = data.get("launcher") or "inline"
    if launcher not in LAUNCHERS:
        raise SuiteError(f"{where}: unknown launcher '{launcher}'; use one of {list(LAUNCHERS)}")
    return launcher


def _matrix(data: dict, where: str) -> dict:
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict) or set(matrix) - {"protocols", "models"}:
        raise SuiteError(f"{where}: 'matrix' must be a mapping with 'protocols' and 'models' lists")
    return matrix


def _parse_protocol(p: Any, pw: str, defined: dict[str, Protocol]) -> Protocol:
    """One ``matrix.protocols`` entry (``pw`` names it in messages)."""
    pname = _need(p, "name", str, pw)
    _no_unknown(p, _PROTOCOL_KEYS, pw)
    if pname in defined:
        raise SuiteError(f"{pw}: protocol name '{pname}' occurs twice")
    data_keys = p.get("data") or {}
    if not isinstance(data_keys, dict):
        raise SuiteError(f"{pw}: 'data' must map data.* keys to values, got {data_keys!r}")
    extra: list[str] = []
    for k, v in data_keys.items():
        extra += [f"data.{k}", _opt_str(v)]
    cfg_name = p.get("config_protocol")
    if cfg_name is not None and (not isinstance(cfg_name, str) or not cfg_name):
        raise SuiteError(f"{pw}: 'config_protocol' must be a protocol name such as ma2ms")
    targets = _names(p, "targets", pw)
    if len(set(targets)) != len(targets):
        raise SuiteError(f"{pw}: a target occurs twice in {list(targets)}")
    return Protocol(pname, _names(p, "sources", pw), targets, (*extra, *_opts(p.get("opts"), pw)), cfg_name)


def _parse_protocols(matrix: dict, where: str) -> dict[str, Protocol]:
    protocols: dict[str, Protocol] = {}
    for i, p in enumerate(matrix.get("protocols") or []):
        proto = _parse_protocol(p, f"{where}: matrix.protocols[{i}]", protocols)
        protocols[proto.name] = proto
    return protocols


def _parse_models(matrix: dict, where: str) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = []
    for i, m in enumerate(matrix.get("models") or []):
        mw = f"{where}: matrix.models[{i}]"
        _no_unknown(m, _MODEL_KEYS, mw)
        models.append({"name": _need(m, "name", str, mw), "config": _need(m, "config", str, mw),
                       "opts": _opts(m.get("opts"), mw)})
    return models


def _parse_runs(data: dict, where: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for i, r in enumerate(data.get("runs") or []):
        rw = f"{where}: runs[{i}]"
        _no_unknown(r, _RUN_KEYS, rw)
        proto = r.get("protocol") if isinstance(r, dict) else None
        if proto is not None and not isinstance(proto, str):
            raise SuiteError(f"{rw}: 'protocol' must be a protocol name")
        runs.append({"name": _need(r, "name", str, rw), "config": _need(r, "config", str, rw),
                     "opts": _opts(r.get("opts"), rw), "protocol": proto})
    return runs


def parse_suite(data: Any, path: str | Path | None = None) -> Suite:
    """Validate a decoded suite mapping.

    Raises:
        SuiteError: naming the file and the offending key.
    """
    where = str(path) if path else "<suite>"
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: a suite file must hold a mapping")
    _no_unknown(data, _SUITE_KEYS, where)
    name = _need(data, "name", str, where)
    output_root = _output_root(data, where)
    common = _opts(data.get("common_opts"), f"{where}: common_opts")
    seeds = _check_seeds(data["seeds"], where) if data.get("seeds") is not None else None
    allow = _allow_random_init(data, where)
    launcher = _launcher_name(data, where)
    matrix = _matrix(data, where)
    protocols = _parse_protocols(matrix, where)
    models = _parse_models(matrix, where)
    if models and not protocols:
        raise SuiteError(f"{where}: matrix.models is given but matrix.protocols is empty")
    runs = _parse_runs(data, where)
    if not models and not runs:
        raise SuiteError(f"{where}: the suite defines no runs (give matrix.protocols + matrix.models "
                         f"and/or runs)")
    return Suite(name, output_root, common, protocols, models, runs, Path(path) if path else None, seeds,
                 allow, launcher, _count(data, "gpus_per_run", where, 0), _count(data, "max_parallel", where, 1),
                 _parse_slurm(data.get("slurm"), where))


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite yaml: a file, or a suite name (``demo``: :mod:`dcac_plugin.configs`).

    Raises:
        FileNotFoundError: neither a file nor a suite name.
        SuiteError: the file is malformed.
    """
    try:
        path = resolve(path, kind="suite")
    except ConfigError as e:
        raise FileNotFoundError(str(e)) from None
    return parse_suite(read_yaml(path, SuiteError, "suite file"), path)


# ------------------------------------------------------------------------------- checks and costs


def _config_error(entry: RunEntry) -> str | None:
    """Why a run's config (a path, or a config name) cannot be read, or ``None`` when it can."""
    try:
        resolve(entry.config_file)
    except ConfigError as e:
        return str(e)
    return None


def check_random_init(entries: Sequence[RunEntry]) -> str | None:
    """Runs that would train a torchreid baseline from random weights on the real benchmark.

    A torchreid model (not ``dcac_*`` / ``clip_reid_*``) on a ``data.root`` without the generated
    benchmark's ``SYNTHETIC.json`` must start from its ImageNet weights: ``model.pretrained True``
    and an existing ``model.pretrained_path``. Runs whose config file is missing are left to fail
    on their own.

    Returns:
        ``None`` when every run is fine; otherwise one message naming the runs, the missing files
        and the fix.
    """
    # local: these import torch and torchreid; the suite runner stays torch-free (dry runs, the leaderboard)
    from dcac_plugin.families import family_for
    from dcac_plugin.runner import protocol_of

    problems: dict[str, list[str]] = {}
    for e in entries:
        if _config_error(e):
            continue
        try:
            cfg = entry_config(e)
        except ConfigError:
            continue  # the run fails on its own, with the config's message
        if not family_for(cfg).expects_imagenet_init or protocol_of(cfg)["benchmark"] != "real":
            continue
        if not cfg.model.pretrained:
            why = "model.pretrained is False"
        elif not cfg.model.pretrained_path or not Path(cfg.model.pretrained_path).is_file():
            why = f"the ImageNet weight file '{cfg.model.pretrained_path}' (model.pretrained_path) does not exist"
        else:
            continue
        problems.setdefault(why, []).append(e.run_name)
    if not problems:
        return None
    n = sum(len(v) for v in problems.values())
    lines = [f"{n} run(s) would train a torchreid baseline from random weights on the real benchmark:"]
    lines += [f"  - {why}: {', '.join(runs)}" for why, runs in problems.items()]
    lines.append("Fix: put torchreid's ImageNet-pretrained weights at model.pretrained_path (python "
                 "tools/fetch_weights.py --only baselines downloads and verifies them), or set allow_random_init: "
                 "true in the suite to train them from scratch on purpose")
    return "\n".join(lines)


def plan_costs(entries: Sequence[RunEntry], gpus_per_run: int = 1,
               throughput: dict[str, float] | None = None) -> list[Any]:
    """:class:`~dcac_plugin.benchmark.cost.RunCost` per run (epochs and images from each run's config)."""
    out = []
    for e in entries:
        epochs = images = None
        targets = e.targets
        if not _config_error(e):
            try:
                cfg = entry_config(e)
            except ConfigError as exc:
                logger.warning("%s: %s (no cost estimate)", e.run_name, exc)
            else:
                epochs, images = int(cfg.train.max_epoch), train_images(cfg)
                targets = tuple(cfg.data.targets)
        out.append(RunCost(e.run_name, e.model or e.run_name, targets, epochs, images, gpus_per_run,
                           throughput_for(e.model or e.run_name, throughput or {})))
    return out


# --------------------------------------------------------------------------------------- running


@dataclass
class SuiteSummary:
    """What :func:`run_suite` did.

    Attributes:
        name: suite name.
        output_root: where the runs write.
        planned: every selected run (after ``only``), in order.
        ran: runs executed successfully now.
        skipped: runs whose ``results.json`` (status ok) already existed.
        skipped_failed: runs that failed before (``failed.json``), not retried without ``retry_failed``.
        busy: run name -> owner of the live claim of another runner that is running it.
        submitted: run name -> Slurm job id of runs left running (``--no-wait``).
        failed: run name -> error message.
        times: run name -> wall seconds of runs executed now (successful or failed).
        dry_run: nothing was executed.
        launcher: the launcher's name.
        total_time_s: wall seconds of the whole call.
    """

    name: str
    output_root: Path
    planned: list[RunEntry] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    skipped_failed: list[str] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    launcher: str = "inline"
    total_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to ``<output_root>/suite_summary.json``)."""
        return {"name": self.name, "output_root": str(self.output_root), "dry_run": self.dry_run,
                "launcher": self.launcher, "planned": [e.run_name for e in self.planned], "ran": self.ran,
                "skipped": self.skipped, "skipped_failed": self.skipped_failed, "busy": self.busy,
                "submitted": self.submitted, "failed": self.failed,
                "times_s": {k: round(v, 3) for k, v in self.times.items()},
                "total_time_s": round(self.total_time_s, 3)}

    def text(self) -> str:
        """One-paragraph human summary."""
        head = (f"suite '{self.name}' ({self.output_root}): {len(self.planned)} planned, {len(self.ran)} ran, "
                f"{len(self.skipped)} skipped (results exist), {len(self.failed)} failed")
        if self.skipped_failed:
            head += f", {len(self.skipped_failed)} failed before (not retried; --retry-failed reruns them)"
        if self.busy:
            head += f", {len(self.busy)} running elsewhere"
        if self.submitted:
            head += f", {len(self.submitted)} submitted (--status follows them)"
        lines = [head + f", {self.total_time_s:.1f} s"]
        for name, t in self.times.items():
            state = "FAILED" if name in self.failed else "ok"
            lines.append(f"  {name}: {state} in {t:.1f} s")
        for name, err in self.failed.items():
            lines.append(f"  {name} failed: {err} (see {self.output_root / name / FAILED_FILE})")
        for name, owner in self.busy.items():
            lines.append(f"  {name}: claimed by {owner}")
        for name, job in self.submitted.items():
            lines.append(f"  {name}: Slurm job {job}")
        return "\n".join(lines)


def select(entries: list[RunEntry], only: str | Sequence[str] | None) -> list[RunEntry]:
    """Keep the entries whose run name matches any fnmatch pattern in ``only`` (all when ``None``)."""
    if only is None:
        return list(entries)
    patterns = [only] if isinstance(only, str) else list(only)
    return [e for e in entries if any(fnmatch.fnmatchcase(e.run_name, p) for p in patterns)]


def run_suite(
    suite: Suite,
    runner: Callable[[list[str]], Any] | None = None,
    only: str | Sequence[str] | None = None,
    dry_run: bool = False,
    output_root: str | Path | None = None,
    *,
    launcher: Launcher | None = None,
    seeds: Sequence[int] | None = None,
    retry_failed: bool = False,
    stale_after: float = claims.DEFAULT_STALE_AFTER_S,
    heartbeat_s: float = claims.DEFAULT_HEARTBEAT_S,
    poll_s: float = 2.0,
    check_data: str | None = None,
) -> SuiteSummary:
    """Run every selected entry of ``suite`` through ``launcher`` (default: ``runner`` in this process).

    Per entry: skip when ``results.json`` says ok; skip a failed run (``failed.json`` or a
    ``results.json`` of another status) unless ``retry_failed``; claim the run (skip it while
    another runner's live claim holds it; take over a stale claim); check the results again; start
    it. A failure (exception, non-zero exit, no or incomplete ``results.json``, a Slurm job that
    died) is recorded in ``<output_dir>/failed.json`` (atomic; error, traceback or log tail, argv)
    and the suite moves on; a later success removes ``failed.json``. The claim is released after the
    result files are written, so a runner killed at any point loses no finished result.

    Args:
        suite: from :func:`load_suite`.
        runner: the training entry point for the inline launcher, called with the run's argv.
        only: fnmatch pattern(s) on run names; ``None`` selects all.
        dry_run: resolve the plan, execute nothing, write nothing.
        output_root: overrides the suite's output root.
        launcher: where the runs go (:mod:`dcac_plugin.benchmark.launchers`).
        seeds: overrides the suite's seeds.
        retry_failed: rerun runs that failed before.
        stale_after: seconds without heartbeat after which another runner's claim is taken over.
        heartbeat_s: seconds between heartbeats of this runner's claims.
        poll_s: seconds between two looks at running subprocesses or jobs.
        check_data: before anything starts, check the datasets the runs need
            (:func:`dcac_plugin.data.check.check_entries`, images ``'quick'`` / ``'full'`` / ``'none'``);
            ``None`` skips the check.

    Returns:
        The :class:`SuiteSummary` (also written to ``<output_root>/suite_summary.json`` unless ``dry_run``).

    Raises:
        SuiteError: a torchreid baseline would train from random weights on the real benchmark and the
            suite does not set ``allow_random_init``; or ``check_data`` found a dataset missing or incomplete.
        LauncherError: the launcher cannot work here.
    """
    t0 = time.perf_counter()
    entries = select(suite.entries(output_root, seeds), only)
    launcher = _default_launcher(launcher, runner, dry_run)
    summary = SuiteSummary(name=suite.name, output_root=suite.root(output_root), planned=entries, dry_run=dry_run,
                           launcher=launcher.name)
    if not entries:
        logger.warning("suite '%s': no run matches %r", suite.name, only)
    if dry_run:
        _plan(summary, entries, retry_failed)
        summary.total_time_s = time.perf_counter() - t0
        return summary
    _check_before_start(suite, entries, retry_failed, check_data)
    _SuiteRun(summary, launcher, retry_failed, stale_after, heartbeat_s, poll_s).run(entries)
    summary.total_time_s = time.perf_counter() - t0
    atomic_write_json(summary.as_dict(), summary.output_root / SUMMARY_FILE)
    logger.info("%s", summary.text())
    return summary


def _default_launcher(launcher: Launcher | None, runner: Callable[[list[str]], Any] | None,
                      dry_run: bool) -> Launcher:
    """``launcher``, else the inline launcher of ``runner`` (a no-op runner for a dry run)."""
    if launcher is not None:
        return launcher
    if runner is None and not dry_run:
        raise ValueError("run_suite needs a runner (the training entry point) or a launcher")
    return InlineLauncher(runner or (lambda argv: None))


def _would_skip(state: str | None, retry_failed: bool) -> bool:
    """A run in ``state`` (:func:`~dcac_plugin.runfolder.results_state`) is not started."""
    return state == "done" or (state in ("failed", "incomplete") and not retry_failed)


def _plan(summary: SuiteSummary, entries: Sequence[RunEntry], retry_failed: bool) -> None:
    """Dry run: sort the entries into skipped (done) and skipped-failed as a real run would."""
    for e in entries:
        state, _ = results_state(e.output_dir)
        if state == "done":
            summary.skipped.append(e.run_name)
        elif _would_skip(state, retry_failed):
            summary.skipped_failed.append(e.run_name)


def _check_before_start(suite: Suite, entries: Sequence[RunEntry], retry_failed: bool,
                        check_data: str | None) -> None:
    """Refuse, before anything starts, baselines without ImageNet weights and (``check_data``) missing data.

    Raises:
        SuiteError: naming the runs or datasets and the fix.
    """
    if not suite.allow_random_init:
        problem = check_random_init(entries)
        if problem:
            raise SuiteError(problem)
    if check_data:
        from dcac_plugin.data.check import check_entries  # local: imports torch and torchreid (see check_random_init)

        pending = [e for e in entries if not _would_skip(results_state(e.output_dir)[0], retry_failed)]
        problem = check_entries(pending, images=check_data, suite_path=str(suite.path) if suite.path else None)
        if problem:
            raise SuiteError(problem)


@dataclass
class _Active:
    """A run started by the launcher and not yet finished."""

    entry: RunEntry
    claim: claims.Claim
    handle: Any
    start: float
    tag: str


class _SuiteRun:
    """One :func:`run_suite` call: the runs waiting, the runs active in the launcher, and their claims."""

    def __init__(self, summary: SuiteSummary, launcher: Launcher, retry_failed: bool, stale_after: float,
                 heartbeat_s: float, poll_s: float):
        self.summary, self.launcher = summary, launcher
        self.retry_failed, self.stale_after, self.poll_s = retry_failed, stale_after, poll_s
        self.job_query = squeue_state  # asked only about claims that name a Slurm job
        self.beat = claims.Heartbeat(heartbeat_s)
        self.active: dict[str, _Active] = {}

    def run(self, entries: Sequence[RunEntry]) -> None:
        """Start the entries as capacity allows, follow them to their end; on any exit free what is held."""
        queue = list(enumerate(entries, 1))
        self.beat.start()
        try:
            while queue or self.active:
                while queue and len(self.active) < self.launcher.capacity:
                    i, entry = queue.pop(0)
                    self._start(entry, f"[{i}/{len(entries)}] {entry.run_name}")
                if not self.launcher.waits:
                    self._leave_to_jobs()
                    continue
                if not self._poll() and self.active:
                    time.sleep(self.poll_s)
        finally:
            self._stop()

    def _take(self, entry: RunEntry, tag: str) -> claims.Claim | None:
        """The run's claim, or ``None`` (recorded in the summary) when it is done, failed before or busy."""
        state, _ = results_state(entry.output_dir)
        if state == "done":
            logger.info("%s: skipped, %s exists", tag, entry.output_dir / RESULTS_FILE)
            self.summary.skipped.append(entry.run_name)
            return None
        if _would_skip(state, self.retry_failed):
            logger.info("%s: skipped, it failed before (%s); --retry-failed reruns it", tag,
                        entry.output_dir / (FAILED_FILE if state == "failed" else RESULTS_FILE))
            self.summary.skipped_failed.append(entry.run_name)
            return None
        got = claims.acquire(entry.output_dir, self.launcher.name, self.stale_after, self.job_query)
        if not isinstance(got, claims.Claim):
            logger.info("%s: skipped, claimed by %s", tag, got.get("owner"))
            self.summary.busy[entry.run_name] = str(got.get("owner"))
            return None
        again, _ = results_state(entry.output_dir)  # another runner may have finished it meanwhile
        if again == "done" or (_would_skip(again, self.retry_failed) and state != again):
            claims.release(got)
            (self.summary.skipped if again == "done" else self.summary.skipped_failed).append(entry.run_name)
            return None
        return got

    def _start(self, entry: RunEntry, tag: str) -> None:
        """Claim the run and hand it to the launcher; a run that cannot start is finished as failed."""
        claim = self._take(entry, tag)
        if claim is None:
            return
        self.beat.add(claim)
        logger.info("%s: running %s", tag, " ".join(entry.argv()))
        run = _Active(entry, claim, None, time.perf_counter(), tag)
        missing = _config_error(entry)
        if missing:
            self._finish(run, Outcome(False, f"FileNotFoundError: {missing}"))
            return
        try:
            run.handle = self.launcher.start(entry, claim)
        except Exception as exc:  # noqa: BLE001 - e.g. sbatch refused the job: record, carry on
            if isinstance(exc, LauncherError):
                self._free(claim)
                raise
            self._finish(run, Outcome(False, f"{type(exc).__name__}: {exc}"))
            return
        except BaseException:  # interrupted inside an inline run: free the claim at once
            self._free(claim)
            raise
        where = self.launcher.describe(run.handle)
        if where:
            logger.info("%s: started (%s)", tag, where)
        self.active[entry.run_name] = run

    def _free(self, claim: claims.Claim) -> None:
        self.beat.discard(claim)
        claims.release(claim)

    def _finish(self, run: _Active, outcome: Outcome) -> None:
        """Record how the run ended (``failed.json`` for a failure) and release its claim."""
        elapsed = time.perf_counter() - run.start
        name, summary = run.entry.run_name, self.summary
        if outcome.superseded:
            summary.busy[name] = "another runner (took the run over)"
            logger.warning("%s: %s", run.tag, outcome.error)
        elif outcome.ok:
            clear_failure(run.entry.output_dir)
            summary.ran.append(name)
            summary.times[name] = elapsed
            logger.info("%s: done in %.1f s", run.tag, elapsed)
        else:
            if not outcome.recorded:
                write_failure(run.entry.output_dir, name, run.entry.argv(), outcome.error, outcome.traceback,
                              elapsed, launcher=self.launcher.name)
            summary.failed[name] = outcome.error
            summary.times[name] = elapsed
            logger.error("%s: FAILED after %.1f s: %s", run.tag, elapsed, outcome.error)
        self._free(run.claim)

    def _poll(self) -> bool:
        """Finish the active runs that ended; True when any did."""
        finished = False
        for name, run in list(self.active.items()):
            outcome = self.launcher.poll(run.handle)
            if outcome is not None:
                del self.active[name]
                self._finish(run, outcome)
                finished = True
        return finished

    def _leave_to_jobs(self) -> None:
        """Detached Slurm: the jobs own their claims from here."""
        for run in self.active.values():
            self.beat.discard(run.claim)
            self.summary.submitted[run.entry.run_name] = str(run.handle.job.job_id)
        self.active.clear()

    def _stop(self) -> None:
        """Stop the heartbeat; when interrupted, stop what runs here and free the claims for the next runner."""
        self.beat.stop()
        if self.active:
            self.launcher.close()
            for run in self.active.values():
                if not self.launcher.jobs_outlive_runner:
                    claims.release(run.claim)


# ---------------------------------------------------------------------------------------- status


def run_status(entry: RunEntry, stale_after: float = claims.DEFAULT_STALE_AFTER_S) -> dict[str, str]:
    """Where one run stands: ``done``, ``failed``, ``incomplete``, ``running``, ``queued``, ``stale`` or
    ``not started``, with a detail (error, owner, Slurm job id and state)."""
    state, why = results_state(entry.output_dir)
    row = {"run": entry.run_name, "seed": "" if entry.seed is None else str(entry.seed),
           "targets": ",".join(entry.targets), "state": "", "detail": ""}
    if state == "done":
        return {**row, "state": "done"}
    info = claims.read_claim(entry.output_dir / claims.CLAIM_FILE)
    if info is not None:
        job = str(info.get("job_id") or "")
        squeue = squeue_state(job) if job else None
        reason = claims.stale_reason(entry.output_dir / claims.CLAIM_FILE, info, stale_after,
                                     (lambda _j: squeue) if job else None)
        owner = info.get("owner", "?")
        if reason:
            final = sacct_state(job) if job else None
            extra = f"; Slurm says {final}" if final else ""
            return {**row, "state": "stale", "detail": f"{reason}{extra}; the next runner takes it over"}
        if job:
            label = "queued" if squeue == "PENDING" else "running"
            return {**row, "state": label, "detail": f"Slurm job {job} ({squeue or 'squeue unavailable'}), {owner}"}
        return {**row, "state": "running", "detail": str(owner)}
    if state in ("failed", "incomplete"):
        return {**row, "state": state, "detail": why}
    return {**row, "state": "not started", "detail": ""}
