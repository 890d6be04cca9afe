"""Dataset registrations for torchreid and up-front layout checks.

The plugin adds two image datasets to torchreid's registry (:func:`register_datasets`):

* ``cuhk03_np``: CUHK03 under the new protocol (767 train / 700 test ids), folder layout
  ``cuhk03-np/{detected,labeled}/{bounding_box_train,query,bounding_box_test}/*.png``.
  torchreid passes ``cuhk03_labeled`` to every dataset: ``False`` (the default) selects
  ``detected``, the variant used by the paper.
* ``msmt17_trainval``: MSMT17 in torchreid's list-file layout, training on
  ``list_train.txt`` + ``list_val.txt`` (32,621 images, 1,041 ids on the real data; torchreid's
  own ``msmt17`` trains on ``list_train.txt`` only). Query and gallery are unchanged.

:func:`check_dataset` verifies a dataset folder before ``ImageDataManager`` is built, so that
torchreid's download path is never reached: datasets are never downloaded by this plugin.
"""

from __future__ import annotations

import logging
import os
import os.path as osp
import re
from collections.abc import Iterable
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
            ``msmt17``, ``msmt17_trainval``, ``cuhk03_np``, ``cuhk03``). Other names are not
            checked.
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
