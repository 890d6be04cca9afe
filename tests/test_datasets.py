"""Dataset layouts through torchreid's ImageDataManager, layout checks and the safe image reader."""

from __future__ import annotations

import os
import shutil
import signal
from contextlib import contextmanager

import pytest
from PIL import Image

from dcac_plugin._torchreid import image_dataset_registry, tr
from dcac_plugin.data.datasets import (
    DATASET_CODES,
    PLUGIN_DATASETS,
    DatasetLayoutError,
    check_dataset,
    register_datasets,
)
from dcac_plugin.data.reader import CorruptImageError, read_image
from dcac_plugin.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def counts(synthetic_tiny_root) -> dict:
    return make_synthetic(synthetic_tiny_root, scale="tiny", seed=0)  # cached: returns the marker counts


class GuardTimeout(RuntimeError):
    pass


@contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging) if the body runs longer than ``seconds``."""

    def handler(signum, frame):
        # not TimeoutError: that is an OSError, which torchreid's retry loop would swallow
        raise GuardTimeout(f"timed out after {seconds} s (torchreid's reader retries forever)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def manager(root, sources, targets=None, **kw):
    register_datasets()
    for name in [sources] if isinstance(sources, str) else sources:
        check_dataset(name, str(root), **kw)
    return tr.data.ImageDataManager(
        root=str(root), sources=sources, targets=targets, height=64, width=32, workers=0, use_gpu=False,
        batch_size_train=8, batch_size_test=8, **kw,
    )


def split(dm, name, which):
    return dm.test_loader[name][which].dataset.data


def test_register_is_idempotent_and_installs_reader():
    register_datasets()
    register_datasets()
    reg = image_dataset_registry()
    assert reg["cuhk03_np"] is PLUGIN_DATASETS["cuhk03_np"]
    assert reg["msmt17_trainval"] is PLUGIN_DATASETS["msmt17_trainval"]
    assert vars(tr.data.datasets.dataset)["read_image"] is read_image
    assert DATASET_CODES == {"market1501": "MA", "dukemtmcreid": "D", "msmt17": "MS", "msmt17_trainval": "MS",
                             "cuhk03_np": "C3", "cuhk03": "C3"}


def test_register_refuses_a_foreign_class_under_our_name():
    reg = image_dataset_registry()
    saved = reg["cuhk03_np"]

    class Other:
        pass

    reg["cuhk03_np"] = Other
    try:
        with pytest.raises(RuntimeError, match="cuhk03_np.*already registered"):
            register_datasets()
    finally:
        reg["cuhk03_np"] = saved


def test_market1501(synthetic_tiny_root, counts):
    c = counts["market1501"]
    dm = manager(synthetic_tiny_root, "market1501")
    assert dm.num_train_pids == c["train_ids"] == 10
    assert dm.num_train_cams == c["train_cams"]
    train = dm.train_loader.dataset.train
    assert len(train) == c["train_images"] == 60
    assert sorted({x[1] for x in train}) == list(range(10))
    assert {x[2] for x in train} <= set(range(6))
    query, gallery = split(dm, "market1501", "query"), split(dm, "market1501", "gallery")
    assert len(query) == c["query_images"]
    on_disk = os.listdir(synthetic_tiny_root / "market1501/Market-1501-v15.09.15/bounding_box_test")
    assert len(on_disk) == c["gallery_images"] + c["junk_images"]  # junk is on disk ...
    assert len(gallery) == c["gallery_images"]  # ... and dropped; distractors kept as pid 0
    assert sum(x[1] == 0 for x in gallery) == c["distractor_images"] == 4
    assert all(x[1] != -1 for x in gallery)
    assert not {x[1] for x in query} & {x[1] for x in train}
    batch = next(iter(dm.train_loader))
    assert tuple(batch["img"].shape) == (8, 3, 64, 32)


def test_dukemtmcreid(synthetic_tiny_root, counts):
    c = counts["dukemtmcreid"]
    dm = manager(synthetic_tiny_root, "dukemtmcreid")
    assert dm.num_train_pids == c["train_ids"] == 10
    assert dm.num_train_cams == c["train_cams"]
    query, gallery = split(dm, "dukemtmcreid", "query"), split(dm, "dukemtmcreid", "gallery")
    assert (len(query), len(gallery)) == (c["query_images"], c["gallery_images"])
    assert len({x[1] for x in gallery}) == c["gallery_ids"] == 8 + 2  # + gallery-only distractor ids
    assert {x[2] for x in query + gallery} <= set(range(8))


def test_msmt17_vs_trainval(synthetic_tiny_root, counts):
    c = counts["msmt17"]
    dm = manager(synthetic_tiny_root, "msmt17")
    dm_tv = manager(synthetic_tiny_root, "msmt17_trainval")
    train, train_tv = dm.train_loader.dataset.train, dm_tv.train_loader.dataset.train
    assert len(train) == c["train_only_images"] == 56  # torchreid: list_train.txt only
    assert len(train_tv) == c["train_images"] == c["train_only_images"] + c["val_images"] == 60
    assert dm.num_train_pids == dm_tv.num_train_pids == 10
    assert sorted({x[1] for x in train_tv}) == list(range(10))
    assert {p for p, *_ in train} < {p for p, *_ in train_tv}
    for which in ("query", "gallery"):
        assert split(dm, "msmt17", which) == split(dm_tv, "msmt17_trainval", which)
    assert len(split(dm_tv, "msmt17_trainval", "query")) == c["query_images"]
    assert {x[2] for x in train_tv} <= set(range(15))


@pytest.mark.parametrize("labeled", [False, True])
def test_cuhk03_np_variants(synthetic_tiny_root, counts, labeled):
    c = counts["cuhk03_np"]
    dm = manager(synthetic_tiny_root, "cuhk03_np", cuhk03_labeled=labeled)
    want = f"{os.sep}{'labeled' if labeled else 'detected'}{os.sep}"
    train = dm.train_loader.dataset.train
    query, gallery = split(dm, "cuhk03_np", "query"), split(dm, "cuhk03_np", "gallery")
    assert all(want in x[0] for x in train + query + gallery)
    assert dm.num_train_pids == 10 and dm.num_train_cams == 2
    assert sorted({x[1] for x in train}) == list(range(10))
    assert (len(query), len(gallery)) == (c["query_images"], c["gallery_images"]) == (16, 32)
    assert {x[2] for x in query} == {0, 1}


def test_multi_source_one_label_space(synthetic_tiny_root, counts):
    dm = manager(synthetic_tiny_root, ["market1501", "dukemtmcreid"], targets=["msmt17_trainval"])
    assert dm.num_train_pids == counts["market1501"]["train_ids"] + counts["dukemtmcreid"]["train_ids"] == 20
    assert dm.num_train_cams == counts["market1501"]["train_cams"] + counts["dukemtmcreid"]["train_cams"]
    train = dm.train_loader.dataset.train
    assert sorted({x[1] for x in train}) == list(range(20))
    assert {x[3] for x in train} == {0, 1}
    assert list(dm.test_loader) == ["msmt17_trainval"]


def test_check_dataset_passes_on_every_layout(synthetic_tiny_root):
    for name in ("market1501", "dukemtmcreid", "msmt17", "msmt17_trainval", "cuhk03_np"):
        check_dataset(name, str(synthetic_tiny_root))
    check_dataset("cuhk03_np", str(synthetic_tiny_root), cuhk03_labeled=True)
    check_dataset("viper", str(synthetic_tiny_root))  # unknown to the checker: no-op


def test_check_dataset_missing_folder(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        check_dataset("market1501", str(tmp_path))
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "dataset 'market1501': dataset folder not found" in msg
    assert f"path tried: {tmp_path / 'market1501'}" in msg
    assert "bounding_box_train/" in msg and "Market-1501-v15.09.15/" in msg
    assert "never downloaded" in msg
    with pytest.raises(DatasetLayoutError, match=r"(?s)dataset 'cuhk03'.*cuhk03_release.*never downloaded"):
        check_dataset("cuhk03", str(tmp_path))
    with pytest.raises(DatasetLayoutError, match=r"(?s)no MSMT17_V1/ or MSMT17_V2/.*list_val.txt"):
        (tmp_path / "msmt17").mkdir()
        check_dataset("msmt17_trainval", str(tmp_path))


def test_check_dataset_empty_folder(tmp_path):
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (base / sub).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as e:
        check_dataset("dukemtmcreid", str(tmp_path))
    assert "folder has no *.jpg images" in str(e.value)
    assert f"path tried: {base / 'bounding_box_train'}" in str(e.value)
    # the labeled variant of CUHK03-NP is looked for only when asked
    (tmp_path / "cuhk03-np" / "detected").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"'bounding_box_train' folder not found"):
        check_dataset("cuhk03_np", str(tmp_path))
    with pytest.raises(DatasetLayoutError, match=r"path tried: .*labeled"):
        check_dataset("cuhk03_np", str(tmp_path), cuhk03_labeled=True)


def test_check_dataset_bad_names_and_lists(tmp_path, synthetic_tiny_root):
    shutil.copytree(synthetic_tiny_root / "market1501", tmp_path / "market1501")
    bad = tmp_path / "market1501/Market-1501-v15.09.15/query/readme_photo.jpg"
    Image.new("RGB", (8, 8)).save(bad)
    with pytest.raises(DatasetLayoutError, match="'readme_photo.jpg' does not match 'PID_cCAM"):
        check_dataset("market1501", str(tmp_path))
    bad.unlink()
    cam7 = tmp_path / "market1501/Market-1501-v15.09.15/query/0001_c7s1_000001_00.jpg"
    Image.new("RGB", (8, 8)).save(cam7)
    with pytest.raises(DatasetLayoutError, match="camera 7 outside 1-6"):
        check_dataset("market1501", str(tmp_path))

    shutil.copytree(synthetic_tiny_root / "msmt17", tmp_path / "msmt17")
    vdir = tmp_path / "msmt17" / "MSMT17_V1"
    with open(vdir / "list_query.txt", "a") as f:
        f.write("\n")  # torchreid's parser (line.split(' ')) crashes on a blank line
    with pytest.raises(DatasetLayoutError, match=r"list_query.txt line 13: '' is not 'RELATIVE/PATH.jpg PID"):
        check_dataset("msmt17", str(tmp_path))
    check_dataset("msmt17_trainval", str(tmp_path))  # the plugin's own parser skips blank lines
    (vdir / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError) as e:
        check_dataset("msmt17_trainval", str(tmp_path))
    assert "list file not found" in str(e.value) and f"path tried: {vdir / 'list_val.txt'}" in str(e.value)
    (vdir / "list_val.txt").write_text("0000/0000_999_01_0303noon_0001_0.jpg 0\n")
    with pytest.raises(DatasetLayoutError, match="image listed but not found"):
        check_dataset("msmt17_trainval", str(tmp_path))


def test_read_image(tmp_path):
    good = tmp_path / "ok.png"
    Image.new("L", (64, 128), 7).save(good)
    img = read_image(good)
    assert img.mode == "RGB" and img.size == (64, 128) and img.getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(CorruptImageError, match=r"garbage\.jpg.*Fix: re-extract"):
        read_image(garbage)
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 128), (200, 10, 10)).save(tmp_path / "full.jpg", quality=95)
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        read_image(truncated)
    assert issubclass(CorruptImageError, ValueError)


def test_corrupt_image_through_datamanager_raises_not_hangs(tmp_path, synthetic_tiny_root):
    shutil.copytree(synthetic_tiny_root / "market1501", tmp_path / "market1501")
    train_dir = tmp_path / "market1501/Market-1501-v15.09.15/bounding_box_train"
    victim = sorted(train_dir.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])
    dm = manager(tmp_path, "market1501")
    ds = dm.train_loader.dataset
    idx = next(i for i, item in enumerate(ds.data) if item[0] == str(victim))
    assert ds[(idx + 1) % len(ds)]["img"].shape == (3, 64, 32)
    with time_limit(5), pytest.raises(CorruptImageError, match=victim.name):
        ds[idx]
