"""Users' own datasets (data.custom): parsing, clear errors, and end-to-end training/evaluation."""

import logging
from pathlib import Path

import pytest
from helpers.tiny import TINY

from dcac_plugin.cli.train import main as train_main
from dcac_plugin.config import ConfigError, CustomDatasetSpec, get_default_config, merge_config, parse_custom_datasets
from dcac_plugin.data.datasets import DatasetLayoutError, read_custom_dataset, register_custom_datasets
from dcac_plugin.data.manager import check_datasets
from dcac_plugin.data.manager import test_split as split_of

ROOT = Path(__file__).resolve().parents[1]


def test_parse_custom_entries():
    specs = parse_custom_datasets(["shop=folder:/data/shop", " cams_2 = LIST : rel/list.csv "])
    assert specs == [CustomDatasetSpec("shop", "folder", "/data/shop"), CustomDatasetSpec("cams_2", "list",
                                                                                             "rel/list.csv")]
    assert parse_custom_datasets([]) == []
    for bad, msg in [("shop", "is not 'NAME=folder"), ("shop=/x", "is not 'NAME=folder"),
                     ("Shop=folder:/x", "lowercase"), ("1shop=folder:/x", "lowercase"),
                     ("shop=zip:/x", "format 'zip'"), ("shop=folder:", "empty path")]:
        with pytest.raises(ConfigError, match=msg):
            parse_custom_datasets([bad])
    with pytest.raises(ConfigError, match="declared twice"):
        parse_custom_datasets(["a=folder:/x", "a=list:/y"])


def test_custom_node_merges_from_yaml_and_overrides(tmp_path):
    cfg = merge_config(get_default_config(), None, ["data.custom", "mine=list:/x/l.csv"])
    assert list(cfg.data.custom) == ["mine=list:/x/l.csv"]
    y = tmp_path / "c.yaml"
    y.write_text("data:\n  custom: ['a=folder:/a', 'b=list:/b.txt']\n  sources: [a]\n")
    assert list(merge_config(get_default_config(), str(y)).data.custom) == ["a=folder:/a", "b=list:/b.txt"]
    with pytest.raises(ConfigError, match="format"):
        merge_config(get_default_config(), None, ["data.custom", "mine=csv:/x"])


def _images(tmp_path: Path, n: int = 4) -> list[Path]:
    from PIL import Image

    d = tmp_path / "img"
    d.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        p = d / f"{i}.jpg"
        Image.new("RGB", (8, 16), (i * 40, 0, 0)).save(p)
        out.append(p)
    return out


def _spec(path: Path, name: str = "mine") -> CustomDatasetSpec:
    return CustomDatasetSpec(name, "list", str(path))


def test_list_formats_and_camera_numbering(tmp_path):
    imgs = _images(tmp_path)
    csv = tmp_path / "l.csv"
    csv.write_text("path,pid,camid,split\n# a comment\n\nimg/0.jpg,7,5,train\nimg/1.jpg,7,9,train\n"
                   f"{imgs[2]},3,9,query\nimg/3.jpg,3,5,GALLERY\n")
    s = read_custom_dataset(_spec(csv))
    assert s.has_cameras
    assert s.train == [(str(imgs[0]), 7, 0), (str(imgs[1]), 7, 1)]  # relative to the list file; cams 5,9 -> 0,1
    assert s.query == [(str(imgs[2]), 3, 1)] and s.gallery == [(str(imgs[3]), 3, 0)]
    txt = tmp_path / "l.txt"
    txt.write_text("img/0.jpg 7 train\nimg/1.jpg   7 train\nimg/2.jpg 3 query\nimg/3.jpg 3 gallery\n")
    s = read_custom_dataset(_spec(txt))
    assert not s.has_cameras
    cams = [c for _, _, c in s.train + s.query + s.gallery]
    assert cams == [0, 1, 2, 3]  # every image its own camera


@pytest.mark.parametrize("text, msg", [
    ("img/0.jpg 7 0\n", r"l.txt line 1: split '0' must be one of"),
    ("img/0.jpg 7 0 train extra\n", r"line 1: .* has 5 fields"),
    ("img/0.jpg seven 0 train\n", r"line 1: pid 'seven' is not an integer"),
    ("img/0.jpg 7 c1 train\n", r"line 1: camera id 'c1' is not an integer"),
    ("img/0.jpg 7 0 train\nimg/1.jpg 7 test\n", r"line 2: .* has 3 fields but the lines before have 4"),
    ("img/0.jpg 7 0 validation\n", r"line 1: split 'validation' must be one of"),
    ("img/0.jpg 7 0 train\n\nimg/nope.jpg 7 0 train\n", r"l.txt line 3: image not found: .*nope.jpg"),
])
def test_malformed_lists_name_file_and_line(tmp_path, text, msg):
    _images(tmp_path)
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(DatasetLayoutError, match=msg):
        read_custom_dataset(_spec(tmp_path / "l.txt"))


def test_missing_inputs_and_empty_splits(tmp_path):
    with pytest.raises(DatasetLayoutError, match="list file not found"):
        read_custom_dataset(_spec(tmp_path / "none.csv"))
    with pytest.raises(DatasetLayoutError, match="folder not found"):
        read_custom_dataset(CustomDatasetSpec("f", "folder", str(tmp_path / "nodir")))
    _images(tmp_path)
    (tmp_path / "l.txt").write_text("img/0.jpg 7 train\nimg/1.jpg 7 train\n")
    assert read_custom_dataset(_spec(tmp_path / "l.txt"), need=["train"]).train
    with pytest.raises(DatasetLayoutError, match="split 'query' is empty.*used as a target"):
        read_custom_dataset(_spec(tmp_path / "l.txt"), need=["query", "gallery"])
    folder = tmp_path / "f"
    (folder / "query").mkdir(parents=True)
    (folder / "query" / "person.jpg").write_bytes((tmp_path / "img" / "0.jpg").read_bytes())
    with pytest.raises(DatasetLayoutError, match="'person.jpg' in query/ does not start with 'PID_cCAM'"):
        read_custom_dataset(CustomDatasetSpec("f", "folder", str(folder)))
    (folder / "query" / "person.jpg").rename(folder / "query" / "0003_c2_x.jpg")
    with pytest.raises(DatasetLayoutError, match="split 'train' is empty.*bounding_box_train/ is missing"):
        read_custom_dataset(CustomDatasetSpec("f", "folder", str(folder)), need=["train"])


def test_source_only_and_target_only_lists(tmp_path):
    from dcac_plugin._torchreid import image_dataset_registry

    imgs = _images(tmp_path)
    (tmp_path / "s.txt").write_text("img/0.jpg 7 0 train\nimg/1.jpg 8 1 train\n")
    (tmp_path / "t.txt").write_text("img/2.jpg 3 0 query\nimg/3.jpg 3 1 gallery\n")
    register_custom_datasets([_spec(tmp_path / "s.txt", "src_only"), _spec(tmp_path / "t.txt", "tgt_only")])
    reg = image_dataset_registry()
    src = reg["src_only"](root="", mode="train")
    assert [it[:3] for it in src.train] == [(str(imgs[0]), 0, 0), (str(imgs[1]), 1, 1)]
    assert src.query == [] and src.gallery == [] and src.num_train_pids == 2 and len(src) == 2
    tgt = reg["tgt_only"](root="", mode="query")
    assert tgt.train == [] and tgt.num_train_pids == 0 and [it[0] for it in tgt.data] == [str(imgs[2])]
    with pytest.raises(DatasetLayoutError, match="combineall"):
        reg["tgt_only"](root="", mode="query", combineall=True)


def test_builtin_names_cannot_be_taken():
    import dcac_plugin

    dcac_plugin.register()
    with pytest.raises(DatasetLayoutError, match="already a dataset"):
        register_custom_datasets([CustomDatasetSpec("market1501", "folder", "/x")])


def test_no_cameras_warns_for_targets_and_refuses_sie(tmp_path, caplog):
    _images(tmp_path)
    (tmp_path / "l.txt").write_text("img/0.jpg 7 train\nimg/1.jpg 7 train\nimg/2.jpg 3 query\nimg/3.jpg 3 gallery\n")
    opts = ["data.custom", f"nocam=list:{tmp_path / 'l.txt'}", "data.sources", "nocam", "data.targets", "nocam"]
    with caplog.at_level(logging.WARNING):
        check_datasets(merge_config(get_default_config(), None, opts))
    assert "same-camera filter removes nothing" in caplog.text
    with pytest.raises(ConfigError, match="dcac.sie True needs camera ids"):
        check_datasets(merge_config(get_default_config(), None, [*opts, "dcac.sie", "True"]))


def _market(root: Path) -> Path:
    return root / "market1501" / "Market-1501-v15.09.15"


@pytest.mark.slow
def test_custom_list_and_folder_train_and_evaluate_end_to_end(synthetic_tiny_root, tmp_path):
    """A list dataset written from the generated Market domain trains the CLIP baseline (source) and is
    evaluated (target); as targets, the list and a Market-layout folder of the same images give exactly
    market1501's metrics."""
    market = _market(synthetic_tiny_root)
    cfg = merge_config(get_default_config(), None, ["data.root", str(synthetic_tiny_root)])
    query, gallery = split_of(cfg, "market1501")
    lines = ["path,pid,camid,split"]
    for p in sorted(market.glob("bounding_box_train/*.jpg")):
        pid, cam = p.name.split("_")[0], p.name.split("_c")[1][0]
        lines.append(f"{p},{int(pid)},{cam},train")
    lines += [f"{p},{pid},{cam},query" for p, pid, cam, _ in query]
    lines += [f"{p},{pid},{cam},gallery" for p, pid, cam, _ in gallery]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    folder = tmp_path / "shop"
    folder.mkdir()
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (folder / sub).symlink_to(market / sub)
    out = tmp_path / "run"
    rec = train_main([
        "--config-file", str(ROOT / "configs/demo/clip_tiny.yaml"), "data.root", str(synthetic_tiny_root),
        "data.save_dir", str(out), *TINY,
        "train.max_epoch", "1", "data.custom", f"mine=list:{tmp_path / 'mine.csv'},shop=folder:{folder}",
        "data.sources", "mine", "data.targets", "mine,shop,market1501"])
    assert rec["status"] == "ok" and rec["protocol"]["sources"] == ["mine"]
    assert rec["num_train_pids"] == len({line.split(",")[1] for line in lines[1:] if line.endswith("train")})
    for target in ("mine", "shop"):
        for k, v in rec["results"]["market1501"].items():
            assert rec["results"][target][k] == pytest.approx(v, abs=1e-6), (target, k)
    # the same custom dataset as the source of a torchreid baseline
    rec2 = train_main([
        "--config-file", str(ROOT / "configs/demo/osnet.yaml"), "data.root", str(synthetic_tiny_root),
        "data.save_dir", str(tmp_path / "osnet"), "data.workers", "0", "train.batch_size", "16",
        "train.max_epoch", "1", "data.custom", f"shop=folder:{folder}", "data.sources", "shop",
        "data.targets", "shop"])
    assert rec2["status"] == "ok" and set(rec2["results"]) == {"shop"}
