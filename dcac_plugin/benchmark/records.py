"""Result records (``results.json``): schema, loading, per-target expansion, published numbers.

One ``results.json`` is written per evaluated run by :func:`dcac_plugin.runner.run`. Schema
versions 1 and 2 are read (metrics are percentages, e.g. ``23.4`` for 23.4 % mAP)::

    {"schema_version": 1, "run_name": "dcac_ma2ms", "model": "dcac_vit_b16", "method": "DCAC",
     "protocol": {"key": "MA->MS", "kind": "single_source", "sources": ["market1501"],
                  "targets": ["msmt17"], "benchmark": "real", "variants": {...}},
     "results": {"msmt17": {"mAP": 23.4, "rank1": 52.1, "rank5": 66.0, "rank10": 71.2, "mINP": 3.1}},
     "loss": "softmax" | "softmax+triplet" (optional), "config_file": ..., "config_hash": ...,
     "git_commit": ..., "versions": {...}, "device": ..., "wall_time_s": ..., "epochs": ...,
     "status": "ok", "created": "ISO time"}

Version 2 adds (all optional here, so that a partly written record still loads): ``"seed": int``
(``train.seed``), ``"command": "<exact shell command line>"``, ``"argv": [...]`` and
``"checkpoint": {"file": "<path, relative to the run folder or absolute>", "sha256": "<hex>"}``
(``null`` when the run kept no checkpoint). Plugin models add ``"priors": {"clip": {"file", "sha256"},
"sd": {"file", "sha256"}}``: the pretrained weight files the run started from (``"init": "random"``
and empty strings for a random start; ``sd`` only for models with a diffusion branch).

Provenance (:class:`Provenance`) is what the leaderboard shows per reproduced cell: the run folder
(the folder of ``results.json``), its ``config.yaml`` and ``train.log`` when present, the recorded
config hash, command, git commit, device and wall time, and the checkpoint with its sha256. For a
record that predates these keys, what the run folder holds is used instead: the seed from
``config.yaml`` (``train.seed``), the command rebuilt from ``argv`` when only that is recorded, and
the latest ``checkpoint_ep*.pth`` with a sha256 computed here; anything else is unknown (``None``).

A run with several targets is expanded into one :class:`TargetResult` per target. The column key
of a target follows the published tables:

* single source: ``'+'.join(source codes) + '->' + target code``, e.g. ``MA->MS``;
* multi source: the held-out target code (``MA``, ``D``, ``MS``, ``C3``) when the sources are the
  other three of the four standard datasets (leave-one-out); any other multi-source combination is
  keyed like a single-source one (``MA+D->MS``) so it is never confused with leave-one-out.

Dataset codes: market1501 MA, dukemtmcreid D, msmt17 / msmt17_trainval MS, cuhk03_np / cuhk03 C3.
A dataset name outside that list is used verbatim as its own code (a display label only).

Synthetic runs (``protocol.benchmark == "synthetic"``) use the real dataset names but are kept
apart from real results everywhere downstream.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dcac_plugin.config import read_yaml, yaml_error_message
from dcac_plugin.protocols import DATASET_CODES  # noqa: F401  (re-exported)
from dcac_plugin.runfolder import (  # noqa: F401  (SCHEMA_VERSION, SCHEMA_VERSIONS: re-exported)
    CONFIG_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    TRAIN_LOG,
    check_schema_version,
    latest_checkpoint,
    read_results_file,
    recorded_checkpoint,
)
from dcac_plugin.utils.files import file_sha256

logger = logging.getLogger(__name__)

# SCHEMA_VERSION (what the runner writes) and SCHEMA_VERSIONS (what is read): dcac_plugin.runfolder.
#: The four standard DG datasets, in the order the published tables use.
STANDARD_CODES: tuple[str, ...] = ("MA", "D", "MS", "C3")

BENCHMARKS: tuple[str, ...] = ("real", "synthetic")
KINDS: tuple[str, ...] = ("single_source", "multi_source")
METRICS: tuple[str, ...] = ("mAP", "rank1", "rank5", "rank10", "mINP")
REQUIRED_METRICS: tuple[str, ...] = ("mAP", "rank1")

BASELINE_METHOD = "Baseline (CLIP ViT-B/16, no diffusion branch)"
DCAC_METHOD = "DCAC"
#: Exact model name -> method display name (torchreid baselines).
MODEL_METHODS: dict[str, str] = {
    "osnet_x1_0": "OSNet",
    "osnet_ain_x1_0": "OSNet-AIN",
    "osnet_ibn_x1_0": "OSNet-IBN",
    "resnet50": "ResNet-50",
    "osnet_x0_75": "OSNet-x0.75",
    "osnet_x0_5": "OSNet-x0.5",
    "osnet_x0_25": "OSNet-x0.25",
}
#: Preferred row order of reproduced methods (others follow alphabetically).
METHOD_ORDER: tuple[str, ...] = (
    DCAC_METHOD, BASELINE_METHOD, "OSNet", "OSNet-AIN", "OSNet-IBN", "ResNet-50",
)
TRIPLET_SUFFIX = " (triplet)"

PUBLISHED_RESOURCE = "published.yaml"


class RecordError(ValueError):
    """A ``results.json`` (or published-numbers file) is malformed."""


# ----------------------------------------------------------------------------------------------
# names and keys


def dataset_code(name: str) -> str:
    """Short code of a dataset name (``market1501`` -> ``MA``); unknown names map to themselves."""
    return DATASET_CODES.get(name, name)


def protocol_key(kind: str, sources: list[str], target: str) -> str:
    """Column key of one (sources -> target) evaluation, as in the published tables.

    Args:
        kind: ``single_source`` or ``multi_source``.
        sources: training dataset names (torchreid spelling).
        target: the evaluated dataset name.

    Returns:
        ``"MA->MS"`` style for single source (and for non-standard multi-source combinations),
        the held-out target code (``"MS"``) for the standard leave-one-out multi-source protocol.
    """
    src = [dataset_code(s) for s in sources]
    tgt = dataset_code(target)
    if kind == "multi_source" and tgt in STANDARD_CODES:
        others = set(STANDARD_CODES) - {tgt}
        if set(src) == others and len(src) == len(others):
            return tgt
    return "+".join(src) + "->" + tgt


def column_sort_key(key: str) -> tuple:
    """Order columns as the published tables do: by source, then target, in MA, D, MS, C3 order."""

    def idx(code: str) -> tuple[int, str]:
        return (STANDARD_CODES.index(code), "") if code in STANDARD_CODES else (len(STANDARD_CODES), code)

    if key == "average":
        return (2, (), ())
    if "->" not in key:
        return (0, idx(key), ())
    src, tgt = key.split("->", 1)
    return (1, tuple(idx(s) for s in src.split("+")), idx(tgt))


def method_name(model: str, method: str | None = None, loss: str | None = None) -> str:
    """Method display name of a run.

    ``method`` (when the record carries one) wins over the name derived from ``model``:
    ``dcac_*`` -> ``DCAC``, ``clip_reid_*`` -> the CLIP baseline (same string as the published
    numbers), ``osnet_x1_0`` -> ``OSNet``, ``osnet_ain_x1_0`` -> ``OSNet-AIN``, ``osnet_ibn_x1_0``
    -> ``OSNet-IBN``, ``resnet50`` -> ``ResNet-50``, ``osnet_x0_25`` -> ``OSNet-x0.25`` (likewise
    x0.5, x0.75), anything else -> the model name. For a
    torchreid baseline (not DCAC, not the CLIP baseline) trained with ``loss ==
    "softmax+triplet"``, `` (triplet)`` is appended so softmax and triplet runs get separate rows.
    """
    if method:
        name = method
    elif model.startswith("dcac"):
        name = DCAC_METHOD
    elif model.startswith("clip_reid"):
        name = BASELINE_METHOD
    else:
        name = MODEL_METHODS.get(model, model)
    if (
        loss == "softmax+triplet"
        and name not in (DCAC_METHOD, BASELINE_METHOD)
        and not name.endswith(TRIPLET_SUFFIX)
    ):
        name += TRIPLET_SUFFIX
    return name


def method_sort_key(name: str) -> tuple:
    """Row order of reproduced methods: :data:`METHOD_ORDER` first (triplet after softmax)."""
    base = name[: -len(TRIPLET_SUFFIX)] if name.endswith(TRIPLET_SUFFIX) else name
    pos = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (pos, base, name.endswith(TRIPLET_SUFFIX))


# ----------------------------------------------------------------------------------------------
# provenance


@dataclass(frozen=True)
class Provenance:
    """Where one reproduced result comes from; ``None`` means unknown.

    Paths are as found (relative to the working directory when the results folder was given
    relative), never resolved, so that exports stay portable.

    Attributes:
        run_dir: the run folder (the folder holding ``results.json``).
        results_file: the ``results.json`` itself.
        config_yaml: ``<run_dir>/config.yaml`` (the merged config the run used) when it exists.
        config_file: the config file the run was started with (``config_file`` in the record).
        config_hash: hash of the merged config (``config_hash`` in the record).
        command: the exact command line (``command``, else rebuilt from ``argv``).
        git_commit: commit of the code that ran (``-dirty`` when the checkout had changes).
        checkpoint: the checkpoint file (recorded, else the latest ``checkpoint_ep*.pth``).
        checkpoint_sha256: the recorded sha256 (``None``: compute it with :func:`checkpoint_digest`).
        checkpoint_recorded: True when the record names the checkpoint (``checkpoint`` key);
            False when it was looked up in the run folder.
        init: how the model was initialised (``init``: ``random``, ``imagenet:<file>``, ``clip:<file>``...).
        init_file, init_sha256: the initial weight file and its sha256 (``init_weights``).
        train_log: ``<run_dir>/train.log`` when it exists.
        wall_time_s: training + evaluation wall time in seconds.
        device: the device the run used.
        created: ISO time the record was written.
    """

    run_dir: str | None = None
    results_file: str | None = None
    config_yaml: str | None = None
    config_file: str | None = None
    config_hash: str | None = None
    command: str | None = None
    git_commit: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_recorded: bool = False
    train_log: str | None = None
    wall_time_s: float | None = None
    device: str | None = None
    created: str | None = None
    init: str | None = None
    init_file: str | None = None
    init_sha256: str | None = None

    def files(self) -> dict[str, str]:
        """The provenance files that exist on disk now: label -> path (as recorded)."""
        out = {}
        for label, p in (("run folder", self.run_dir), ("config.yaml", self.config_yaml),
                         ("train.log", self.train_log), ("checkpoint", self.checkpoint)):
            if p is not None and Path(p).exists():
                out[label] = p
        return out


def checkpoint_digest(prov: Provenance) -> tuple[str | None, str | None]:
    """The checkpoint's sha256 and where it comes from.

    Returns:
        ``(hex, "recorded")`` when the record carries it, ``(hex, "computed")`` when it is computed
        here from the file, ``(None, None)`` when there is no checkpoint file to hash.
    """
    if prov.checkpoint_sha256:
        return prov.checkpoint_sha256, "recorded"
    if prov.checkpoint is not None and Path(prov.checkpoint).is_file():
        return file_sha256(prov.checkpoint), "computed"
    return None, None


def _optional(obj: dict, key: str, typ: type | tuple, where: str) -> Any:
    """``obj[key]`` when present and not ``None`` (type-checked), else ``None``."""
    val = obj.get(key)
    if val is None:
        return None
    if not isinstance(val, typ) or isinstance(val, bool) and typ is not bool:
        raise RecordError(f"{where}: key '{key}' must be {getattr(typ, '__name__', typ)}, "
                          f"got {type(val).__name__} ({val!r})")
    return val


def _seed_from_config(config_yaml: Path) -> int | None:
    """``train.seed`` of a run's merged ``config.yaml`` (``None`` when it has none).

    Raises:
        RecordError: the file cannot be read or does not parse (``FILE line L column C: ...``).
    """
    cfg = read_yaml(config_yaml, RecordError, "run config")
    seed = (cfg.get("train") or {}).get("seed") if isinstance(cfg, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _command(obj: dict, where: str) -> str | None:
    """The recorded command line, else one rebuilt from the recorded ``argv``."""
    command = _optional(obj, "command", str, where)
    argv = _optional(obj, "argv", list, where)
    if argv is not None and not all(isinstance(a, str) for a in argv):
        raise RecordError(f"{where}: key 'argv' must be a list of strings, got {argv!r}")
    if command is None and argv is not None:
        command = shlex.join(argv)
    return command


def _wall_time(obj: dict, where: str) -> float | None:
    wall = obj.get("wall_time_s")
    if wall is not None and (isinstance(wall, bool) or not isinstance(wall, (int, float))):
        raise RecordError(f"{where}: key 'wall_time_s' must be a number, got {wall!r}")
    return float(wall) if wall is not None else None


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None


def _checkpoint(obj: dict, run_dir: Path | None, where: str) -> tuple[str | None, str | None, bool]:
    """``(file, sha256, recorded)``: the recorded checkpoint, else the run folder's latest one (no sha256)."""
    if "checkpoint" not in obj:
        latest = latest_checkpoint(run_dir) if run_dir is not None else None
        return (str(latest) if latest is not None else None), None, False
    ck = obj["checkpoint"]
    if ck is None:
        return None, None, True
    if not isinstance(ck, dict) or not isinstance(ck.get("file"), str):
        raise RecordError(f"{where}: key 'checkpoint' must be null or an object with a 'file' string "
                          f"(and a 'sha256' string), got {ck!r}")
    sha = ck.get("sha256")
    if sha is not None and not _is_sha256(sha):
        raise RecordError(f"{where}: key 'checkpoint.sha256' must be 64 hex digits, got {sha!r}")
    return str(recorded_checkpoint(obj, run_dir)), (sha.lower() if sha else None), True


def _init_weights(obj: dict, where: str) -> tuple[str | None, str | None]:
    """``(file, sha256)`` of the recorded initial weight file (``init_weights``)."""
    iw = obj.get("init_weights")
    if iw is None:
        return None, None
    if not isinstance(iw, dict) or not isinstance(iw.get("file"), str) or not _is_sha256(iw.get("sha256")):
        raise RecordError(f"{where}: key 'init_weights' must be null or an object with a 'file' string and a "
                          f"'sha256' of 64 hex digits, got {iw!r}")
    return iw["file"], iw["sha256"].lower()


def _provenance(obj: dict, path: Path | None, where: str) -> tuple[Provenance, int | None]:
    """Provenance and seed of a record (see the module docstring for the fallbacks)."""
    seed = _optional(obj, "seed", int, where)
    command = _command(obj, where)
    wall = _wall_time(obj, where)
    run_dir = path.parent if path is not None else None
    ckpt_file, ckpt_sha, recorded = _checkpoint(obj, run_dir, where)
    init_file, init_sha = _init_weights(obj, where)

    def existing(name: str) -> str | None:
        return str(run_dir / name) if run_dir is not None and (run_dir / name).is_file() else None

    config_yaml = existing(CONFIG_FILE)
    if seed is None and config_yaml is not None:
        seed = _seed_from_config(Path(config_yaml))
    prov = Provenance(
        run_dir=str(run_dir) if run_dir is not None else None,
        results_file=str(path) if path is not None else None,
        config_yaml=config_yaml,
        config_file=_optional(obj, "config_file", str, where),
        config_hash=_optional(obj, "config_hash", str, where),
        command=command,
        git_commit=_optional(obj, "git_commit", str, where),
        checkpoint=ckpt_file,
        checkpoint_sha256=ckpt_sha,
        checkpoint_recorded=recorded,
        train_log=existing(TRAIN_LOG),
        wall_time_s=wall,
        device=_optional(obj, "device", str, where),
        created=_optional(obj, "created", str, where),
        init=_optional(obj, "init", str, where),
        init_file=init_file,
        init_sha256=init_sha,
    )
    return prov, seed


# ----------------------------------------------------------------------------------------------
# records


@dataclass
class Record:
    """One validated ``results.json``.

    Attributes:
        run_name: the run's name.
        model: model name (``dcac_vit_b16``, ``osnet_x1_0``, ...).
        method: display name (see :func:`method_name`).
        kind: ``single_source`` or ``multi_source``.
        sources: training dataset names.
        targets: evaluated dataset names.
        benchmark: ``real`` or ``synthetic``.
        results: target name -> metric name -> value (percent).
        path: the file it was read from (``None`` for in-memory records).
        created: ISO creation time ('' when absent).
        seed: ``train.seed`` of the run (``None`` when unknown).
        provenance: where the result comes from (see :class:`Provenance`).
        raw: the whole JSON object.
    """

    run_name: str
    model: str
    method: str
    kind: str
    sources: list[str]
    targets: list[str]
    benchmark: str
    results: dict[str, dict[str, float]]
    path: Path | None = None
    created: str = ""
    seed: int | None = None
    provenance: Provenance = field(default_factory=Provenance)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class TargetResult:
    """One (run, target) pair: the unit the leaderboard aggregates.

    Attributes:
        run_name, method, kind, benchmark: as in :class:`Record`.
        key: column key (see :func:`protocol_key`).
        sources, target: dataset names.
        metrics: metric name -> value (percent); always holds ``mAP`` and ``rank1``.
        path: the record file.
        seed: the run's seed (``None`` when unknown).
        provenance: the run's provenance (``None`` for hand-made results).
    """

    run_name: str
    method: str
    kind: str
    benchmark: str
    key: str
    sources: list[str]
    target: str
    metrics: dict[str, float]
    path: Path | None = None
    seed: int | None = None
    provenance: Provenance | None = None


def _where(path: Path | str | None) -> str:
    return str(path) if path is not None else "<in-memory record>"


def _require(obj: dict, key: str, typ: type | tuple, where: str, ctx: str = "") -> Any:
    if key not in obj:
        raise RecordError(f"{where}: missing key '{ctx}{key}'; results.json schema v{SCHEMA_VERSION} "
                          f"requires it (see dcac_plugin/benchmark/records.py)")
    val = obj[key]
    if not isinstance(val, typ) or isinstance(val, bool) and typ is int:
        raise RecordError(f"{where}: key '{ctx}{key}' must be {getattr(typ, '__name__', typ)}, "
                          f"got {type(val).__name__} ({val!r})")
    return val


def _metric(value: Any, where: str, ctx: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where}: metric '{ctx}' must be a finite number, got {value!r}")
    if not 0.0 <= value <= 100.0:
        raise RecordError(f"{where}: metric '{ctx}' = {value} is outside [0, 100]; metrics are "
                          f"percentages (write 23.4, not 0.234)")
    return float(value)


def _protocol(obj: dict, where: str) -> tuple[str, list[str], list[str], str]:
    """``(kind, sources, targets, benchmark)`` of the record's ``protocol`` block, validated."""
    proto = _require(obj, "protocol", dict, where)
    kind = _require(proto, "kind", str, where, "protocol.")
    if kind not in KINDS:
        raise RecordError(f"{where}: protocol.kind must be one of {list(KINDS)}, got {kind!r}")
    sources = _require(proto, "sources", list, where, "protocol.")
    targets = _require(proto, "targets", list, where, "protocol.")
    if not sources or not targets or not all(isinstance(s, str) for s in sources + targets):
        raise RecordError(f"{where}: protocol.sources and protocol.targets must be non-empty lists of "
                          f"dataset names, got {sources!r} and {targets!r}")
    benchmark = _require(proto, "benchmark", str, where, "protocol.")
    if benchmark not in BENCHMARKS:
        raise RecordError(f"{where}: protocol.benchmark must be one of {list(BENCHMARKS)}, "
                          f"got {benchmark!r}")
    return kind, sources, targets, benchmark


def _results(obj: dict, targets: list[str], where: str) -> dict[str, dict[str, float]]:
    """target -> metric -> value: one entry per target, each with the required metrics, in [0, 100]."""
    results_raw = _require(obj, "results", dict, where)
    for tgt in targets:
        if tgt not in results_raw:
            raise RecordError(f"{where}: protocol.targets lists '{tgt}' but results has no entry for it "
                              f"(results keys: {sorted(results_raw)})")
    results: dict[str, dict[str, float]] = {}
    for tgt, mets in results_raw.items():
        if tgt not in targets:
            raise RecordError(f"{where}: results has an entry for '{tgt}', which is not in "
                              f"protocol.targets {targets}")
        if not isinstance(mets, dict):
            raise RecordError(f"{where}: results.{tgt} must be an object of metrics, got {mets!r}")
        for m in REQUIRED_METRICS:
            if m not in mets:
                raise RecordError(f"{where}: results.{tgt} lacks required metric '{m}'")
        results[tgt] = {m: _metric(v, where, f"results.{tgt}.{m}") for m, v in mets.items() if m in METRICS}
    return results


def _method(obj: dict, model: str, where: str) -> str:
    """The record's method display name (see :func:`method_name`)."""
    method = obj.get("method")
    if method is not None and not isinstance(method, str):
        raise RecordError(f"{where}: key 'method' must be a string, got {method!r}")
    loss = obj.get("loss")
    return method_name(model, method, loss if isinstance(loss, str) else None)


def parse_record(obj: Any, path: Path | str | None = None) -> Record:
    """Validate one decoded ``results.json`` object and build a :class:`Record`.

    Raises:
        RecordError: naming the file and the offending key when the object does not follow
            schema version 1 or 2.
    """
    where = _where(path)
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: a results.json must hold a JSON object, got {type(obj).__name__}")
    check_schema_version(_require(obj, "schema_version", int, where), where, RecordError)
    run_name = _require(obj, "run_name", str, where)
    model = _require(obj, "model", str, where)
    kind, sources, targets, benchmark = _protocol(obj, where)
    results = _results(obj, targets, where)
    method = _method(obj, model, where)
    prov, seed = _provenance(obj, Path(path) if path is not None else None, where)
    return Record(run_name=run_name, model=model, method=method, kind=kind, sources=list(sources),
                  targets=list(targets), benchmark=benchmark, results=results,
                  path=Path(path) if path is not None else None, created=str(obj.get("created", "")), seed=seed,
                  provenance=prov, raw=obj)


def load_record(path: str | Path) -> Record:
    """Read and validate one ``results.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        RecordError: the file is not valid JSON or does not follow the schema (message names it).
    """
    return parse_record(read_results_file(path, RecordError), Path(path))


def load_records(results_dir: str | Path) -> list[Record]:
    """Load every ``results.json`` below ``results_dir`` (recursive), sorted by path.

    Records whose ``status`` is present and not ``"ok"`` are skipped with a warning.

    Raises:
        FileNotFoundError: ``results_dir`` is not a directory.
        RecordError: a file is malformed; the message names the file.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory not found: {root} (pass the folder holding the "
                                f"runs' results.json files, e.g. --results output/)")
    records = []
    for path in sorted(root.rglob(RESULTS_FILE)):
        rec = load_record(path)
        status = rec.raw.get("status", "ok")
        if status != "ok":
            logger.warning("skipping %s: status is %r, not 'ok'", path, status)
            continue
        records.append(rec)
    logger.info("loaded %d result record(s) from %s", len(records), root)
    return records


def expand_per_target(records: list[Record]) -> list[TargetResult]:
    """One :class:`TargetResult` per (record, target), in record order then target order."""
    out = []
    for rec in records:
        for tgt in rec.targets:
            out.append(TargetResult(
                run_name=rec.run_name,
                method=rec.method,
                kind=rec.kind,
                benchmark=rec.benchmark,
                key=protocol_key(rec.kind, rec.sources, tgt),
                sources=list(rec.sources),
                target=tgt,
                metrics=dict(rec.results[tgt]),
                path=rec.path,
                seed=rec.seed,
                provenance=rec.provenance,
            ))
    return out


# ----------------------------------------------------------------------------------------------
# published numbers

#: Published-entry keys besides the protocol blocks.
_ENTRY_KEYS = ("source", "method", "tag", "flags")
DEFAULT_TAG = "paper"


@dataclass(frozen=True)
class PublishedResult:
    """One published cell: ``method`` on ``key`` (real benchmark only), values in percent.

    ``rank1`` or ``mAP`` may be ``None`` when the source printed "-". ``later_work`` is True for
    entries from the ``later_work`` block (published after DCAC).

    Attributes:
        method: the method name, matched against reproduced rows (see :data:`MODEL_METHODS`).
        kind, key: protocol kind and column key (``average`` for a printed multi-source average).
        mAP, rank1: percentages as printed.
        source: the publication.
        later_work: from the ``later_work`` block.
        label: the row name (the entry's key in the yaml; usually equal to ``method``).
        tag: short name of the kind of source, used in "``<method>: ours - <tag>``" difference
            rows and to tell two published rows of one method apart (``paper`` by default).
        flags: protocol caveats of the row (e.g. ``{"msmt17": "V1"}``), shown as markers.
    """

    method: str
    kind: str
    key: str
    mAP: float | None
    rank1: float | None
    source: str
    later_work: bool = False
    label: str = ""
    tag: str = DEFAULT_TAG
    flags: tuple[tuple[str, str], ...] = ()


def _published_pair(val: Any, where: str) -> tuple[float | None, float | None]:
    if not isinstance(val, list) or len(val) != 2:
        raise RecordError(f"{where}: a published entry must be [mAP, Rank-1], got {val!r}")
    out = []
    for v in val:
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100:
            out.append(float(v))
        else:
            raise RecordError(f"{where}: published value {v!r} is not a percentage")
    return out[0], out[1]


def _published_block(block: Any, kind: str, label: str, source: str, later: bool, where: str,
                     ctx: str, method: str | None = None, tag: str = DEFAULT_TAG,
                     flags: tuple[tuple[str, str], ...] = ()) -> list[PublishedResult]:
    if not isinstance(block, dict):
        raise RecordError(f"{where}: key '{ctx}' must map protocol keys to [mAP, Rank-1], got {block!r}")
    if "flags" in block:  # a block's own flags add to (or override) its entry's
        merged = dict(flags)
        merged.update(_entry_flags(block, where, ctx))
        flags = tuple(merged.items())
    out = []
    for key, val in block.items():
        if key == "flags":
            continue
        m, r = _published_pair(val, f"{where}: key '{ctx}.{key}'")
        out.append(PublishedResult(method or label, kind, str(key), m, r, source, later, label, tag, flags))
    return out


def _entry_str(entry: dict, key: str, where: str, ctx: str) -> str | None:
    val = entry.get(key)
    if val is not None and (not isinstance(val, str) or not val.strip()):
        raise RecordError(f"{where}: key '{ctx}.{key}' must be a non-empty string, got {val!r}")
    return val


def _entry_flags(entry: dict, where: str, ctx: str) -> tuple[tuple[str, str], ...]:
    flags = entry.get("flags")
    if flags is None:
        return ()
    if not isinstance(flags, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                              and not isinstance(v, bool) for k, v in flags.items()):
        raise RecordError(f"{where}: key '{ctx}.flags' must map flag names to short texts "
                          f"(e.g. {{msmt17: V1}}), got {flags!r}")
    return tuple((k, str(v)) for k, v in flags.items())


def _entries(data: dict, block: str, later: bool, where: str) -> list[PublishedResult]:
    """Parse a block of self-sourced entries (``later_work``, ``other_sources``)."""
    entries = data.get(block) or {}
    if not isinstance(entries, dict):
        raise RecordError(f"{where}: key '{block}' must map row names to entries")
    out = []
    for label, entry in entries.items():
        ctx = f"{block}.{label}"
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            raise RecordError(f"{where}: {ctx} needs its own 'source' string")
        unknown = set(entry) - {*_ENTRY_KEYS, *KINDS}
        if unknown:
            raise RecordError(f"{where}: key '{ctx}' has unknown keys {sorted(unknown)}; allowed: "
                              f"{sorted({*_ENTRY_KEYS, *KINDS})}")
        method = _entry_str(entry, "method", where, ctx)
        tag = _entry_str(entry, "tag", where, ctx) or DEFAULT_TAG
        flags = _entry_flags(entry, where, ctx)
        for kind in KINDS:
            if kind in entry:
                out.extend(_published_block(entry[kind], kind, str(label), entry["source"], later, where,
                                            f"{ctx}.{kind}", method, tag, flags))
    return out


def parse_published(data: Any, where: str = "<published>") -> list[PublishedResult]:
    """Parse the published-numbers structure (see ``dcac_plugin/benchmark/published.yaml``).

    Top-level keys: ``source`` (the main publication), ``single_source`` / ``multi_source``
    (row name -> protocol key -> ``[mAP, Rank-1]``, all from ``source``), ``later_work`` and
    ``other_sources`` (row name -> an entry with its own ``source`` and optional ``method``,
    ``tag`` and ``flags``, plus ``single_source`` / ``multi_source`` blocks). Any protocol block
    may hold ``flags`` of its own (name -> short text), added to its entry's.

    Raises:
        RecordError: on a missing ``source``, a malformed entry, an unknown block, or two rows of
            one protocol kind with the same name or the same (method, tag); the message names the
            file and the key.
    """
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise RecordError(f"{where}: published numbers need a top-level 'source' string")
    unknown = set(data) - {"source", "later_work", "other_sources", *KINDS}
    if unknown:
        raise RecordError(f"{where}: unknown top-level keys {sorted(unknown)}")
    source = data["source"]
    out: list[PublishedResult] = []
    for kind in KINDS:
        rows = data.get(kind) or {}
        if not isinstance(rows, dict):
            raise RecordError(f"{where}: key '{kind}' must map row names to protocol blocks")
        for method, block in rows.items():
            out.extend(_published_block(block, kind, str(method), source, False, where, f"{kind}.{method}"))
    out.extend(_entries(data, "later_work", True, where))
    out.extend(_entries(data, "other_sources", False, where))
    rows_seen: dict[tuple[str, str], str] = {}
    for p in out:
        for ident in ((p.kind, "label:" + p.label), (p.kind, f"method:{p.method}|tag:{p.tag}")):
            prev = rows_seen.setdefault(ident, p.source)
            if prev != p.source:
                raise RecordError(f"{where}: two {p.kind} rows named '{p.label}' / of method '{p.method}' with "
                                  f"tag '{p.tag}' ({prev!r} and {p.source!r}); give one another row name or "
                                  f"'tag'")
    return out


def load_published(path: str | Path | None = None) -> list[PublishedResult]:
    """Load published numbers: ``path`` or, when ``None``, the packaged ``published.yaml``.

    Returns:
        Every published cell in file order, each with its source.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RecordError: the file is not valid YAML or not of the published-numbers form.
    """
    if path is None:
        text = resources.files("dcac_plugin.benchmark").joinpath(PUBLISHED_RESOURCE).read_text("utf-8")
        where = f"dcac_plugin/benchmark/{PUBLISHED_RESOURCE}"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"published numbers file not found: {p}")
        return parse_published(read_yaml(p, RecordError, "published numbers file"), str(p))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecordError(yaml_error_message(where, exc)) from exc
    return parse_published(data, where)
