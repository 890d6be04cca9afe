"""Dataset registrations for torchreid and up-front layout checks.

The plugin adds two image datasets to torchreid's registry (:func:`register_datasets`):

* ``cuhk03_np``: CUHK03 under the new protocol (767 train / 700 test ids), folder layout
  ``cuhk03-np/{detected,labeled}/{bounding_box_train,query,bounding_box_test}/*.png``.
  torchreid passes ``cuhk03_labeled`` to every dataset: ``False`` (the default) selects
  ``detected``, the variant used by the paper.
* ``msmt17_trainval``: MSMT17 in torchreid's list-file layout, training on
  ``list_train.txt`` + ``list_val.txt`` (32,621 images, 1,041 ids on the real data; torchreid's
  own ``msmt17`` trains on ``list_train.txt`` only). Query and gallery are unchanged.

Users' own datasets (``data.custom``: a Market-layout folder or a ``path pid [camid] split`` list
file) are registered under their names by :func:`register_custom_datasets`.

:func:`check_dataset` verifies a dataset folder before ``ImageDataManager`` is built, so that
torchreid's download path is never reached: datasets are never downloaded by this plugin.
"""

from __future__ import annotations

import logging
import os
import os.path as osp
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from dcac_plugin._torchreid import image_dataset_registry, tr
from dcac_plugin.data.reader import install_reader
from dcac_plugin.protocols import DATASET_CODES  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


_NAME_PATTERN = re.compile(r"([-\d]+)_c(\d)")  # the pattern torchreid's Market/Duke classes use

# torchreid's msmt17.py: version folder -> (train folder, test folder), looked up in this order.
MSMT17_VERSIONS: dict[str, tuple[str, str]] = {
    "MSMT17_V1": ("train", "test"),
    "MSMT17_V2": ("mask_train_v2", "mask_test_v2"),
}
MSMT17_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")

LAYOUTS: dict[str, str] = {
    "market1501": """\
<root>/market1501/
    Market-1501-v15.09.15/          (optional level; torchreid also accepts the folders below
        bounding_box_train/          directly under market1501/)
            0002_c1s1_000451_01.jpg   PID_cCAM..., PID 0001-1501, CAM 1-6
        query/
            0001_c1s1_001051_00.jpg
        bounding_box_test/
            0001_c1s1_001051_03.jpg   (0000_... distractors kept, -1_... junk dropped)
        images/                     (only with market1501_500k=True)""",
    "dukemtmcreid": """\
<root>/dukemtmc-reid/
    DukeMTMC-reID/
        bounding_box_train/
            0001_c2_f0046182.jpg      PID_cCAM_fFRAME.jpg, CAM 1-8
        query/
            0005_c2_f0046985.jpg
        bounding_box_test/
            0002_c1_f0044158.jpg""",
    "msmt17": """\
<root>/msmt17/
    MSMT17_V1/                      (or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)
        train/
            0000/0000_000_01_0303morning_0015_0.jpg   3rd '_' field = camera 01-15
        test/
            0000/0000_000_01_0303morning_0016_0.jpg
        list_train.txt              lines 'RELATIVE/PATH.jpg PID' (one space), paths under train/
        list_val.txt                paths under train/ (also trained on: data.msmt17_include_val True)
        list_query.txt              paths under test/
        list_gallery.txt            paths under test/""",
    "cuhk03_np": """\
<root>/cuhk03-np/
    detected/                       (cuhk03_labeled=False, the default)
        bounding_box_train/
            0001_c1_1.png             PID_cCAM_....png, CAM 1-2
        query/
        bounding_box_test/
    labeled/                        (cuhk03_labeled=True; same three folders)""",
    "cuhk03": """\
<root>/cuhk03/
    cuhk03_release/
        cuhk-03.mat
    cuhk03_new_protocol_config_detected.mat
    cuhk03_new_protocol_config_labeled.mat""",
}
LAYOUTS["msmt17_trainval"] = LAYOUTS["msmt17"]


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder is missing or does not have the layout torchreid reads."""


def _fail(name: str, problem: str, path: str, root: str) -> DatasetLayoutError:
    tree = LAYOUTS[name].replace("<root>", osp.abspath(osp.expanduser(root)) if root else "<root>")
    # msmt17_trainval is the plugin's class behind 'msmt17' with data.msmt17_include_val: name what was typed
    shown = "'msmt17' (train + val, data.msmt17_include_val True)" if name == "msmt17_trainval" else f"'{name}'"
    return DatasetLayoutError(
        f"dataset {shown}: {problem}\n"
        f"  path tried: {path}\n"
        f"  expected layout:\n{_indent(tree, 4)}\n"
        "  Datasets are never downloaded by dcac_plugin: put (or symlink) the extracted dataset there, "
        "or point data.root (--root) at the folder that contains it."
    )


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def _require_dir(name: str, path: str, root: str, what: str) -> None:
    if not osp.isdir(path):
        problem = f"{what} not found" if not osp.exists(path) else f"{what} is not a folder"
        raise _fail(name, problem, path, root)


def _require_file(name: str, path: str, root: str, what: str) -> None:
    if not osp.isfile(path):
        raise _fail(name, f"{what} not found", path, root)


def _list_images(dir_path: str, ext: str) -> list[str]:
    """Sorted image files of one folder, as torchreid's ``glob('*' + ext)`` sees them."""
    return sorted(
        osp.join(dir_path, f) for f in os.listdir(dir_path) if f.endswith(ext) and not f.startswith(".")
    )


def _parse_names(
    name: str,
    dir_path: str,
    root: str,
    ext: str,
    cam_range: tuple[int, int],
    pid_range: tuple[int, int] | None = None,
    need_non_junk: bool = False,
) -> list[tuple[str, int, int]]:
    """Parse ``PID_cCAM...`` names of one folder into ``(path, pid, cam)`` (cam 1-based)."""
    paths = _list_images(dir_path, ext)
    if not paths:
        raise _fail(name, f"folder has no *{ext} images", dir_path, root)
    out = []
    for p in paths:
        m = _NAME_PATTERN.search(p)
        if m is None:
            raise _fail(name, f"file name {osp.basename(p)!r} does not match 'PID_cCAM...{ext}'", p, root)
        pid, cam = int(m.group(1)), int(m.group(2))
        if not cam_range[0] <= cam <= cam_range[1]:
            raise _fail(name, f"camera {cam} outside {cam_range[0]}-{cam_range[1]} in {osp.basename(p)!r}",
                        p, root)
        if pid != -1 and pid_range is not None and not pid_range[0] <= pid <= pid_range[1]:
            raise _fail(name, f"identity {pid} outside {pid_range[0]}-{pid_range[1]} in {osp.basename(p)!r}",
                        p, root)
        out.append((p, pid, cam))
    if need_non_junk and all(pid == -1 for _, pid, _ in out):
        raise _fail(name, "folder has only junk (-1_...) images", dir_path, root)
    return out


def _msmt17_paths(name: str, root: str) -> tuple[str, str, str]:
    """Return ``(version_dir, train_dir, test_dir)`` as torchreid's MSMT17 resolves them."""
    dataset_dir = osp.join(osp.abspath(osp.expanduser(root)), "msmt17")
    _require_dir(name, dataset_dir, root, "dataset folder")
    for version, (train, test) in MSMT17_VERSIONS.items():
        vdir = osp.join(dataset_dir, version)
        if osp.exists(vdir):
            return vdir, osp.join(vdir, train), osp.join(vdir, test)
    raise _fail(name, "no MSMT17_V1/ or MSMT17_V2/ folder", osp.join(dataset_dir, "MSMT17_V1"), root)


def _read_msmt_list(
    name: str, list_path: str, img_dir: str, root: str, strict: bool, verify_files: bool
) -> list[tuple[str, int, int]]:
    """Parse one MSMT17 list file into ``(abs_path, pid, camid0)``.

    ``strict`` mirrors torchreid's parser (``line.split(' ')`` must give exactly two fields, so
    blank lines and double spaces are errors); otherwise any whitespace separates the fields.
    """
    with open(list_path, encoding="utf-8") as f:
        lines = f.readlines()
    out = []
    for i, line in enumerate(lines, 1):
        fields = line.split(" ") if strict else line.split()
        if not strict and not fields:
            continue
        where = f"{osp.basename(list_path)} line {i}: {line.rstrip()!r}"
        if len(fields) != 2:
            raise _fail(name, f"{where} is not 'RELATIVE/PATH.jpg PID' (one space)", list_path, root)
        rel, pid_s = fields[0], fields[1]
        try:
            pid = int(pid_s)
            cam = int(rel.split("_")[2])
        except (ValueError, IndexError):
            raise _fail(name, f"{where}: PID or camera (3rd '_' field of the path) is not an integer",
                        list_path, root) from None
        if not 1 <= cam <= 15:
            raise _fail(name, f"{where}: camera {cam} outside 1-15", list_path, root)
        path = osp.join(img_dir, rel)
        if verify_files and not osp.isfile(path):
            raise _fail(name, f"{where}: image listed but not found", path, root)
        out.append((path, pid, cam - 1))
    return out


def _check_msmt17(name: str, root: str, verify_files: bool = True) -> dict[str, list]:
    vdir, train_dir, test_dir = _msmt17_paths(name, root)
    _require_dir(name, train_dir, root, "train image folder")
    _require_dir(name, test_dir, root, "test image folder")
    for d in (train_dir, test_dir):
        if not any(True for _ in os.scandir(d)):
            raise _fail(name, "image folder is empty", d, root)
    strict = name == "msmt17"
    out = {}
    for list_name in MSMT17_LISTS:
        list_path = osp.join(vdir, list_name)
        _require_file(name, list_path, root, "list file")
        img_dir = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        out[list_name] = _read_msmt_list(name, list_path, img_dir, root, strict, verify_files)
    for list_name in ("list_train.txt", "list_query.txt", "list_gallery.txt"):
        if not out[list_name]:
            raise _fail(name, f"{list_name} lists no images", osp.join(vdir, list_name), root)
    return out


def _market_data_dir(root: str) -> str:
    dataset_dir = osp.join(osp.abspath(osp.expanduser(root)), "market1501")
    versioned = osp.join(dataset_dir, "Market-1501-v15.09.15")
    return versioned if osp.isdir(versioned) else dataset_dir


def _check_market_style(
    name: str, root: str, dataset_dir: str, data_dir: str, ext: str, cam_range: tuple[int, int],
    pid_range: tuple[int, int] | None, extra_dirs: Iterable[str] = (),
) -> dict[str, list]:
    _require_dir(name, dataset_dir, root, "dataset folder")
    _require_dir(name, data_dir, root, "data folder")
    out = {}
    for sub in ("bounding_box_train", "query", "bounding_box_test", *extra_dirs):
        d = osp.join(data_dir, sub)
        _require_dir(name, d, root, f"'{sub}' folder")
        out[sub] = _parse_names(name, d, root, ext, cam_range, pid_range,
                                need_non_junk=True)
    return out


def check_dataset(name: str, root: str, **variant: Any) -> None:
    """Check that a dataset is on disk in the layout torchreid (or the plugin) reads.

    Args:
        name: dataset name as registered in torchreid (``market1501``, ``dukemtmcreid``,
            ``msmt17``, ``msmt17_trainval``, ``cuhk03_np``, ``cuhk03``) or a registered
            ``data.custom`` name. Other names are not checked.
        root: the data root (torchreid's ``root``).
        **variant: the variant keywords torchreid passes to datasets; ``cuhk03_labeled``
            (``cuhk03_np``) and ``market1501_500k`` (``market1501``) are used, others ignored.

    Raises:
        DatasetLayoutError: the folder, a sub-folder or a list file is missing, an image folder
            is empty, or a file name / list line does not parse. The message names the dataset,
            the path tried and the expected layout.
    """
    _check(name, root, verify_files=True, **variant)


def _check(name: str, root: str, verify_files: bool, **variant: Any) -> dict[str, list] | None:
    spec = _CUSTOM_SPECS.get(name)
    if spec is not None:
        read_custom_dataset(spec, verify_files=verify_files)
        return None
    absroot = osp.abspath(osp.expanduser(root))
    if name == "market1501":
        extra = ("images",) if variant.get("market1501_500k") else ()
        return _check_market_style(name, root, osp.join(absroot, "market1501"), _market_data_dir(root),
                                   ".jpg", (1, 6), (0, 1501), extra)
    if name == "dukemtmcreid":
        ddir = osp.join(absroot, "dukemtmc-reid")
        return _check_market_style(name, root, ddir, osp.join(ddir, "DukeMTMC-reID"), ".jpg", (1, 8), None)
    if name == "cuhk03_np":
        ddir = osp.join(absroot, "cuhk03-np")
        sub = "labeled" if variant.get("cuhk03_labeled") else "detected"
        return _check_market_style(name, root, ddir, osp.join(ddir, sub), ".png", (1, 9), None)
    if name in ("msmt17", "msmt17_trainval"):
        return _check_msmt17(name, root, verify_files)
    if name == "cuhk03":
        ddir = osp.join(absroot, "cuhk03")
        _require_dir(name, ddir, root, "dataset folder")
        _require_dir(name, osp.join(ddir, "cuhk03_release"), root, "'cuhk03_release' folder")
        for f in ("cuhk03_release/cuhk-03.mat", "cuhk03_new_protocol_config_detected.mat",
                  "cuhk03_new_protocol_config_labeled.mat"):
            _require_file(name, osp.join(ddir, f), root, f"'{f}'")
        return None
    return None


def _relabel(data: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Map train pids to ``0..N-1`` in sorted pid order (deterministic)."""
    pid2label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in data}))}
    return [(p, pid2label[pid], cam) for p, pid, cam in data]


class CUHK03NP(tr.data.ImageDataset):
    """CUHK03-NP (new protocol): 767 train ids, 700 test ids, 2 cameras.

    Reference: Zhong et al., Re-ranking Person Re-identification with k-reciprocal Encoding,
    CVPR 2017. Folder layout: ``LAYOUTS['cuhk03_np']``. ``cuhk03_labeled=False`` (default)
    reads ``detected/``, ``True`` reads ``labeled/``.
    """

    dataset_dir = "cuhk03-np"
    dataset_url = None
    _junk_pids: ClassVar[list[int]] = [-1]

    def __init__(self, root: str = "", cuhk03_labeled: bool = False, **kwargs: Any) -> None:
        self.root = osp.abspath(osp.expanduser(root))
        self.variant = "labeled" if cuhk03_labeled else "detected"
        self.dataset_dir = osp.join(self.root, "cuhk03-np")
        self.data_dir = osp.join(self.dataset_dir, self.variant)
        parsed = _check("cuhk03_np", root, verify_files=False, cuhk03_labeled=cuhk03_labeled)

        def items(key: str) -> list[tuple[str, int, int]]:
            return [(p, pid, cam - 1) for p, pid, cam in parsed[key] if pid != -1]

        train = _relabel(items("bounding_box_train"))
        super().__init__(train, items("query"), items("bounding_box_test"), **kwargs)


class MSMT17TrainVal(tr.data.ImageDataset):
    """MSMT17 trained on ``list_train.txt`` + ``list_val.txt`` (32,621 images, 1,041 ids).

    Reference: Wei et al., Person Transfer GAN to Bridge Domain Gap for Person
    Re-Identification, CVPR 2018. Same folders and list files as torchreid's ``msmt17``;
    query and gallery are unchanged.
    """

    dataset_dir = "msmt17"
    dataset_url = None

    def __init__(self, root: str = "", **kwargs: Any) -> None:
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = osp.join(self.root, "msmt17")
        lists = _check("msmt17_trainval", root, verify_files=False)
        train = _relabel(lists["list_train.txt"] + lists["list_val.txt"])
        super().__init__(train, lists["list_query.txt"], lists["list_gallery.txt"], **kwargs)


PLUGIN_DATASETS: dict[str, type] = {"cuhk03_np": CUHK03NP, "msmt17_trainval": MSMT17TrainVal}


def register_datasets() -> None:
    """Register ``cuhk03_np`` and ``msmt17_trainval`` with torchreid and install the safe reader.

    Idempotent. Raises ``RuntimeError`` if one of the names is already registered to a class
    that is not the plugin's.
    """
    registry = image_dataset_registry()
    for key, cls in PLUGIN_DATASETS.items():
        current = registry.get(key)
        if current is None:
            registry[key] = cls
        elif current is not cls and (current.__module__, current.__qualname__) != (cls.__module__,
                                                                                   cls.__qualname__):
            raise RuntimeError(
                f"torchreid dataset name '{key}' is already registered to {current.__module__}."
                f"{current.__qualname__}; remove that registration or rename it before calling "
                "dcac_plugin.register()"
            )
    install_reader()


# ---------------------------------------------------------------------------------------------
# Users' own datasets (``data.custom``)
# ---------------------------------------------------------------------------------------------

CUSTOM_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
CUSTOM_SPLITS = ("train", "query", "gallery")
_CUSTOM_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_CUSTOM_NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")

CUSTOM_LAYOUTS = {
    "folder": """\
<path>/
    bounding_box_train/             (needed when the dataset is a source)
        0002_c1_000451.jpg            PID_cCAM_anything.(jpg|jpeg|png|bmp); PID -1 = junk, dropped
    query/                          (query/ and bounding_box_test/ needed when it is a target)
        0001_c1_001051.jpg
    bounding_box_test/
        0001_c2_001051.jpg""",
    "list": """\
<path> (CSV or whitespace-separated; '#' comments and blank lines skipped; an optional header line
        'path,pid,camid,split'; relative image paths are relative to the list file's folder)
    images/0001_a.jpg 1 0 train       path pid camid split   (split: train | query | gallery)
    images/0001_b.jpg 1 1 query
    images/0001_c.jpg 1 2 gallery
  or, without camera ids, every line 'path pid split'""",
}

#: name -> spec of the custom datasets registered in this process
_CUSTOM_SPECS: dict[str, Any] = {}


@dataclass(frozen=True)
class CustomSplits:
    """A parsed custom dataset: ``(abs_path, pid, camid)`` items per split (cameras renumbered)."""

    train: list[tuple[str, int, int]]
    query: list[tuple[str, int, int]]
    gallery: list[tuple[str, int, int]]
    has_cameras: bool


def _custom_fail(spec: Any, problem: str) -> DatasetLayoutError:
    layout = CUSTOM_LAYOUTS[spec.format].replace("<path>", spec.path)
    return DatasetLayoutError(
        f"custom dataset '{spec.name}' ({spec.format}:{spec.path}): {problem}\n"
        f"  expected layout:\n{_indent(layout, 4)}\n"
        "  Declare it in data.custom as 'NAME=folder:/path' or 'NAME=list:/path/file.csv' "
        "(README, 'Your own data')."
    )


def _read_custom_folder(spec: Any, verify_files: bool) -> dict[str, list[tuple[str, int, int]]]:
    root = osp.abspath(osp.expanduser(spec.path))
    if not osp.isdir(root):
        raise _custom_fail(spec, f"folder not found: {root}" if not osp.exists(root) else f"not a folder: {root}")
    out: dict[str, list[tuple[str, int, int]]] = {}
    for split, sub in _CUSTOM_FOLDERS.items():
        d = osp.join(root, sub)
        if not osp.isdir(d):
            out[split] = []
            continue
        items = []
        for f in sorted(os.listdir(d)):
            if f.startswith(".") or not f.lower().endswith(CUSTOM_IMAGE_EXTS):
                continue
            m = _CUSTOM_NAME_PATTERN.match(f)
            if m is None:
                raise _custom_fail(spec, f"file name {f!r} in {sub}/ does not start with 'PID_cCAM' "
                                         "(e.g. 0001_c1_xxx.jpg)")
            pid = int(m.group(1))
            if pid == -1:
                continue  # Market convention: junk images are dropped
            items.append((osp.join(d, f), pid, int(m.group(2))))
        out[split] = items
    return out


def _read_custom_list(spec: Any, verify_files: bool) -> tuple[dict[str, list[tuple[str, int, int | None]]], bool]:
    path = osp.abspath(osp.expanduser(spec.path))
    if not osp.isfile(path):
        raise _custom_fail(spec, f"list file not found: {path}")
    base = osp.dirname(path)
    out: dict[str, list[tuple[str, int, int | None]]] = {s: [] for s in CUSTOM_SPLITS}
    n_fields: int | None = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    first = True
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [x.strip() for x in line.split(",")] if "," in line else line.split()
        where = f"{path} line {i}"
        if first and len(fields) >= 2 and fields[1].lower() == "pid":
            first = False
            continue  # header
        first = False
        if len(fields) not in (3, 4):
            raise _custom_fail(spec, f"{where}: {raw!r} has {len(fields)} fields; expected 'path pid camid split' "
                                     "or 'path pid split' (use CSV for paths with spaces)")
        if n_fields is None:
            n_fields = len(fields)
        elif len(fields) != n_fields:
            raise _custom_fail(spec, f"{where}: {raw!r} has {len(fields)} fields but the lines before have "
                                     f"{n_fields}; give every line a camera id or none")
        img, pid_s, split = fields[0], fields[1], fields[-1].lower()
        try:
            pid = int(pid_s)
        except ValueError:
            raise _custom_fail(spec, f"{where}: pid {pid_s!r} is not an integer") from None
        cam: int | None = None
        if len(fields) == 4:
            try:
                cam = int(fields[2])
            except ValueError:
                raise _custom_fail(spec, f"{where}: camera id {fields[2]!r} is not an integer") from None
        if split not in CUSTOM_SPLITS:
            raise _custom_fail(spec, f"{where}: split {fields[-1]!r} must be one of {list(CUSTOM_SPLITS)}")
        full = img if osp.isabs(img) else osp.normpath(osp.join(base, img))
        if verify_files and not osp.isfile(full):
            raise _custom_fail(spec, f"{where}: image not found: {full}")
        out[split].append((full, pid, cam))
    return out, n_fields != 3


def read_custom_dataset(spec: Any, verify_files: bool = True, need: Iterable[str] = ()) -> CustomSplits:
    """Read a ``data.custom`` dataset (folder or list file).

    Camera ids are renumbered ``0..C-1`` in sorted order over all splits (the protocol only
    compares them). A list without camera ids gives every image its own camera, so the
    same-camera filter of the evaluation removes nothing.

    Args:
        spec: a :class:`dcac_plugin.config.CustomDatasetSpec`.
        verify_files: check that every listed image exists.
        need: splits that must not be empty (``'train'`` for a source, ``'query'``/``'gallery'``
            for a target).

    Raises:
        DatasetLayoutError: missing folder/file/image, a malformed line (file and line number),
            a pid or camera that is not an integer, or an empty needed split.
    """
    if spec.format == "folder":
        parsed: dict[str, list] = _read_custom_folder(spec, verify_files)
        has_cams = True
    else:
        parsed, has_cams = _read_custom_list(spec, verify_files)
    for split in need:
        if not parsed[split]:
            what = (f"folder {_CUSTOM_FOLDERS[split]}/ is missing or has no images" if spec.format == "folder"
                    else f"no line has split '{split}'")
            raise _custom_fail(spec, f"split '{split}' is empty ({what}); it is needed because the dataset is "
                                     f"used as a {'source' if split == 'train' else 'target'}")
    order = [(s, item) for s in CUSTOM_SPLITS for item in parsed[s]]
    if has_cams:
        cams = {c: i for i, c in enumerate(sorted({item[2] for _, item in order}))}
        remap = [cams[item[2]] for _, item in order]
    else:
        remap = list(range(len(order)))
    out: dict[str, list[tuple[str, int, int]]] = {s: [] for s in CUSTOM_SPLITS}
    for (split, (p, pid, _)), cam in zip(order, remap, strict=True):
        out[split].append((p, pid, cam))
    return CustomSplits(out["train"], out["query"], out["gallery"], has_cams)


class CustomDataset(tr.data.ImageDataset):
    """A user's dataset declared in ``data.custom`` (one subclass per name, see
    :func:`register_custom_datasets`). Train pids are relabelled ``0..N-1``."""

    spec: ClassVar[Any] = None
    _dcac_custom: ClassVar[bool] = True

    def __init__(self, root: str = "", **kwargs: Any) -> None:
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = osp.abspath(osp.expanduser(self.spec.path))
        splits = read_custom_dataset(self.spec, verify_files=False)
        parts = {"train": _relabel(splits.train), "query": splits.query, "gallery": splits.gallery}
        empty = [k for k, v in parts.items() if not v]
        if len(empty) == 3:
            raise _custom_fail(self.spec, "no image in any split")
        if empty:
            # torchreid's Dataset indexes the first item of every split: a source-only or target-only
            # dataset gets a placeholder there, removed right after (that split is never read)
            if kwargs.get("combineall"):
                raise _custom_fail(self.spec, f"data.combineall needs every split; {empty} are empty")
            filler = next(v for v in parts.values() if v)[:1]
            kwargs["verbose"] = False
            super().__init__(*(parts[k] or filler for k in CUSTOM_SPLITS), **kwargs)
            for k in empty:
                setattr(self, k, [])
            self.num_train_pids = self.get_num_pids(self.train)
            self.num_train_cams = self.get_num_cams(self.train)
            self.data = getattr(self, self.mode)
        else:
            super().__init__(parts["train"], parts["query"], parts["gallery"], **kwargs)


def custom_dataset_spec(name: str) -> Any | None:
    """The spec of a registered custom dataset (None for other names)."""
    return _CUSTOM_SPECS.get(name)


def register_custom_datasets(specs: Iterable[Any]) -> None:
    """Register ``data.custom`` datasets with torchreid under their names.

    A name may be registered again (e.g. another config in the same process); a name that
    belongs to torchreid's or the plugin's own datasets raises ``DatasetLayoutError``.
    """
    registry = image_dataset_registry()
    for spec in specs:
        current = registry.get(spec.name)
        if current is not None and not getattr(current, "_dcac_custom", False):
            raise DatasetLayoutError(
                f"data.custom: '{spec.name}' is already a dataset of torchreid or dcac_plugin "
                f"({current.__module__}.{current.__qualname__}); choose another name")
        registry[spec.name] = type(f"CustomDataset_{spec.name}", (CustomDataset,), {"spec": spec})
        _CUSTOM_SPECS[spec.name] = spec
