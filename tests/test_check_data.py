"""tools/check_data.py and the suite's data check, on the generated layouts and broken copies of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dcac_plugin.cli.check_data import main as check_main
from dcac_plugin.data import check as data_check
from dcac_plugin.data.check import check_dataset_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def copy_root(synthetic_tiny_root, tmp_path):
    """A private copy of the tiny generated benchmark, to break."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_tiny_root, dst)
    return dst


def _problems(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("PROBLEM ")]


def test_generated_root_is_reported_as_generated(synthetic_tiny_root, capsys):
    assert check_main(["--root", str(synthetic_tiny_root)]) == 0
    out = capsys.readouterr().out
    for name in ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np (detected)", "cuhk03_np (labeled)"):
        assert f"{name}: OK as generated" in out
    assert "compared with the generator's counts (tools/make_synthetic.py, scale tiny, seed 0" in out
    assert "the real release" not in out and not _problems(out)
    assert out.rstrip().splitlines()[-1].startswith("# 5 dataset(s) checked: 5 ok, 0 with problems")
    # the counts are the generator's, split by split (MSMT17: list_train / val / train+val)
    marker = json.loads((synthetic_tiny_root / "SYNTHETIC.json").read_text())["counts"]
    r = check_dataset_data("msmt17", synthetic_tiny_root)
    got = {c.split: (c.images, c.ids) for c in r.counts}
    m = marker["msmt17"]
    assert got["trainval"] == (m["train_images"], m["train_ids"]) and got["train"][0] == m["train_only_images"]
    assert got["val"][0] == m["val_images"] and got["gallery"] == (m["gallery_images"], m["gallery_ids"])
    r = check_dataset_data("market1501", synthetic_tiny_root)
    mk = marker["market1501"]
    got = {c.split: (c.images, c.ids) for c in r.counts}
    assert got == {"train": (mk["train_images"], mk["train_ids"]), "query": (mk["query_images"], mk["query_ids"]),
                   "gallery": (mk["gallery_images"], mk["gallery_ids"])}  # '-1' junk dropped, '0000' kept
    assert r.status == "generated" and r.images_checked == sum(v[0] for v in got.values())


def test_missing_folder_is_named_and_exits_1(copy_root, capsys):
    shutil.rmtree(copy_root / "market1501" / "Market-1501-v15.09.15" / "query")
    assert check_main(["--root", str(copy_root)]) == 1
    out = capsys.readouterr().out
    probs = _problems(out)
    assert len(probs) == 1
    assert probs[0].startswith(f"PROBLEM market1501: 'query' folder missing: {copy_root}/market1501/"
                               "Market-1501-v15.09.15/query. Fix: delete")
    assert "python tools/make_synthetic.py --root" in probs[0] and "--scale tiny --seed 0" in probs[0]
    assert "market1501: PROBLEMS" in out and "expected layout:" in out


def test_truncated_list_file(copy_root, capsys):
    lst = copy_root / "msmt17" / "MSMT17_V1" / "list_gallery.txt"
    lines = lst.read_text().splitlines(keepends=True)
    lst.write_text("".join(lines[:10]) + lines[10][:15])  # cut in the middle of line 11
    assert check_main(["--root", str(copy_root), "--datasets", "ms"]) == 1
    probs = _problems(capsys.readouterr().out)
    assert len(probs) == 2
    assert probs[0].startswith("PROBLEM msmt17: list_gallery.txt: 1 line(s) not 'RELATIVE/PATH.jpg PID'")
    assert f"first line 11: {lines[10][:15]!r} (the last line: the file looks truncated)" in probs[0]
    assert probs[1].startswith(f"PROBLEM msmt17: gallery: images 10 where the generator wrote {len(lines)}")
    # cut at a line boundary: only the counts show it
    lst.write_text("".join(lines[:-3]))
    assert check_main(["--root", str(copy_root), "--datasets", "msmt17"]) == 1
    probs = _problems(capsys.readouterr().out)
    assert len(probs) == 1 and f"gallery: images {len(lines) - 3:,} where the generator wrote {len(lines):,}" \
        in probs[0] and "(incomplete copy?)" in probs[0]


def test_unreadable_and_missing_images(copy_root, capsys):
    png = sorted((copy_root / "cuhk03-np" / "detected" / "query").glob("*.png"))[1]
    png.write_bytes(png.read_bytes()[:300])  # truncated
    jpg = sorted((copy_root / "dukemtmc-reid" / "DukeMTMC-reID" / "bounding_box_train").glob("*.jpg"))[0]
    jpg.write_bytes(b"")
    listed = copy_root / "msmt17" / "MSMT17_V1" / "list_train.txt"
    first = listed.read_text().splitlines()[0].split(" ")[0]
    gone = copy_root / "msmt17" / "MSMT17_V1" / "train" / first
    gone.unlink()
    assert check_main(["--root", str(copy_root)]) == 1
    probs = _problems(capsys.readouterr().out)
    assert any(p.startswith(f"PROBLEM cuhk03_np (detected): 1 unreadable image(s): {png} (PNG without its IEND "
                            "chunk (truncated))") for p in probs)
    assert any(p.startswith(f"PROBLEM dukemtmcreid: 1 unreadable image(s): {jpg} (empty file)") for p in probs)
    assert any(p.startswith(f"PROBLEM msmt17: list_train.txt: 1 listed image(s) not found, e.g. {gone}")
               for p in probs)
    # 'none' skips the image reads (the missing listed file is a layout problem and still found)
    assert check_main(["--root", str(copy_root), "--images", "none"]) == 1
    probs = _problems(capsys.readouterr().out)
    assert len(probs) == 1 and "listed image(s) not found" in probs[0]


def test_full_mode_decodes(copy_root):
    jpg = sorted((copy_root / "market1501" / "Market-1501-v15.09.15" / "query").glob("*.jpg"))[0]
    data = bytearray(jpg.read_bytes())
    data[4:60] = b"\x00" * 56  # header segments destroyed, signature and end marker intact
    jpg.write_bytes(bytes(data))
    assert check_dataset_data("market1501", copy_root, images="quick").ok
    full = check_dataset_data("market1501", copy_root, images="full")
    assert not full.ok and "cannot decode" in full.problems[0].what and str(jpg) in full.problems[0].what


def test_msmt17_v2_layout(copy_root):
    v1 = copy_root / "msmt17" / "MSMT17_V1"
    (v1 / "train").rename(v1 / "mask_train_v2")
    (v1 / "test").rename(v1 / "mask_test_v2")
    v1.rename(copy_root / "msmt17" / "MSMT17_V2")
    r = check_dataset_data("msmt17", copy_root)
    assert r.status == "generated" and r.path.endswith("MSMT17_V2")


def test_real_root_is_compared_with_the_release(copy_root, monkeypatch, capsys):
    (copy_root / "SYNTHETIC.json").unlink()  # now it looks like a (very incomplete) real copy
    assert check_main(["--root", str(copy_root), "--datasets", "market1501", "--images", "none"]) == 1
    out = capsys.readouterr().out
    assert "compared with the real release: Market-1501 (Zheng et al., ICCV 2015)" in out
    probs = _problems(out)
    assert probs[0].startswith("PROBLEM market1501: train: images 60 where the release has 12,936, identities 10 "
                               "where the release has 751")
    assert "(incomplete copy?). Fix: re-extract the dataset archive" in probs[0]
    # with the release counts equal to what is there, the same folder passes as the real release
    r = check_dataset_data("market1501", copy_root, images="none")
    counts = {c.split: (c.images, c.ids, c.cams) for c in r.counts}
    monkeypatch.setitem(data_check.RELEASES, "market1501", {"release": "test", "splits": counts})
    assert check_main(["--root", str(copy_root), "--datasets", "ma"]) == 0
    assert "market1501: OK (matches the real release)" in capsys.readouterr().out


def test_missing_dataset_and_bad_input(tmp_path, capsys):
    assert check_main(["--root", str(tmp_path), "--datasets", "d"]) == 1
    out = capsys.readouterr().out
    assert "dukemtmcreid: MISSING" in out and "expected layout:" in out and "DukeMTMC-reID/" in out
    assert _problems(out) == [f"PROBLEM dukemtmcreid: not found: {tmp_path}/dukemtmc-reid. Fix: put the extracted "
                              "dataset there (python tools/check_data.py prints the layout expected), or point "
                              "data.root / --root at the folder that contains it"]
    with pytest.raises(ValueError, match="unknown.*viper"):
        check_main(["--root", str(tmp_path), "--datasets", "viper"])


def test_config_file_checks_its_sources_and_targets(copy_root, capsys):
    shutil.rmtree(copy_root / "cuhk03-np")
    cfg = str(REPO / "configs" / "demo" / "osnet.yaml")
    argv = ["--config-file", cfg, "data.root", str(copy_root), "data.sources", "['market1501']",
            "data.targets", "['msmt17']"]
    assert check_main(argv) == 0  # CUHK03-NP is not needed by this config
    out = capsys.readouterr().out
    assert "market1501: OK as generated" in out and "msmt17: OK as generated" in out and "cuhk03" not in out
    assert check_main([*argv[:-1], "['msmt17', 'cuhk03_np']"]) == 1
    assert "cuhk03_np (detected): MISSING" in capsys.readouterr().out


# ------------------------------------------------------------------------------- benchmark suites


def _suite(tmp_path: Path, root: Path) -> Path:
    data = {"name": "check", "output_root": str(tmp_path / "out"),
            "common_opts": ["data.root", str(root), "train.max_epoch", 1],
            "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["msmt17"]}],
                       "models": [{"name": "osnet", "config": str(REPO / "configs" / "demo" / "osnet.yaml")}]}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_suite_refuses_to_start_on_broken_data(copy_root, tmp_path, monkeypatch, capsys):
    from dcac_plugin.cli.benchmark import cli
    from dcac_plugin.cli.benchmark import main as bench_main

    lst = copy_root / "msmt17" / "MSMT17_V1" / "list_query.txt"
    lst.write_text("".join(lst.read_text().splitlines(keepends=True)[:-2]))
    suite = _suite(tmp_path, copy_root)
    calls = []
    # dry run: the plan says it would be refused
    assert bench_main(["--suite", str(suite), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "REFUSED when run (data check" in out and "PROBLEM msmt17: query: images" in out
    # a real start: one error, exit 2, nothing started
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--suite", str(suite)])
    monkeypatch.setattr("dcac_plugin.cli.train.main", lambda argv: calls.append(argv))
    with pytest.raises(SystemExit) as exc:
        cli()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and calls == [] and not (tmp_path / "out").exists()
    assert err.startswith("error: the data check found problems in 1 of the 2 dataset(s) the runs need (msmt17); "
                          "nothing was started:")
    assert "PROBLEM msmt17: query: images" in err and "--no-check-data" in err and "Traceback" not in err
    # told otherwise, it starts
    bench_main(["--suite", str(suite), "--no-check-data"], runner=lambda argv: calls.append(argv))
    assert len(calls) == 1


def test_suite_on_generated_data_passes_the_check(synthetic_tiny_root, tmp_path):
    from dcac_plugin.benchmark.suite import load_suite, run_suite

    calls = []
    summary = run_suite(load_suite(_suite(tmp_path, synthetic_tiny_root)), runner=lambda a: calls.append(a),
                        check_data="quick")
    assert len(calls) == 1 and list(summary.failed) == ["osnet_ma"]  # the fake runner wrote no results


def test_suite_and_custom_datasets_from_the_cli(copy_root, tmp_path, capsys):
    suite = _suite(tmp_path, copy_root)
    assert check_main(["--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "market1501: OK as generated" in out and "msmt17: OK as generated" in out and "dukemtmc" not in out
    shutil.rmtree(copy_root / "msmt17" / "MSMT17_V1" / "test")
    assert check_main(["--suite", str(suite)]) == 1
    assert "PROBLEM msmt17: image folder missing:" in capsys.readouterr().out
    # a data.custom folder dataset: counted, images checked, no expected counts
    market = copy_root / "market1501" / "Market-1501-v15.09.15"
    argv = ["--config-file", str(REPO / "configs" / "demo" / "osnet.yaml"), "data.root", str(copy_root),
            "data.custom", f"mine=folder:{market}", "data.sources", "['mine']", "data.targets", "['mine']"]
    assert check_main(argv) == 0
    out = capsys.readouterr().out
    assert "mine: OK (custom dataset)" in out and "a data.custom dataset: no known counts" in out
    bad = sorted((market / "bounding_box_train").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:100])
    assert check_main(argv) == 1
    assert f"PROBLEM mine: 1 unreadable image(s): {bad} (JPEG without its end marker (truncated))" \
        in capsys.readouterr().out
