"""Check the datasets under a data root before any GPU hour: layout, counts, unreadable images.

For each dataset (Market-1501, DukeMTMC-reID, MSMT17 V1/V2, CUHK03-NP detected/labeled, or a
``data.custom`` one) :func:`check_dataset_data` reports found / missing, the layout expected, the
image / identity / camera counts per split as torchreid loads them, compared with

* the counts of the real release (:data:`RELEASES`, from the datasets' papers and torchreid's
  loaders), or
* the counts the generator wrote, when the root holds the generated benchmark (``SYNTHETIC.json``,
  :mod:`dcac_plugin.data.synthetic`): a generated root is reported "as generated", never against
  the real counts,

and one :class:`Problem` per thing that is wrong, each with its fix. Images are checked by
``images='quick'`` (non-empty, the format's signature at the start and its end marker at the end:
catches truncated and overwritten files cheaply), ``'full'`` (PIL decodes every image) or ``'none'``.
"""

from __future__ import annotations

import json
import logging
import os
import os.path as osp
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dcac_plugin.config import ConfigError
from dcac_plugin.data.datasets import (
    CUSTOM_LAYOUTS,
    LAYOUTS,
    MSMT17_LISTS,
    MSMT17_VERSIONS,
    DatasetLayoutError,
    custom_dataset_spec,
    read_custom_dataset,
    register_datasets,
)
from dcac_plugin.data.manager import register_custom
from dcac_plugin.data.synthetic import MARKER

logger = logging.getLogger(__name__)

#: (images, identities, cameras) per split, as torchreid loads them (Market: '-1' junk dropped,
#: '0000' distractors kept). MSMT17: ``train`` = list_train.txt, ``trainval`` = + list_val.txt.
RELEASES: dict[str, dict[str, Any]] = {
    "market1501": {
        "release": "Market-1501 (Zheng et al., ICCV 2015)",
        "splits": {"train": (12936, 751, 6), "query": (3368, 750, 6), "gallery": (15913, 751, 6)},
    },
    "dukemtmcreid": {
        "release": "DukeMTMC-reID (Zheng et al., ICCV 2017)",
        "splits": {"train": (16522, 702, 8), "query": (2228, 702, 8), "gallery": (17661, 1110, 8)},
    },
    "msmt17": {
        "release": "MSMT17 V1/V2 (Wei et al., CVPR 2018)",
        "splits": {"train": (30248, 1041, 15), "val": (2373, None, None), "trainval": (32621, 1041, 15),
                   "query": (11659, 3060, 15), "gallery": (82161, 3060, 15)},
    },
    "cuhk03_np/detected": {
        "release": "CUHK03-NP detected (Zhong et al., CVPR 2017)",
        "splits": {"train": (7365, 767, 2), "query": (1400, 700, 2), "gallery": (5332, 700, 2)},
    },
    "cuhk03_np/labeled": {
        "release": "CUHK03-NP labeled (Zhong et al., CVPR 2017)",
        "splits": {"train": (7368, 767, 2), "query": (1400, 700, 2), "gallery": (5328, 700, 2)},
    },
}
PAPER_DATASETS = ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np")
IMAGE_MODES = ("none", "quick", "full")
_NAME = re.compile(r"([-\d]+)_c(\d)")  # torchreid's Market/Duke pattern
_FIX_MISSING = ("put the extracted dataset there (python tools/check_data.py prints the layout expected), or point "
                "data.root / --root at the folder that contains it")
_FIX_FETCH = "re-extract the dataset archive there (or point data.root / --root at the folder that contains it)"


@dataclass
class Problem:
    """One thing wrong with a dataset, and how to fix it."""

    dataset: str
    what: str
    fix: str

    def line(self) -> str:
        """``PROBLEM <dataset>: <what>. Fix: <fix>``."""
        return f"PROBLEM {self.dataset}: {self.what}. Fix: {self.fix}"


@dataclass
class SplitCount:
    """Counts of one split, and what was expected (``None``: not checked)."""

    split: str
    images: int
    ids: int
    cams: int
    expected: tuple[int | None, int | None, int | None] | None = None


@dataclass
class DatasetReport:
    """What :func:`check_dataset_data` found for one dataset (variant) under one root."""

    name: str
    root: str
    path: str
    layout: str
    status: str = "ok"  # ok | generated | missing | problems | custom
    expected_from: str = ""
    counts: list[SplitCount] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    images_checked: int = 0
    regenerate: str = ""  # on a generated root: the command that writes it again (the fix of every problem)

    def fix(self, default: str) -> str:
        """``default``, or on a generated root the command that regenerates it."""
        return self.regenerate or default

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


# ------------------------------------------------------------------------------------- images


def _image_problem(path: str, mode: str) -> str | None:
    """None when the image looks readable; otherwise the reason."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"cannot stat ({e.strerror})"
    if size == 0:
        return "empty file"
    if mode == "full":
        try:
            with Image.open(path) as img:
                img.load()
        except Exception as e:  # noqa: BLE001 - the reason is reported
            return f"cannot decode ({type(e).__name__}: {e})"
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError as e:
        return f"cannot read ({e.strerror})"
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail else "JPEG without its end marker (truncated)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if b"IEND" in tail[-64:] else "PNG without its IEND chunk (truncated)"
    if head[:2] == b"BM":
        return None
    return "not a JPEG/PNG/BMP file (unknown signature)"


def _check_images(name: str, paths: Iterable[str], mode: str, report: DatasetReport) -> None:
    if mode == "none":
        return
    bad: list[tuple[str, str]] = []
    n = 0
    for p in paths:
        n += 1
        why = _image_problem(p, mode)
        if why:
            bad.append((p, why))
    report.images_checked += n
    if bad:
        shown = "; ".join(f"{p} ({why})" for p, why in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        report.problems.append(Problem(
            name, f"{len(bad)} unreadable image(s): {shown}{more}",
            report.fix("re-extract these files from the dataset archive (or delete them, and their list-file lines)")))


# ------------------------------------------------------------------------------------- counts


def _generated(root: str) -> dict[str, Any] | None:
    try:
        with open(osp.join(root, MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _generated_expected(marker: dict[str, Any], key: str) -> dict[str, tuple[int | None, int | None, int | None]]:
    c = marker["counts"][key]
    out = {"train": (c["train_images"], c["train_ids"], c.get("train_cams")),
           "query": (c["query_images"], c["query_ids"], None),
           "gallery": (c["gallery_images"], c["gallery_ids"], None)}
    if key == "msmt17":
        out["trainval"] = out.pop("train")
        out["train"] = (c.get("train_only_images"), None, None)
        out["val"] = (c.get("val_images"), None, None)
    return out


def _compare(report: DatasetReport, expected: dict[str, tuple], fix: str, generated: bool) -> None:
    what = "the generator wrote" if generated else "the release has"
    for c in report.counts:
        exp = expected.get(c.split)
        if exp is None:
            continue
        c.expected = exp
        diffs = [f"{label} {got:,} where {what} {want:,}"
                 for label, got, want in zip(("images", "identities", "cameras"), (c.images, c.ids, c.cams), exp,
                                             strict=True) if want is not None and got != want]
        if diffs:
            less = c.images < (exp[0] or 0)
            report.problems.append(Problem(
                report.name, f"{c.split}: {', '.join(diffs)}" + (" (incomplete copy?)" if less else ""), fix))


def _count(split: str, items: list[tuple[str, int, int]]) -> SplitCount:
    return SplitCount(split, len(items), len({p for _, p, _ in items}), len({c for _, _, c in items}))


# -------------------------------------------------------------------------------------- layouts


def _market_style(label: str, dataset_dir: str, data_dir: str, ext: str, report: DatasetReport,
                  images: str) -> None:
    """Market-1501 style folders (Market, Duke, CUHK03-NP): '-1' junk dropped as torchreid does."""
    if not osp.isdir(dataset_dir):
        report.status = "missing"
        report.problems.append(Problem(label, f"not found: {dataset_dir}", report.fix(_FIX_MISSING)))
        return
    if not osp.isdir(data_dir):
        report.problems.append(Problem(label, f"folder missing: {data_dir}", report.fix(_FIX_FETCH)))
        return
    splits = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for split, sub in splits.items():
        d = osp.join(data_dir, sub)
        if not osp.isdir(d):
            report.problems.append(Problem(label, f"'{sub}' folder missing: {d}", report.fix(_FIX_FETCH)))
            continue
        files = sorted(f for f in os.listdir(d) if f.endswith(ext) and not f.startswith("."))
        if not files:
            report.problems.append(Problem(label, f"'{sub}' has no *{ext} image: {d}", report.fix(_FIX_FETCH)))
            continue
        items, unparsed = [], []
        for f in files:
            m = _NAME.search(f)
            if m is None:
                unparsed.append(f)
                continue
            pid, cam = int(m.group(1)), int(m.group(2))
            if pid == -1:
                continue
            items.append((osp.join(d, f), pid, cam))
        if unparsed:
            report.problems.append(Problem(
                label, f"{len(unparsed)} file name(s) in '{sub}' do not match 'PID_cCAM...{ext}', e.g. "
                       f"{unparsed[0]!r}",
                report.fix("rename or remove them (torchreid cannot read their identity/camera)")))
        report.counts.append(_count(split, items))
        _check_images(label, [p for p, _, _ in items], images, report)


def _msmt17(label: str, root: str, report: DatasetReport, images: str) -> None:
    dataset_dir = osp.join(root, "msmt17")
    if not osp.isdir(dataset_dir):
        report.status = "missing"
        report.problems.append(Problem(label, f"not found: {dataset_dir}", report.fix(_FIX_MISSING)))
        return
    version = next((v for v in MSMT17_VERSIONS if osp.isdir(osp.join(dataset_dir, v))), None)
    if version is None:
        report.problems.append(Problem(label, f"no MSMT17_V1/ or MSMT17_V2/ folder in {dataset_dir}",
                                       report.fix(_FIX_FETCH)))
        return
    vdir = osp.join(dataset_dir, version)
    report.path = vdir
    train_dir, test_dir = (osp.join(vdir, d) for d in MSMT17_VERSIONS[version])
    for d in (train_dir, test_dir):
        if not osp.isdir(d):
            report.problems.append(Problem(label, f"image folder missing: {d}", report.fix(_FIX_FETCH)))
    lists: dict[str, list[tuple[str, int, int]]] = {}
    for list_name in MSMT17_LISTS:
        path = osp.join(vdir, list_name)
        if not osp.isfile(path):
            report.problems.append(Problem(label, f"list file missing: {path}", report.fix(_FIX_FETCH)))
            continue
        img_dir = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        items, bad = [], []
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for i, line in enumerate(lines, 1):
            fields = line.rstrip("\r").split(" ")  # torchreid's parser: exactly 'PATH PID'
            try:
                if len(fields) != 2:
                    raise ValueError
                pid, cam = int(fields[1]), int(fields[0].split("_")[2])
                if not 1 <= cam <= 15:
                    raise ValueError
            except (ValueError, IndexError):
                bad.append((i, line))
                continue
            items.append((osp.join(img_dir, fields[0]), pid, cam))
        if bad:
            i, line = bad[0]
            last = " (the last line: the file looks truncated)" if i == len(lines) and len(bad) == 1 else ""
            report.problems.append(Problem(
                label, f"{list_name}: {len(bad)} line(s) not 'RELATIVE/PATH.jpg PID' (one space, camera 01-15 as "
                       f"the 3rd '_' field), first line {i}: {line[:80]!r}{last}",
                report.fix(f"restore {list_name} from the dataset archive")))
        missing = [p for p, _, _ in items if not osp.isfile(p)]
        if missing:
            report.problems.append(Problem(
                label, f"{list_name}: {len(missing)} listed image(s) not found, e.g. {missing[0]}",
                report.fix(f"re-extract {osp.basename(img_dir)}/ from the dataset archive")))
        lists[list_name] = items
        present = [it for it in items if osp.isfile(it[0])] if missing else items
        _check_images(label, [p for p, _, _ in present], images, report)
    names = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt",
             "gallery": "list_gallery.txt"}
    for split, list_name in names.items():
        if list_name in lists:
            report.counts.append(_count(split, lists[list_name]))
            if split == "val" and "list_train.txt" in lists:
                report.counts.append(_count("trainval", lists["list_train.txt"] + lists[list_name]))
    report.counts.sort(key=lambda c: ["train", "val", "trainval", "query", "gallery"].index(c.split))


# ----------------------------------------------------------------------------------------- API


def check_dataset_data(name: str, root: str | os.PathLike, *, cuhk03_labeled: bool = False,
                       images: str = "quick") -> DatasetReport:
    """Check one dataset under ``root``: layout, counts against the release (or the generator), images.

    Args:
        name: ``market1501``, ``dukemtmcreid``, ``msmt17`` (``msmt17_trainval`` is the same folder),
            ``cuhk03_np``, or a registered ``data.custom`` name.
        root: the data root (torchreid's ``root``).
        cuhk03_labeled: CUHK03-NP ``labeled/`` instead of ``detected/``.
        images: ``'quick'``, ``'full'`` or ``'none'`` (see the module docstring).

    Returns:
        A :class:`DatasetReport`.

    Raises:
        ValueError: unknown dataset name or image mode.
    """
    if images not in IMAGE_MODES:
        raise ValueError(f"images={images!r}: use one of {list(IMAGE_MODES)}")
    root = osp.abspath(osp.expanduser(os.fspath(root)))
    name = "msmt17" if name == "msmt17_trainval" else name
    spec = custom_dataset_spec(name)
    if spec is not None:
        return _check_custom(name, spec, root, images)
    if name not in PAPER_DATASETS:
        raise ValueError(f"no check for dataset '{name}'; known: {list(PAPER_DATASETS)} and data.custom names")
    variant = ("labeled" if cuhk03_labeled else "detected") if name == "cuhk03_np" else None
    label = f"{name} ({variant})" if variant else name
    key = f"{name}/{variant}" if variant else name
    layout = LAYOUTS[name].replace("<root>", root)
    marker = _generated(root)
    synth_key = "cuhk03_np" if name == "cuhk03_np" else name
    generated = bool(marker and synth_key in marker.get("domains", []) and synth_key in marker.get("counts", {}))
    regen = (f"delete {root} and generate it again: python tools/make_synthetic.py --root {root} --scale "
             f"{marker.get('scale')} --seed {marker.get('seed')}") if generated and marker else ""
    if name == "market1501":
        ddir = osp.join(root, "market1501")
        versioned = osp.join(ddir, "Market-1501-v15.09.15")
        data_dir = versioned if osp.isdir(versioned) else ddir
        report = DatasetReport(label, root, data_dir, layout, regenerate=regen)
        _market_style(label, ddir, data_dir, ".jpg", report, images)
    elif name == "dukemtmcreid":
        ddir = osp.join(root, "dukemtmc-reid")
        report = DatasetReport(label, root, osp.join(ddir, "DukeMTMC-reID"), layout, regenerate=regen)
        _market_style(label, ddir, report.path, ".jpg", report, images)
    elif name == "cuhk03_np":
        ddir = osp.join(root, "cuhk03-np")
        report = DatasetReport(label, root, osp.join(ddir, variant or "detected"), layout, regenerate=regen)
        _market_style(label, ddir, report.path, ".png", report, images)
    else:
        report = DatasetReport(label, root, osp.join(root, "msmt17"), layout, regenerate=regen)
        _msmt17(label, root, report, images)
    if report.status == "missing":
        return report
    if generated and marker:
        report.expected_from = (f"the generator's counts (tools/make_synthetic.py, scale {marker.get('scale')}, seed "
                                f"{marker.get('seed')}; {MARKER})")
        _compare(report, _generated_expected(marker, synth_key), regen, generated=True)
        report.status = "generated" if report.ok else "problems"
    else:
        report.expected_from = f"the real release: {RELEASES[key]['release']}"
        _compare(report, RELEASES[key]["splits"], _FIX_FETCH, generated=False)
        report.status = "ok" if report.ok else "problems"
    return report


def _check_custom(name: str, spec: Any, root: str, images: str) -> DatasetReport:
    report = DatasetReport(name, root, spec.path, CUSTOM_LAYOUTS[spec.format].replace("<path>", spec.path),
                           status="custom", expected_from="a data.custom dataset: no known counts")
    try:
        splits = read_custom_dataset(spec, verify_files=True)
    except DatasetLayoutError as e:
        report.status = "problems"
        report.problems.append(Problem(name, str(e).splitlines()[0], "fix the folder or list file as the message says"))
        return report
    for split in ("train", "query", "gallery"):
        items = getattr(splits, split)
        if items:
            report.counts.append(_count(split, items))
            _check_images(name, [p for p, _, _ in items], images, report)
    if report.problems:
        report.status = "problems"
    return report


@dataclass(frozen=True)
class Need:
    """One dataset a run needs: name, data root, CUHK03 variant."""

    name: str
    root: str
    cuhk03_labeled: bool = False


def needs_of_config(cfg: Any) -> list[Need]:
    """The datasets (sources and targets) a merged config reads, under its ``data.root``."""
    register_custom(cfg)
    names = dict.fromkeys(["msmt17" if n == "msmt17_trainval" else n
                           for n in list(cfg.data.sources) + list(cfg.data.targets)])
    return [Need(n, osp.abspath(osp.expanduser(cfg.data.root)), bool(cfg.cuhk03.labeled_images)) for n in names]


def needs_of_entries(entries: Sequence[Any], root: str | None = None) -> list[Need]:
    """The datasets the runs of a suite need (:class:`~dcac_plugin.benchmark.suite.RunEntry` list).

    Runs whose config file is missing or does not load are skipped (they fail on their own).

    Args:
        entries: resolved suite runs.
        root: overrides every run's ``data.root``.
    """
    needs: list[Need] = []
    for e in entries:
        if not Path(e.config_file).is_file():
            continue
        try:
            cfg = e.config()  # RunEntry.config: the merged config, as the runner builds it
        except ConfigError:
            continue
        if root:
            cfg.defrost()
            cfg.data.root = root
        needs += needs_of_config(cfg)
    return list(dict.fromkeys(needs))


def check_entries(entries: Sequence[Any], images: str = "quick", suite_path: str | None = None) -> str | None:
    """Check the data of a suite's runs before they start.

    Returns:
        None when every dataset the runs need is in place; otherwise one message: each problem on
        its own line with its fix, and how to see the full report or start anyway.
    """
    register_datasets()  # the dataset half of dcac_plugin.register(): data needs only the datasets
    reports = check_needs(needs_of_entries(entries), images=images)
    bad = [r for r in reports if not r.ok]
    if not bad:
        if reports:
            logger.info("data check: %d dataset(s) in place (%s)", len(reports),
                        ", ".join(f"{r.name} {r.status}" for r in reports))
        return None
    lines = [f"the data check found problems in {len(bad)} of the {len(reports)} dataset(s) the runs need "
             f"({', '.join(r.name for r in bad)}); nothing was started:"]
    lines += [p.line() for r in bad for p in r.problems]
    where = f"--suite {suite_path}" if suite_path else "--suite <suite>"
    lines.append(f"Full report with the expected layouts: python tools/check_data.py {where}. "
                 "To start anyway: --no-check-data")
    return "\n".join(lines)


def check_needs(needs: Sequence[Need], images: str = "quick") -> list[DatasetReport]:
    """Check each distinct need once (datasets with no check, e.g. torchreid's others, are skipped)."""
    out = []
    for need in dict.fromkeys(needs):
        if need.name not in PAPER_DATASETS and custom_dataset_spec(need.name) is None:
            logger.info("data check: no check for dataset '%s' (torchreid reads it as it is)", need.name)
            continue
        out.append(check_dataset_data(need.name, need.root, cuhk03_labeled=need.cuhk03_labeled, images=images))
    return out


def format_reports(reports: Sequence[DatasetReport], show_layout: bool = True) -> str:
    """The human report: per dataset status, path, counts vs expected; then one line per problem."""
    lines: list[str] = []
    for r in reports:
        state = {"ok": "OK (matches the real release)", "generated": "OK as generated", "missing": "MISSING",
                 "problems": "PROBLEMS", "custom": "OK (custom dataset)"}[r.status]
        lines.append(f"{r.name}: {state}  {r.path}")
        if r.status == "missing":
            if show_layout:
                lines.append("  expected layout:")
                lines += ["    " + line for line in r.layout.splitlines()]
            continue
        if r.expected_from:
            lines.append(f"  compared with {r.expected_from}")
        if r.counts:
            lines.append(f"  {'split':9s} {'images':>8s} {'ids':>6s} {'cams':>5s}   expected images/ids/cams")
            for c in r.counts:
                exp = "" if c.expected is None else "/".join("-" if v is None else f"{v:,}" for v in c.expected)
                lines.append(f"  {c.split:9s} {c.images:>8,d} {c.ids:>6,d} {c.cams:>5d}   {exp}")
        if r.images_checked:
            lines.append(f"  {r.images_checked:,} image file(s) checked")
        if r.problems and show_layout and r.status == "problems":
            lines.append("  expected layout:")
            lines += ["    " + line for line in r.layout.splitlines()]
    problems = [p for r in reports for p in r.problems]
    if problems:
        lines.append("")
        lines += [p.line() for p in problems]
    n_bad = sum(not r.ok for r in reports)
    lines.append(f"# {len(reports)} dataset(s) checked: {len(reports) - n_bad} ok, {n_bad} with problems"
                 + (f" ({len(problems)} problem(s))" if problems else ""))
    return "\n".join(lines)
