"""The synthetic benchmark: layouts and names, determinism, caching, CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcac_plugin._torchreid import tr
from dcac_plugin.cli.make_synthetic import main as make_synthetic_main
from dcac_plugin.data.synthetic import (
    GENERATOR_VERSION,
    MARKER,
    SyntheticRootError,
    _Domain,
    is_synthetic_root,
    make_synthetic,
)

TWO = ("market1501", "msmt17")  # a cheap pair covering folder names and list files




def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layouts_and_names(synthetic_tiny_root):
    r = synthetic_tiny_root
    ma = r / "market1501/Market-1501-v15.09.15"
    names = [p.name for p in (ma / "bounding_box_test").iterdir()]
    assert all(re.fullmatch(r"(-1|\d{4})_c[1-6]s[1-6]_\d{6}_\d{2}\.jpg", n) for n in names)
    assert sum(n.startswith("-1_") for n in names) == 3 and sum(n.startswith("0000_") for n in names) == 4
    du = r / "dukemtmc-reid/DukeMTMC-reID"
    assert all(re.fullmatch(r"\d{4}_c[1-8]_f\d{7}\.jpg", p.name) for p in (du / "query").iterdir())
    ms = r / "msmt17/MSMT17_V1"
    lines = (ms / "list_train.txt").read_text().splitlines()
    assert len(lines) == 56 and len((ms / "list_val.txt").read_text().splitlines()) == 4
    for line in lines + (ms / "list_gallery.txt").read_text().splitlines():
        rel, pid = line.split(" ")
        name = r"(\d{4})/\1_\d{3}_(0[1-9]|1[0-5])_0303(morning|noon|afternoon)_\d{4}_[01]\.jpg"
        assert re.fullmatch(name, rel)
        assert int(rel[:4]) == int(pid)
    assert (ms / "train" / lines[0].split(" ")[0]).is_file()
    for variant in ("detected", "labeled"):
        files = list((r / "cuhk03-np" / variant / "query").iterdir())
        assert len(files) == 16 and all(re.fullmatch(r"\d{4}_c[12]_\d+\.png", p.name) for p in files)
    img = Image.open(next((ma / "query").iterdir()))
    assert (img.mode, img.size) == ("RGB", (64, 128))


def test_train_and_test_identities_are_disjoint(synthetic_tiny_root):
    pid = re.compile(r"^(-?\d+)_c")
    for base in ("market1501/Market-1501-v15.09.15", "dukemtmc-reid/DukeMTMC-reID", "cuhk03-np/detected"):
        d = synthetic_tiny_root / base
        train = {pid.match(p.name).group(1) for p in (d / "bounding_box_train").iterdir()}
        test = {pid.match(p.name).group(1) for p in (d / "query").iterdir()}
        gallery = {pid.match(p.name).group(1) for p in (d / "bounding_box_test").iterdir()}
        assert len(train) == 10 and len(test) == 8 and test <= gallery
        assert not train & gallery, base
    # MSMT numbers test ids from 0 again (as the real data does): disjoint by appearance seed instead
    dom = _Domain("msmt17", make_synthetic.__globals__["SCALES"]["tiny"], 0)
    assert not np.allclose(dom.ident(0)["top"], dom.ident(10)["top"])


def test_domains_have_disjoint_appearance_seeds():
    tiny = make_synthetic.__globals__["SCALES"]["tiny"]
    tops = [tuple(_Domain(d, tiny, 0).ident(0)["top"].round(4)) for d in
            ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np")]
    assert len(set(tops)) == 4


def test_images_vary_within_an_identity(synthetic_tiny_root):
    files = sorted((synthetic_tiny_root / "market1501/Market-1501-v15.09.15/bounding_box_train").iterdir())
    same_id = [f for f in files if f.name[:4] == files[0].name[:4]]
    a, b = (np.asarray(Image.open(f), np.float32) / 255 for f in same_id[:2])
    assert np.abs(a - b).mean() > 0.03


def test_raw_pixels_do_not_solve_it(synthetic_tiny_root):
    """Flattened pixels (16x8) must be far from perfect even on the tiny in-domain split."""
    ds = tr.data.datasets.init_image_dataset("market1501", root=str(synthetic_tiny_root), mode="query",
                                             verbose=False)

    def feats(items):
        x = np.stack([np.asarray(Image.open(p).resize((8, 16)), np.float32).ravel() for p, *_ in items])
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q, g = feats(ds.query), feats(ds.gallery)
    dist = ((q[:, None] - g[None]) ** 2).sum(-1)
    cmc, mAP = tr.metrics.evaluate_rank(
        dist, np.array([x[1] for x in ds.query]), np.array([x[1] for x in ds.gallery]),
        np.array([x[2] for x in ds.query]), np.array([x[2] for x in ds.gallery]), max_rank=5,
        use_cython=False)
    assert mAP < 0.7 and cmc[0] < 0.9


def test_deterministic_bytes(tmp_path):
    n = make_synthetic(tmp_path / "a", scale="tiny", seed=3, domains=TWO)
    make_synthetic(tmp_path / "b", scale="tiny", seed=3, domains=TWO)
    make_synthetic(tmp_path / "c", scale="tiny", seed=4, domains=TWO)
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    n_images = sum(d["train_images"] + d["query_images"] + d["gallery_images"] + d["junk_images"]
                   for d in n.values())
    assert len(a) == n_images + 4 + 1  # + 4 MSMT list files + marker
    assert a == b
    common = set(a) & set(c)
    changed = [k for k in common if a[k] != c[k] and k.endswith(".jpg")]
    assert len(changed) + len(set(a) - set(c)) > 0.9 * (len(a) - 5)


def test_marker_and_cache(tmp_path, caplog):
    root = tmp_path / "syn"
    counts = make_synthetic(root, scale="tiny", seed=0, domains=("market1501",))
    marker = json.loads((root / MARKER).read_text())
    assert marker["version"] == GENERATOR_VERSION
    assert (marker["scale"], marker["seed"], marker["domains"]) == ("tiny", 0, ["market1501"])
    assert marker["counts"] == counts and marker["image_size"] == [128, 64]
    assert counts["market1501"]["gallery_images"] == 36 and counts["market1501"]["junk_images"] == 3
    assert is_synthetic_root(root) and not is_synthetic_root(tmp_path)
    probe = next((root / "market1501/Market-1501-v15.09.15/query").iterdir())
    stamp = probe.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="dcac_plugin.data.synthetic"):
        assert make_synthetic(root, scale="tiny", seed=0, domains=("market1501",)) == counts
    assert "skipping" in caplog.text and probe.stat().st_mtime_ns == stamp
    # another seed: the generator's own folders are replaced, the marker updated
    before = digests(root)
    make_synthetic(root, scale="tiny", seed=1, domains=("market1501",))
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    assert digests(root) != before and not (root / "SYNTHETIC.partial.json").exists()


def test_never_overwrites_foreign_folders(tmp_path):
    (tmp_path / "market1501" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(SyntheticRootError, match=r"market1501 exists and was not written.*another --root"):
        make_synthetic(tmp_path, scale="tiny", domains=("market1501",))
    assert (tmp_path / "market1501" / "bounding_box_train").is_dir()
    with pytest.raises(ValueError, match="unknown synthetic scale 'huge'"):
        make_synthetic(tmp_path, scale="huge")
    with pytest.raises(ValueError, match=r"unknown synthetic domain\(s\) \['viper'\]"):
        make_synthetic(tmp_path, domains=("viper",))


def test_cli_main(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        rc = make_synthetic_main(["--root", str(tmp_path), "--scale", "tiny", "--seed", "2",
                                  "--domains", "cuhk03_np"])
    assert rc == 0
    assert re.search(r"cuhk03_np\s+2\s+10\s+60\s+8\s+16\s+8\s+32", caplog.text)
    assert json.loads((tmp_path / MARKER).read_text())["domains"] == ["cuhk03_np"]
    with pytest.raises(SystemExit):
        make_synthetic_main(["--root", str(tmp_path), "--scale", "huge"])


def test_console_entry_refuses_a_foreign_folder_in_one_line(tmp_path, monkeypatch, capsys):
    """dcac-make-synthetic: exit 2 with one 'error:' line naming the folder and the fix, no traceback."""
    from dcac_plugin.cli.make_synthetic import cli

    (tmp_path / "market1501" / "bounding_box_train").mkdir(parents=True)
    monkeypatch.setattr("sys.argv", ["dcac-make-synthetic", "--root", str(tmp_path), "--scale", "tiny",
                                     "--domains", "market1501"])
    with pytest.raises(SystemExit) as ei:
        cli()
    err = capsys.readouterr().err
    assert ei.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'market1501'} exists and was not written") and "--root" in err
