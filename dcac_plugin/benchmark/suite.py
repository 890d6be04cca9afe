"""Benchmark suites: protocols x models resolved to training runs, run resumably.

Suite yaml::

    name: demo                          # required
    output_root: output/demo            # optional; default output/<name>; --output overrides
    common_opts: [data.root, data/synthetic, train.max_epoch, 1]   # key value list, every run
    matrix:                             # every protocol x every model
      protocols:
        - name: ma2ms                   # required; {protocol} in model configs is replaced by it
          sources: [market1501]         # required -> opts data.sources "['market1501']"
          targets: [msmt17]             # required -> opts data.targets "['msmt17']"
          data: {msmt17_include_val: true}   # optional extra data.* keys -> data.msmt17_include_val True
          opts: [test.rerank, false]    # optional, any further key value pairs
      models:
        - name: dcac                    # required; run name is <model>_<protocol>
          config: configs/dcac_{protocol}.yaml   # required; relative to the working directory
          opts: [train.seed, 2]         # optional
    runs:                               # optional explicit runs (alone or next to a matrix)
      - name: osnet_sanity              # required, unique within the suite
        config: configs/baselines/osnet_x1_0_softmax.yaml
        protocol: ma2ms                 # optional: a protocol name defined under matrix.protocols
        opts: [...]                     # optional

Opts values are written as a yacs command line would carry them: strings unchanged, numbers and
booleans with ``repr`` (``1``, ``True``), lists as Python literals (``"['market1501']"``).

Each run resolves to ``argv = ['--config-file', config, *common_opts, *model/run opts,
*protocol opts, 'data.save_dir', <output_root>/<run_name>]`` -- the protocol's data keys come
last so every model of a protocol gets the same data configuration. :func:`run_suite` calls
``runner(argv)`` (the training entry point) per run, skips runs whose ``results.json`` exists,
records failures in ``<output_dir>/failed.json`` and carries on.
"""

from __future__ import annotations

import fnmatch
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"
SUMMARY_FILE = "suite_summary.json"


class SuiteError(ValueError):
    """A suite file is malformed."""


@dataclass(frozen=True)
class Protocol:
    """One data protocol of a suite."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    opts: tuple[str, ...] = ()

    def as_opts(self) -> list[str]:
        """The yacs key/value list that applies this protocol."""
        return ["data.sources", _opt_str(list(self.sources)), "data.targets", _opt_str(list(self.targets)),
                *self.opts]


@dataclass(frozen=True)
class RunEntry:
    """One resolved run: ``runner(argv())`` trains and evaluates it into ``output_dir``."""

    run_name: str
    config_file: str
    opts: tuple[str, ...]
    output_dir: Path
    protocol: str | None = None

    def argv(self) -> list[str]:
        """Command-line arguments for the training entry point."""
        return ["--config-file", self.config_file, *self.opts, "data.save_dir", str(self.output_dir)]


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

    def entries(self, output_root: str | Path | None = None) -> list[RunEntry]:
        """Resolve the suite into runs (matrix first, protocol-major, then explicit runs).

        Args:
            output_root: overrides the suite's ``output_root`` (default ``output/<name>``).

        Raises:
            SuiteError: duplicate run names or an explicit run naming an unknown protocol.
        """
        root = Path(output_root or self.output_root or Path("output") / self.name)
        out: list[RunEntry] = []
        for proto in self.protocols.values():
            for model in self.models:
                name = f"{model['name']}_{proto.name}"
                cfg = model["config"].replace("{protocol}", proto.name)
                opts = (*self.common_opts, *model["opts"], *proto.as_opts())
                out.append(RunEntry(name, cfg, opts, root / name, proto.name))
        for run in self.runs:
            proto_opts: tuple[str, ...] = ()
            pname = run.get("protocol")
            if pname is not None:
                if pname not in self.protocols:
                    raise SuiteError(f"{self._where()}: run '{run['name']}' names protocol '{pname}', which "
                                     f"is not defined under matrix.protocols ({sorted(self.protocols)})")
                proto_opts = tuple(self.protocols[pname].as_opts())
            cfg = run["config"].replace("{protocol}", pname) if pname else run["config"]
            opts = (*self.common_opts, *run["opts"], *proto_opts)
            out.append(RunEntry(run["name"], cfg, opts, root / run["name"], pname))
        seen: set[str] = set()
        for e in out:
            if e.run_name in seen:
                raise SuiteError(f"{self._where()}: run name '{e.run_name}' occurs twice; give runs "
                                 f"unique names")
            seen.add(e.run_name)
        return out

    def _where(self) -> str:
        return str(self.path) if self.path else f"suite '{self.name}'"


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


_SUITE_KEYS = {"name", "output_root", "common_opts", "matrix", "runs", "description"}


def parse_suite(data: Any, path: str | Path | None = None) -> Suite:
    """Validate a decoded suite mapping.

    Raises:
        SuiteError: naming the file and the offending key.
    """
    where = str(path) if path else "<suite>"
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: a suite file must hold a mapping")
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_SUITE_KEYS)}")
    name = _need(data, "name", str, where)
    output_root = data.get("output_root")
    if output_root is not None and not isinstance(output_root, str):
        raise SuiteError(f"{where}: 'output_root' must be a string path")
    common = _opts(data.get("common_opts"), f"{where}: common_opts")
    protocols: dict[str, Protocol] = {}
    models: list[dict[str, Any]] = []
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict) or set(matrix) - {"protocols", "models"}:
        raise SuiteError(f"{where}: 'matrix' must be a mapping with 'protocols' and 'models' lists")
    for i, p in enumerate(matrix.get("protocols") or []):
        pw = f"{where}: matrix.protocols[{i}]"
        pname = _need(p, "name", str, pw)
        if pname in protocols:
            raise SuiteError(f"{pw}: protocol name '{pname}' occurs twice")
        data_keys = p.get("data") or {}
        if not isinstance(data_keys, dict):
            raise SuiteError(f"{pw}: 'data' must map data.* keys to values, got {data_keys!r}")
        extra: list[str] = []
        for k, v in data_keys.items():
            extra += [f"data.{k}", _opt_str(v)]
        protocols[pname] = Protocol(pname, _names(p, "sources", pw), _names(p, "targets", pw),
                                    (*extra, *_opts(p.get("opts"), pw)))
    for i, m in enumerate(matrix.get("models") or []):
        mw = f"{where}: matrix.models[{i}]"
        models.append({"name": _need(m, "name", str, mw), "config": _need(m, "config", str, mw),
                       "opts": _opts(m.get("opts"), mw)})
    if models and not protocols:
        raise SuiteError(f"{where}: matrix.models is given but matrix.protocols is empty")
    runs: list[dict[str, Any]] = []
    for i, r in enumerate(data.get("runs") or []):
        rw = f"{where}: runs[{i}]"
        proto = r.get("protocol") if isinstance(r, dict) else None
        if proto is not None and not isinstance(proto, str):
            raise SuiteError(f"{rw}: 'protocol' must be a protocol name")
        runs.append({"name": _need(r, "name", str, rw), "config": _need(r, "config", str, rw),
                     "opts": _opts(r.get("opts"), rw), "protocol": proto})
    if not models and not runs:
        raise SuiteError(f"{where}: the suite defines no runs (give matrix.protocols + matrix.models "
                         f"and/or runs)")
    return Suite(name, output_root, common, protocols, models, runs, Path(path) if path else None)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite yaml.

    Raises:
        FileNotFoundError: the file does not exist.
        SuiteError: the file is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file not found: {path} "
                                f"(e.g. configs/suites/paper_single_source.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid yaml ({exc})") from exc
    return parse_suite(data, path)


@dataclass
class SuiteSummary:
    """What :func:`run_suite` did.

    Attributes:
        name: suite name.
        output_root: where the runs write.
        planned: every selected run (after ``only``), in order.
        ran: runs executed successfully now.
        skipped: runs whose ``results.json`` already existed.
        failed: run name -> error message.
        times: run name -> wall seconds of runs executed now (successful or failed).
        dry_run: nothing was executed.
        total_time_s: wall seconds of the whole call.
    """

    name: str
    output_root: Path
    planned: list[RunEntry] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    total_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to ``<output_root>/suite_summary.json``)."""
        return {"name": self.name, "output_root": str(self.output_root), "dry_run": self.dry_run,
                "planned": [e.run_name for e in self.planned], "ran": self.ran, "skipped": self.skipped,
                "failed": self.failed, "times_s": {k: round(v, 3) for k, v in self.times.items()},
                "total_time_s": round(self.total_time_s, 3)}

    def text(self) -> str:
        """One-paragraph human summary."""
        lines = [f"suite '{self.name}' ({self.output_root}): {len(self.planned)} planned, "
                 f"{len(self.ran)} ran, "
                 f"{len(self.skipped)} skipped (results exist), {len(self.failed)} failed, "
                 f"{self.total_time_s:.1f} s"]
        for name, t in self.times.items():
            state = "FAILED" if name in self.failed else "ok"
            lines.append(f"  {name}: {state} in {t:.1f} s")
        for name, err in self.failed.items():
            lines.append(f"  {name} failed: {err} (see {self.output_root / name / FAILED_FILE})")
        return "\n".join(lines)


def select(entries: list[RunEntry], only: str | Sequence[str] | None) -> list[RunEntry]:
    """Keep the entries whose run name matches any fnmatch pattern in ``only`` (all when ``None``)."""
    if only is None:
        return list(entries)
    patterns = [only] if isinstance(only, str) else list(only)
    return [e for e in entries if any(fnmatch.fnmatchcase(e.run_name, p) for p in patterns)]


def _write_failure(entry: RunEntry, exc: BaseException, elapsed: float) -> str:
    from dcac_plugin.utils.io import atomic_write_json

    msg = f"{type(exc).__name__}: {exc}"
    atomic_write_json({
        "status": "failed", "run_name": entry.run_name, "error": msg,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "argv": entry.argv(), "wall_time_s": round(elapsed, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, entry.output_dir / FAILED_FILE)
    return msg


def run_suite(
    suite: Suite,
    runner: Callable[[list[str]], Any],
    only: str | Sequence[str] | None = None,
    dry_run: bool = False,
    output_root: str | Path | None = None,
) -> SuiteSummary:
    """Run every selected entry of ``suite`` through ``runner``.

    Per entry: skip when ``<output_dir>/results.json`` exists; otherwise call ``runner(argv)``
    (a missing config file fails the run without calling ``runner``). An exception (or
    ``SystemExit``) from ``runner``, or a runner that returns without writing ``results.json``
    into ``output_dir``, is recorded in ``<output_dir>/failed.json`` (atomic; error, traceback,
    argv) and the suite moves on. A later successful run removes a stale ``failed.json``.

    Args:
        suite: from :func:`load_suite`.
        runner: the training entry point, called with the run's argv list.
        only: fnmatch pattern(s) on run names; ``None`` selects all.
        dry_run: resolve and log the plan, execute nothing, write nothing.
        output_root: overrides the suite's output root.

    Returns:
        The :class:`SuiteSummary` (also written to ``<output_root>/suite_summary.json`` unless
        ``dry_run``).
    """
    t0 = time.perf_counter()
    entries = select(suite.entries(output_root), only)
    root = Path(output_root or suite.output_root or Path("output") / suite.name)
    summary = SuiteSummary(name=suite.name, output_root=root, planned=entries, dry_run=dry_run)
    if not entries:
        logger.warning("suite '%s': no run matches %r", suite.name, only)
    for i, entry in enumerate(entries, 1):
        tag = f"[{i}/{len(entries)}] {entry.run_name}"
        if (entry.output_dir / RESULTS_FILE).is_file():
            logger.info("%s: skipped, %s exists", tag, entry.output_dir / RESULTS_FILE)
            summary.skipped.append(entry.run_name)
            continue
        if dry_run:
            logger.info("%s: would run %s", tag, " ".join(entry.argv()))
            continue
        logger.info("%s: running %s", tag, " ".join(entry.argv()))
        start = time.perf_counter()
        try:
            if not Path(entry.config_file).is_file():
                raise FileNotFoundError(f"config file not found: {entry.config_file} (paths in a suite are "
                                        f"relative to the working directory; run from the repository root)")
            runner(entry.argv())
            if not (entry.output_dir / RESULTS_FILE).is_file():
                raise RuntimeError(f"the runner returned but wrote no {RESULTS_FILE} in {entry.output_dir}")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failed run must not stop the suite
            elapsed = time.perf_counter() - start
            summary.failed[entry.run_name] = _write_failure(entry, exc, elapsed)
            summary.times[entry.run_name] = elapsed
            logger.error("%s: FAILED after %.1f s: %s", tag, elapsed, summary.failed[entry.run_name])
            continue
        elapsed = time.perf_counter() - start
        stale = entry.output_dir / FAILED_FILE
        if stale.is_file():
            stale.unlink()
        summary.ran.append(entry.run_name)
        summary.times[entry.run_name] = elapsed
        logger.info("%s: done in %.1f s", tag, elapsed)
    summary.total_time_s = time.perf_counter() - t0
    if not dry_run:
        from dcac_plugin.utils.io import atomic_write_json

        atomic_write_json(summary.as_dict(), root / SUMMARY_FILE)
    logger.info("%s", summary.text())
    return summary
