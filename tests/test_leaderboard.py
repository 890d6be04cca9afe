"""Result records, published numbers and leaderboard rendering (goldens in tests/golden/).

Regenerate the goldens after an intended change with ``DCAC_UPDATE_GOLDEN=1 pytest
tests/test_leaderboard.py`` and review the diff by eye.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from components import unavailable

from dcac_plugin.benchmark.leaderboard import (
    FORMATS,
    LeaderboardError,
    build_tables,
    latex_escape,
    plot_tables,
    render,
    tables_to_dict,
)
from dcac_plugin.benchmark.records import (
    BASELINE_METHOD,
    MODEL_METHODS,
    RecordError,
    TargetResult,
    column_sort_key,
    expand_per_target,
    load_published,
    load_records,
    method_name,
    parse_published,
    parse_record,
    protocol_key,
)
from dcac_plugin.cli.leaderboard import main as leaderboard_main

GOLDEN = Path(__file__).parent / "golden"
SMALL_PUBLISHED = GOLDEN / "published_small.yaml"
ALL_IMAGES = "all source images (train+query+gallery), best target-test epoch"
METRIC_NAMES = ("mAP", "rank1", "rank5", "rank10", "mINP")
STD = ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np")
RUN_INFO = {"config_file": "configs/x.yaml", "config_hash": "cafe0123", "git_commit": "0a1b2c3d4e5f",
            "device": "cpu (2 threads)", "wall_time_s": 125.0}
CKPT_S1 = b"dcac seed 1234 weights"  # content of the recorded checkpoint of dcac_ma2ms_s1
CKPT_S2 = b"dcac seed 1235 weights, epoch 10"  # latest checkpoint of the old-schema run dcac_ma2ms_s2


def make_record(name, model, sources, targets, values, kind=None, benchmark="real", schema=1, seed=None,
                **extra) -> dict:
    """A results.json record; ``values`` holds one [mAP, R1, R5, R10, mINP] list per target.

    Schema 2 adds the seed, the exact command (and argv) and a checkpoint entry (``extra`` may
    override ``checkpoint``).
    """
    kind = kind or ("multi_source" if len(sources) > 1 else "single_source")
    rec = {
        "schema_version": schema, "run_name": name, "model": model,
        "protocol": {"key": "", "kind": kind, "sources": list(sources), "targets": list(targets),
                     "benchmark": benchmark, "variants": {}},
        "results": {t: dict(zip(METRIC_NAMES, v, strict=True))
                    for t, v in zip(targets, values, strict=True)},
        "status": "ok", "created": "2025-01-01T00:00:00+00:00", **RUN_INFO,
    }
    if schema == 2:
        argv = ["--config-file", "configs/x.yaml", "train.seed", str(seed), "data.save_dir", f"output/{name}"]
        rec.update(seed=seed, argv=argv, command="python tools/train.py " + " ".join(argv), checkpoint=None)
    rec.update(extra)
    return rec


def write_record(root: Path, rec: dict, sub: str = "", files: dict[str, bytes] | None = None) -> Path:
    """Write ``rec`` as ``root/sub/<run_name>/results.json`` and ``files`` (name -> bytes) beside it."""
    path = root / sub / rec["run_name"] / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    for name, data in (files or {}).items():
        (path.parent / name).write_bytes(data)
    return path


def fixture_runs() -> list[tuple[dict, dict[str, bytes]]]:
    """(record, files in its run folder) of the fixture results tree."""
    ma, ms, d = ["market1501"], ["msmt17"], ["dukemtmcreid"]
    ckpt1 = {"file": "checkpoint_ep60.pth", "sha256": hashlib.sha256(CKPT_S1).hexdigest()}
    runs = [
        # new schema: seed, command and checkpoint recorded
        (make_record("dcac_ma2ms_s1", "dcac_vit_b16", ma, ms, [[24.0, 51.0, 66.0, 71.0, 3.0]], schema=2,
                     seed=1234, checkpoint=ckpt1),
         {"config.yaml": b"train:\n  seed: 1234\n", "train.log": b"log\n", "checkpoint_ep60.pth": CKPT_S1}),
        # old schema: seed from config.yaml, latest checkpoint (epoch 10, not 2) hashed here
        (make_record("dcac_ma2ms_s2", "dcac_vit_b16", ma, ms, [[25.0, 52.0, 67.0, 72.0, 3.2]]),
         {"config.yaml": b"train:\n  seed: 1235\n", "train.log": b"log\n", "checkpoint_ep2.pth": b"early",
          "checkpoint_ep10.pth": CKPT_S2}),
        (make_record("clip_ma2x", "clip_reid_vit_b16", ["market1501"], ["msmt17", "dukemtmcreid"],
                     [[21.0, 49.0, 60.0, 65.0, 2.0], [47.0, 66.0, 80.0, 85.0, 10.0]]), {}),
        (make_record("osnet_tri_ma2ms", "osnet_x1_0", ma, ms, [[8.0, 25.0, 40.0, 45.0, 1.0]],
                     loss="softmax+triplet", schema=2, seed=1234), {}),
        # two seeds, hand-checked: mAP 10 and 12 -> 11.0 ± 1.4; R1 30 and 33 -> 31.5 ± 2.1
        (make_record("osnet_ain_ma2d_s1234", "osnet_ain_x1_0", ma, d, [[10.0, 30.0, 40.0, 50.0, 1.0]],
                     loss="softmax", schema=2, seed=1234), {}),
        (make_record("osnet_ain_ma2d_s1235", "osnet_ain_x1_0", ma, d, [[12.0, 33.0, 44.0, 52.0, 2.0]],
                     loss="softmax", schema=2, seed=1235), {}),
        (make_record("clip_multi2ma", "clip_reid_vit_b16", ["dukemtmcreid", "msmt17", "cuhk03_np"], ma,
                     [[50.0, 77.0, 88.0, 91.0, 20.0]]), {}),
        (make_record("syn_dcac", "dcac_vit_b16", ["market1501"], ["msmt17"], [[90.0, 95.0, 99.0, 99.5, 80.0]],
                     benchmark="synthetic"), {}),
        (make_record("syn_osnet", "osnet_x1_0", ["market1501"], ["msmt17"], [[70.0, 95.0, 98.0, 99.0, 60.0]],
                     benchmark="synthetic", loss="softmax"), {}),
    ]
    multi = {"market1501": [56.0, 80.0], "dukemtmcreid": [59.0, 75.0], "msmt17": [27.0, 56.0],
             "cuhk03_np": [42.0, 43.0]}
    for tgt, (m, r) in multi.items():
        srcs = [s for s in STD if s != tgt]
        runs.append((make_record(f"dcac_multi2{tgt}", "dcac_vit_b16", srcs, [tgt], [[m, r, 90.0, 92.0, 10.0]],
                                 schema=2, seed=1234), {"train.log": b"log\n"}))
    return runs


def fixture_records() -> list[dict]:
    return [rec for rec, _ in fixture_runs()]


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """The fixture tree under ``<tmp>/results``; the working directory is ``<tmp>`` and the returned
    path is relative (``results``), so recorded paths, and the goldens, do not depend on ``tmp``."""
    monkeypatch.chdir(tmp_path)
    root = Path("results")
    for i, (rec, files) in enumerate(fixture_runs()):
        write_record(root, rec, sub=f"group{i % 2}", files=files)
    return root


@pytest.fixture
def golden_tables(results_dir):
    results = expand_per_target(load_records(results_dir))
    return build_tables(results, load_published(SMALL_PUBLISHED))


def _table(tables, kind, benchmark="real"):
    return next(t for t in tables if t.benchmark == benchmark and t.kind == kind)


# ----------------------------------------------------------------------------------------------
# records


def test_protocol_keys_and_column_order():
    assert protocol_key("single_source", ["market1501"], "msmt17") == "MA->MS"
    assert protocol_key("single_source", ["cuhk03"], "msmt17_trainval") == "C3->MS"
    assert protocol_key("multi_source", ["dukemtmcreid", "msmt17", "cuhk03_np"], "market1501") == "MA"
    # not leave-one-out over the four standard datasets -> explicit key, never confused with "MS"
    assert protocol_key("multi_source", ["market1501", "dukemtmcreid"], "msmt17") == "MA+D->MS"
    assert protocol_key("single_source", ["mydata"], "market1501") == "mydata->MA"
    keys = ["C3->MS", "MA->MS", "D->MA", "MA->D", "average", "C3", "MA", "zz->MA"]
    assert sorted(keys, key=column_sort_key) == ["MA", "C3", "MA->D", "MA->MS", "D->MA", "C3->MS",
                                                 "zz->MA", "average"]


def test_method_names():
    assert method_name("dcac_vit_b16") == "DCAC"
    assert method_name("clip_reid_vit_b16") == BASELINE_METHOD
    assert method_name("osnet_x1_0") == "OSNet"
    assert method_name("osnet_ain_x1_0") == "OSNet-AIN"
    assert method_name("osnet_ibn_x1_0", loss="softmax") == "OSNet-IBN"
    assert method_name("resnet50", loss="softmax+triplet") == "ResNet-50 (triplet)"
    assert method_name("dcac_vit_b16", loss="softmax+triplet") == "DCAC"  # suffix only for baselines
    assert method_name("osnet_x1_0", method="My OSNet") == "My OSNet"
    assert method_name("mystery_net") == "mystery_net"
    # the CLIP baseline's name must match the published yaml's row exactly
    assert BASELINE_METHOD in {p.method for p in load_published()}


def test_load_records_recursive_and_skips_failed_status(results_dir):
    records = load_records(results_dir)
    assert len(records) == len(fixture_records())
    assert {r.path.parent.parent.name for r in records} == {"group0", "group1"}
    bad = make_record("broken_run", "osnet_x1_0", ["market1501"], ["msmt17"], [[1.0, 2.0, 3.0, 4.0, 0.5]])
    bad["status"] = "diverged"
    write_record(results_dir, bad)
    assert len(load_records(results_dir)) == len(fixture_records())


def test_expand_per_target_multi_target_run():
    rec = parse_record(fixture_records()[2])
    rows = expand_per_target([rec])
    assert [(r.key, r.target, r.metrics["mAP"], r.metrics["rank1"]) for r in rows] == [
        ("MA->MS", "msmt17", 21.0, 49.0), ("MA->D", "dukemtmcreid", 47.0, 66.0)]
    assert all(r.method == BASELINE_METHOD and r.benchmark == "real" for r in rows)


def test_provenance_schema_v2_recorded_and_v1_from_run_folder(results_dir):
    by = {r.run_name: r for r in load_records(results_dir)}
    new = by["dcac_ma2ms_s1"]
    p = new.provenance
    run_dir = Path("results/group0/dcac_ma2ms_s1")
    assert new.seed == 1234 and p.run_dir == str(run_dir) and p.results_file == str(run_dir / "results.json")
    assert p.config_yaml == str(run_dir / "config.yaml") and p.train_log == str(run_dir / "train.log")
    assert p.command == ("python tools/train.py --config-file configs/x.yaml train.seed 1234 "
                         "data.save_dir output/dcac_ma2ms_s1")
    assert (p.config_file, p.config_hash, p.git_commit, p.device, p.wall_time_s) == (
        "configs/x.yaml", "cafe0123", "0a1b2c3d4e5f", "cpu (2 threads)", 125.0)
    # a relative checkpoint file is relative to the run folder; its recorded sha256 is kept
    assert p.checkpoint == str(run_dir / "checkpoint_ep60.pth") and p.checkpoint_recorded
    assert p.checkpoint_sha256 == hashlib.sha256(CKPT_S1).hexdigest()
    # old record: seed from config.yaml, the latest checkpoint by epoch number (10 > 2), no command
    old = by["dcac_ma2ms_s2"]
    assert old.seed == 1235 and old.provenance.command is None
    assert old.provenance.checkpoint == str(Path("results/group1/dcac_ma2ms_s2/checkpoint_ep10.pth"))
    assert old.provenance.checkpoint_sha256 is None and not old.provenance.checkpoint_recorded
    # no files at all: unknown; a v2 record with "checkpoint": null kept none
    bare = by["clip_ma2x"].provenance
    assert (by["clip_ma2x"].seed, bare.config_yaml, bare.train_log, bare.checkpoint) == (None, None, None, None)
    tri = by["osnet_tri_ma2ms"].provenance
    assert tri.checkpoint is None and tri.checkpoint_recorded
    # argv alone gives the command, shell-quoted
    rec = make_record("a", "osnet_x1_0", ["market1501"], ["msmt17"], [[1.0, 2.0, 3.0, 4.0, 0.5]], schema=2,
                      seed=7, argv=["--config-file", "my configs/a.yaml"])
    del rec["command"]
    assert parse_record(rec).provenance.command == "--config-file 'my configs/a.yaml'"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("results"), "missing key 'results'"),
    (lambda d: d["protocol"].pop("benchmark"), "missing key 'protocol.benchmark'"),
    (lambda d: d["protocol"].update(benchmark="fake"), "protocol.benchmark must be one of"),
    (lambda d: d["protocol"].update(kind="cross"), "protocol.kind must be one of"),
    (lambda d: d["results"]["msmt17"].update(mAP=0.234 * 1000), "outside [0, 100]"),
    (lambda d: d["results"]["msmt17"].pop("rank1"), "lacks required metric 'rank1'"),
    (lambda d: d["results"].update(market1501={"mAP": 1, "rank1": 2}), "not in protocol.targets"),
    (lambda d: d.update(schema_version=3), "schema_version 3 is not supported (this version reads 1, 2)"),
    (lambda d: d.update(schema_version=True), "key 'schema_version' must be int"),
    (lambda d: d.update(seed="1234"), "key 'seed' must be int"),
    (lambda d: d.update(argv=["--x", 3]), "key 'argv' must be a list of strings"),
    (lambda d: d.update(checkpoint="ckpt.pth"), "key 'checkpoint' must be null or an object"),
    (lambda d: d.update(checkpoint={"file": "c.pth", "sha256": "abc"}), "key 'checkpoint.sha256' must be 64 hex"),
    (lambda d: d.update(wall_time_s="long"), "key 'wall_time_s' must be a number"),
])
def test_malformed_record_names_file_and_key(tmp_path, mutate, message):
    rec = make_record("r", "osnet_x1_0", ["market1501"], ["msmt17"], [[10.0, 20.0, 30.0, 40.0, 1.0]], schema=2,
                      seed=1)
    mutate(rec)
    path = write_record(tmp_path, rec)
    with pytest.raises(RecordError) as exc:
        load_records(tmp_path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_invalid_json_and_missing_dir(tmp_path):
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON") as exc:
        load_records(tmp_path)
    assert str(path) in str(exc.value)
    with pytest.raises(FileNotFoundError, match="results directory not found"):
        load_records(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------
# published numbers


def test_packaged_published_numbers_every_cell_sourced():
    pub = load_published()
    # 92 single- + 45 multi-source cells (DCAC paper) + 62 later-work cells + 30 torchreid model-zoo cells
    assert len(pub) == 229
    assert all(p.source for p in pub)
    by = {(p.label, p.kind, p.key): p for p in pub}
    dcac = by[("DCAC", "single_source", "MA->MS")]
    assert (dcac.mAP, dcac.rank1, dcac.later_work) == (23.4, 52.1, False)
    assert dcac.source.startswith("Li & Gong, Sensors 2025")
    assert (by[("DCAC", "multi_source", "average")].mAP, by[("DCAC", "multi_source", "average")].rank1) == (
        46.4, 63.9)
    muva = by[("MUVA", "multi_source", "MA")]
    assert muva.later_work and muva.source.startswith("Li et al., MUVA") and muva.mAP == 66.7
    assert by[("SVIL", "multi_source", "MS")].source == "as cited in MUVA Table 3 (TOMM 2024)"
    div = by[("DiverseReID+IL", "multi_source", "average")]
    assert (div.mAP, div.rank1) == (48.2, 64.0)
    assert dict(div.flags) == {"protocol": ALL_IMAGES, "msmt17": "V1",
                               "cuhk03_split": "NP labeled (its code's default)"}
    # DiverseReID alone (its figures/sota3.png); 37.0/58.3 and 40.4/70.4 are the "+IL" row
    assert [(by[("DiverseReID", "single_source", k)].mAP, by[("DiverseReID", "single_source", k)].rank1)
            for k in ("MA->D", "D->MA")] == [(34.7, 54.7), (36.2, 64.5)]
    assert [(by[("DiverseReID+IL", "single_source", k)].mAP, by[("DiverseReID+IL", "single_source", k)].rank1)
            for k in ("MA->D", "D->MA")] == [(37.0, 58.3), (40.4, 70.4)]
    assert dict(by[("IL", "multi_source", "MA")].flags) == {"protocol": ALL_IMAGES, "msmt17": "V1",
                                                            "cuhk03_split": "NP detected (its log)"}
    assert dict(by[("MetaBIN", "multi_source", "C3")].flags)["protocol"] == ALL_IMAGES
    assert dict(by[("ACL", "multi_source", "C3")].flags)["protocol"] == ALL_IMAGES
    # torchreid's model zoo prints "Rank-1 (mAP)"; stored as [mAP, Rank-1]
    ain = by[("OSNet-AIN (torchreid)", "single_source", "MS->D")]
    assert (ain.method, ain.tag, ain.mAP, ain.rank1) == ("OSNet-AIN", "torchreid", 52.7, 71.1)
    assert dict(ain.flags)["distance"] == "cosine" and "combineall=True" in dict(ain.flags)["msmt17_source"]
    ibn = by[("OSNet-IBN (torchreid)", "single_source", "MA->D")]
    assert (ibn.mAP, ibn.rank1) == (26.7, 48.5) and ibn.source.startswith("torchreid model zoo")
    # the zoo's multi-source table: cosine distance for all three models, no combineall claim
    for label, ms in {"OSNet (torchreid)": (12.6, 33.2), "OSNet-IBN (torchreid)": (16.2, 39.8),
                      "OSNet-AIN (torchreid)": (16.2, 40.2)}.items():
        cell = by[(label, "multi_source", "MS")]
        assert (cell.mAP, cell.rank1) == ms and cell.tag == "torchreid"
        assert dict(cell.flags)["distance"] == "cosine" and "combineall" not in dict(cell.flags)["msmt17_source"]
    assert ("OSNet-AIN", "multi_source", "MA") not in by  # only as torchreid's row
    zoo = [p for p in pub if p.tag == "torchreid"]
    assert len(zoo) == 30 and {p.method for p in zoo} <= set(MODEL_METHODS.values())
    # the sources' marks are flags (kept by csv and json), not row-name text
    assert not [p.label for p in pub if "dagger" in p.label or "input >" in p.label]
    assert dict(by[("MDA", "single_source", "MS->MA")].flags) == {"test_time": "uses target-domain data"}
    for label in ("TransMatcher", "QAConv-GS", "QAConv-MS"):
        kind = "multi_source" if label == "QAConv-MS" else "single_source"
        assert dict(next(p for p in pub if p.label == label and p.kind == kind).flags) == {
            "input": "larger than 256x128"}
    # combineall (Com-MS) cells of the DCAC table, MSMT17 versions, CUHK03 splits
    for label in ("OSNet-IBN", "SNR", "QAConv"):
        assert "combineall=True" in dict(by[(label, "single_source", "MS->MA")].flags)["msmt17_source"]
    assert dict(by[("APC", "multi_source", "MA")].flags) == {"msmt17": "V1 (its code)", "cuhk03_split": "unverified"}
    for label in ("M3L", "M3L-IBN"):
        assert dict(by[(label, "multi_source", "MA")].flags) == {"cuhk03_split": "classic (as a source)",
                                                                 "msmt17": "V2"}
    assert dict(by[("QAConv50", "multi_source", "MA")].flags) == {"msmt17": "V1"}
    # a backbone flag on some rows would imply the others differ: none carries one
    assert not [p.label for p in pub if "backbone" in dict(p.flags)]
    keys = {p.key for p in pub if p.kind == "single_source"}
    assert len(keys) == 12 and all("->" in k for k in keys)
    assert {p.key for p in pub if p.kind == "multi_source"} == {"MA", "D", "MS", "C3", "average"}


def test_published_tables_alone_computed_averages_and_marks_over_all_rows():
    (single, single_other, multi, multi_other) = build_tables([], load_published())
    assert (single.protocol, multi.protocol) == (None, None)
    assert single_other.protocol == multi_other.protocol == ALL_IMAGES
    rows = {r.label: r for r in multi.rows}
    muva = rows["MUVA"].cells["average"]
    assert muva.computed and muva.values == {"mAP": pytest.approx(53.4), "rank1": pytest.approx(69.55)}
    for label, (m, r) in {"APC": (48.725, 65.25), "SVIL": (47.45, 63.025)}.items():
        cell = rows[label].cells["average"]
        assert cell.computed and cell.values == {"mAP": pytest.approx(m), "rank1": pytest.approx(r)}
    dcac = rows["DCAC"].cells["average"]  # printed: kept as printed, not recomputed
    assert not dcac.computed and dcac.values == {"mAP": 46.4, "rank1": 63.9}
    assert "average" not in rows["QAConv-MS"].cells  # D missing: no average
    assert rows["MUVA"].cells["average"].marks == {"mAP": "best", "rank1": "best"}
    assert rows["APC"].cells["average"].marks == {"mAP": "second", "rank1": "second"}  # 48.725 -> 48.7
    assert dcac.marks == {}
    md = render([single, multi], "github")
    muva_line = next(x for x in md.splitlines() if x.startswith("| MUVA ") and "Average" not in x and "69.6" in x)
    assert "**53.4**/**69.6**†" in muva_line  # 69.55 rounds half-up
    dcac_line = [x for x in md.splitlines() if x.startswith("| DCAC ")][1]
    assert dcac_line.rstrip(" |").endswith("46.4/63.9")
    assert "| MDA<sup>c</sup> " in md and "<sup>c</sup> uses target-domain data at test time" in md
    assert "† Average computed here from the four columns" in md
    osnet_ibn = {r.label for r in single.rows if r.method == "OSNet-IBN"}
    assert osnet_ibn == {"OSNet-IBN", "OSNet-IBN (torchreid)"}


def test_other_protocol_rows_ranked_apart_marks_within_one_protocol():
    """Rows trained on all source images with target-selected epochs never take a train-split mark."""
    tables = build_tables([], load_published())
    multi = next(t for t in tables if t.kind == "multi_source" and t.protocol is None)
    other = next(t for t in tables if t.kind == "multi_source" and t.protocol == ALL_IMAGES)
    assert {r.label for r in other.rows} == {"DiverseReID+IL", "DiverseReID", "IL", "MetaBIN", "ACL"}
    assert not {r.label for r in multi.rows} & {r.label for r in other.rows}
    rows = {r.label: r for r in multi.rows}
    # leave-one-out MA within the train-split protocol: mAP MUVA 66.7 > QAConv-MS 65.2;
    # R1 QAConv-MS 87.1 > MUVA and SVIL 86.1 (tied)
    assert rows["MUVA"].cells["MA"].marks == {"mAP": "best", "rank1": "second"}
    assert rows["QAConv-MS"].cells["MA"].marks == {"mAP": "second", "rank1": "best"}
    assert rows["SVIL"].cells["MA"].marks == {"rank1": "second"}
    assert {r.label: r.cells["MA"].marks for r in other.rows}["DiverseReID+IL"] == {"mAP": "best", "rank1": "best"}
    # reproduced rows go to the standard table only, with their "ours - torchreid" rows
    mine = [TargetResult(run_name=f"osnet_m_s{s}", method="OSNet", kind="multi_source", benchmark="real", key="MA",
                         sources=["dukemtmcreid", "msmt17", "cuhk03"], target="market1501", seed=s,
                         metrics={"mAP": 44.0 + s, "rank1": 72.0}) for s in (1, 2)]
    tables = build_tables(mine, load_published(), protocol="multi")
    assert [t.protocol for t in tables] == [None, ALL_IMAGES]
    labels = [r.label for r in tables[0].rows]
    assert "OSNet (ours)" in labels and "OSNet: ours - torchreid" in labels
    assert [r.origin for r in tables[1].rows] == ["published"] * 5
    diff = next(r for r in tables[0].rows if r.label == "OSNet: ours - torchreid")
    assert diff.cells["MA"].values == {"mAP": pytest.approx(45.5 - 44.2), "rank1": pytest.approx(72.0 - 72.5)}
    # json carries every flag, and each table's protocol
    doc = json.loads(render(build_tables([], load_published()), "json"))
    assert [t["protocol"] for t in doc["tables"]] == [None, ALL_IMAGES, None, ALL_IMAGES]
    flags = {(t["kind"], r["label"]): {f["name"]: f["value"] for f in r.get("flags", [])}
             for t in doc["tables"] for r in t["rows"]}
    assert flags[("single_source", "MDA")] == {"test_time": "uses target-domain data"}
    assert flags[("multi_source", "OSNet-AIN (torchreid)")]["distance"] == "cosine"
    assert flags[("multi_source", "IL")]["protocol"] == ALL_IMAGES
    assert all(f.get("protocol") == ALL_IMAGES for (k, label), f in flags.items()
               if label in ("DiverseReID", "DiverseReID+IL", "IL", "MetaBIN", "ACL"))
    csv_text = render(build_tables([], load_published()), "csv")
    assert any(line.startswith("real,single_source,TransMatcher,TransMatcher,published,MS->MA,") and
               "input larger than 256x128" in line for line in csv_text.splitlines())


def test_readme_published_tables_equal_the_renderer():
    """README's published tables are what `tools/leaderboard.py --published --format github` prints."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("#### Single-source DG: real datasets\n")
    end = readme.index("\n## ", start)
    expected = render(build_tables([], load_published()), "github").replace("### ", "#### ")
    assert readme[start:end].strip() == expected.strip()


def test_published_parse_errors(tmp_path):
    with pytest.raises(RecordError, match="top-level 'source'"):
        parse_published({"single_source": {}})
    with pytest.raises(RecordError, match="later_work.X needs its own 'source'"):
        parse_published({"source": "s", "later_work": {"X": {"multi_source": {"MA": [1.0, 2.0]}}}})
    with pytest.raises(RecordError, match=r"key 'single_source.A.MA->D'.*must be \[mAP, Rank-1\]"):
        parse_published({"source": "s", "single_source": {"A": {"MA->D": [1.0]}}})
    with pytest.raises(RecordError, match=r"key 'other_sources.Z \(zoo\).flags' must map"):
        parse_published({"source": "s", "other_sources": {"Z (zoo)": {"source": "z", "flags": ["V1"]}}})
    with pytest.raises(RecordError, match=r"key 'later_work.X' has unknown keys \['flag'\]"):
        parse_published({"source": "s", "later_work": {"X": {"source": "x", "flag": {}}}})
    with pytest.raises(RecordError, match="of method 'A' with tag 'paper'"):
        parse_published({"source": "s", "multi_source": {"A": {"MA": [1.0, 2.0]}},
                         "later_work": {"A2": {"source": "t", "method": "A", "multi_source": {"MA": [1.0, 2.0]}}}})
    bad = tmp_path / "pub.yaml"
    bad.write_text("source: s\nsingle_source: {A: {MA->D: [1.0, 2.0]}\n")
    with pytest.raises(RecordError, match=r"pub.yaml line \d+ column \d+: ") as exc:
        load_published(bad)
    assert str(bad) in str(exc.value)


# ----------------------------------------------------------------------------------------------
# tables


def _tr(method: str, key: str, m: float, r: float, benchmark="real", kind="single_source",
        seed=None) -> TargetResult:
    return TargetResult(run_name=f"{method}_{key}_{seed}", method=method, kind=kind, benchmark=benchmark, key=key,
                        sources=["market1501"], target="msmt17", metrics={"mAP": m, "rank1": r}, seed=seed)


def test_best_and_second_best_marks_hand_case():
    results = [_tr("A", "MA->MS", 50.0, 70.0), _tr("B", "MA->MS", 50.04, 60.0),
               _tr("C", "MA->MS", 40.0, 70.0), _tr("D", "MA->MS", 30.0, 65.0),
               _tr("A", "MA->D", 10.0, 20.0)]  # a lone value is not marked
    (table,) = build_tables(results)
    marks = {r.method: r.cells["MA->MS"].marks for r in table.rows}
    assert marks == {"A": {"mAP": "best", "rank1": "best"}, "B": {"mAP": "best"},
                     "C": {"mAP": "second", "rank1": "best"}, "D": {"rank1": "second"}}
    assert table.rows[0].cells["MA->D"].marks == {}
    md = render([table], "github")
    assert md.splitlines()[4:8] == [
        "| A (ours) | this repo | 1      | 10.0/20.0 | **50.0**/**70.0** |",
        "| B (ours) | this repo | 1      |           | **50.0**/60.0     |",
        "| C (ours) | this repo | 1      |           | _40.0_/**70.0**   |",
        "| D (ours) | this repo | 1      |           | 30.0/_65.0_       |",
    ]
    tex = render([table], "latex")
    assert r"\textbf{50.0}/\textbf{70.0}" in tex and r"\underline{40.0}/\textbf{70.0}" in tex
    html_text = render([table], "html", embed_plot=False)
    assert "<b>50.0</b>/<b>70.0</b>" in html_text and "30.0/<i>65.0</i>" in html_text
    flags = tables_to_dict([table])["tables"][0]["rows"][2]["cells"]["MA->MS"]["mark"]
    assert flags == {"mAP": "second", "rank1": "best"}


def test_rounding_half_up_for_display_and_marks():
    # 48.25 and 48.35 (exact halves) round up; 48.3 and 48.4 are then distinct best/second
    (table,) = build_tables([_tr("A", "MA->MS", 48.25, 1.0), _tr("B", "MA->MS", 48.35, 1.0),
                             _tr("C", "MA->MS", 48.3, 1.0)])
    cells = {r.method: r.cells["MA->MS"] for r in table.rows}
    assert (cells["B"].marks["mAP"], cells["A"].marks["mAP"], cells["C"].marks["mAP"]) == ("best", "second", "second")
    assert "**48.4**/" in render([table], "github") and "_48.3_/" in render([table], "github")


def test_mean_std_over_seeds_hand_case(golden_tables):
    single = _table(golden_tables, "single_source")
    rows = {r.label: r for r in single.rows}
    cell = rows["OSNet-AIN (ours)"].cells["MA->D"]
    assert cell.n == 2 and [r.seed for r in cell.runs] == [1234, 1235]
    assert cell.values["mAP"] == pytest.approx(11.0) and cell.std["mAP"] == pytest.approx(2 ** 0.5)  # ddof=1
    assert cell.values["rank1"] == pytest.approx(31.5) and cell.std["rank1"] == pytest.approx(4.5 ** 0.5)
    md = render(golden_tables, "github")
    line = next(x for x in md.splitlines() if x.startswith("| OSNet-AIN (ours)"))
    assert "11.0±1.4/31.5±2.1" in line and line.split("|")[3].strip() == "2"
    assert "sample standard deviation, ddof=1" in md
    assert "11.0$\\pm$1.4/31.5$\\pm$2.1" in render(golden_tables, "latex")
    assert "11.0±1.4/31.5±2.1" in render(golden_tables, "html", embed_plot=False)
    csv_line = next(x for x in render(golden_tables, "csv").splitlines() if x.startswith(
        "real,single_source,OSNet-AIN,OSNet-AIN (ours)"))
    assert csv_line.split(",")[6:14] == ["11.00", "31.50", "1.41", "2.12", "", "", "2", "1234;1235"]
    doc = tables_to_dict(golden_tables)
    jrow = next(r for r in doc["tables"][0]["rows"] if r["label"] == "OSNet-AIN (ours)")
    jcell = jrow["cells"]["MA->D"]
    assert jcell["mean"]["mAP"] == 11.0 and jcell["std"]["mAP"] == pytest.approx(1.4142, abs=1e-4)
    assert jcell["n"] == 2 and jcell["std"]["mINP"] == pytest.approx(0.7071, abs=1e-4)
    assert [(r["run"], r["seed"], r["mAP"], r["rank1"]) for r in jcell["runs"]] == [
        ("osnet_ain_ma2d_s1234", 1234, 10.0, 30.0), ("osnet_ain_ma2d_s1235", 1235, 12.0, 33.0)]
    # a single run: no std, no ±
    dcac_single = rows["OSNet (triplet) (ours)"].cells["MA->MS"]
    assert dcac_single.n == 1 and dcac_single.std == {}
    assert "| 8.0/25.0" in next(x for x in md.splitlines() if x.startswith("| OSNet (triplet) (ours)"))


def test_ours_minus_published_and_provenance(golden_tables):
    single = _table(golden_tables, "single_source")
    rows = {r.label: r for r in single.rows}
    ours = rows["DCAC (ours)"].cells["MA->MS"]
    assert ours.n == 2 and ours.values["mAP"] == pytest.approx(24.5) and ours.std["mAP"] == pytest.approx(0.7071,
                                                                                                      abs=1e-4)
    assert ours.values["rank1"] == pytest.approx(51.5)
    assert ours.values["mINP"] == pytest.approx(3.1)
    diff = rows["DCAC: ours - paper"].cells
    assert set(diff) == {"MA->MS"}  # only where both exist
    assert diff["MA->MS"].values == {"mAP": pytest.approx(1.1), "rank1": pytest.approx(-0.6)}  # of the means
    bdiff = rows[f"{BASELINE_METHOD}: ours - paper"].cells
    assert bdiff["MA->D"].values == {"mAP": pytest.approx(-0.8), "rank1": pytest.approx(-1.3)}
    assert bdiff["MA->MS"].values["mAP"] == pytest.approx(-1.0)
    # a reproduced torchreid baseline against torchreid's own published row of the same model
    assert "OSNet-AIN (torchreid)" in rows
    tdiff = rows["OSNet-AIN: ours - torchreid"]
    assert tdiff.cells["MA->D"].values == {"mAP": pytest.approx(11.0 - 30.5), "rank1": pytest.approx(31.5 - 52.4)}
    assert tdiff.source == "Model zoo E (fixture)"
    assert "PAT: ours - paper" not in rows and "PAT" in rows and "DCAC (paper)" in rows
    assert rows["OSNet (triplet) (ours)"].cells["MA->MS"].values["mAP"] == 8.0
    # diff rows never take part in the marks
    assert all(not c.marks for r in single.rows if r.origin == "diff" for c in r.cells.values())
    # provenance per run, in the cell, in run-seed order
    s1, s2 = ours.runs
    assert (s1.run_name, s1.seed, s1.metrics["mAP"], s2.run_name, s2.seed) == (
        "dcac_ma2ms_s1", 1234, 24.0, "dcac_ma2ms_s2", 1235)
    assert s1.provenance.command.startswith("python tools/train.py --config-file configs/x.yaml train.seed 1234")
    doc = tables_to_dict(golden_tables)
    jruns = next(r for r in doc["tables"][0]["rows"] if r["label"] == "DCAC (ours)")["cells"]["MA->MS"]["runs"]
    p1, p2 = jruns[0]["provenance"], jruns[1]["provenance"]
    for key in ("run_dir", "config_yaml", "config_hash", "command", "git_commit", "checkpoint",
                "checkpoint_sha256", "train_log", "wall_time_s", "device"):
        assert p1[key] is not None, key
    assert (p1["checkpoint_sha256"], p1["checkpoint_sha256_from"]) == (hashlib.sha256(CKPT_S1).hexdigest(),
                                                                     "recorded")
    assert (p2["checkpoint_sha256"], p2["checkpoint_sha256_from"]) == (hashlib.sha256(CKPT_S2).hexdigest(),
                                                                     "computed")
    assert p2["command"] is None and p2["config_yaml"] == str(Path("results/group1/dcac_ma2ms_s2/config.yaml"))


def test_multi_source_average_for_every_complete_row(golden_tables):
    multi = _table(golden_tables, "multi_source")
    rows = {r.label: r for r in multi.rows}
    avg = rows["DCAC (ours)"].cells["average"]
    assert avg.computed and avg.values == {"mAP": pytest.approx(46.0), "rank1": pytest.approx(63.5)}
    assert avg.n == 1 and avg.std == {}  # one seed (1234) with all four targets
    assert "average" not in rows[f"{BASELINE_METHOD} (ours)"].cells  # only MA present
    assert "average" not in rows["MUVA"].cells  # two targets only
    svil = rows["SVIL"].cells["average"]  # all four, none printed: computed here
    assert svil.computed and svil.values == {"mAP": pytest.approx(47.45), "rank1": pytest.approx(63.025)}
    assert not rows["DCAC (paper)"].cells["average"].computed
    assert rows["DCAC: ours - paper"].cells["average"].values["mAP"] == pytest.approx(-0.4)
    assert multi.columns == ["MA", "D", "MS", "C3", "average"]
    # best average over ALL rows: mAP DiverseReID+IL's printed 48.2, then SVIL's computed 47.45 -> 47.5
    # (DCAC paper 46.4, ours 46.0); R1 64.0 (DiverseReID+IL), then DCAC paper's 63.9 (SVIL 63.025 -> 63.0)
    assert rows["DiverseReID+IL"].cells["average"].marks == {"mAP": "best", "rank1": "best"}
    assert svil.marks == {"mAP": "second"} and rows["DCAC (paper)"].cells["average"].marks == {"rank1": "second"}


def test_reproduced_average_std_over_seeds_with_all_four_targets():
    seeds = {1: [10.0, 20.0, 30.0, 40.0], 2: [12.0, 22.0, 32.0, 42.0]}  # per-seed averages 25 and 27
    results = [_tr("M", code, m, m, kind="multi_source", seed=s)
               for s, ms in seeds.items() for code, m in zip(("MA", "D", "MS", "C3"), ms, strict=True)]
    (table,) = build_tables(results)
    avg = table.rows[0].cells["average"]
    assert avg.n == 2 and [r.seed for r in avg.runs] == [1, 2]
    assert [r.metrics["mAP"] for r in avg.runs] == [25.0, 27.0]
    assert avg.values["mAP"] == pytest.approx(26.0) and avg.std["mAP"] == pytest.approx(2 ** 0.5)
    assert "26.0±1.4/26.0±1.4†" in render([table], "github")
    # seed 2 missing for C3: the average is the mean of the column means, without a ±
    (table,) = build_tables(results[:-1])
    avg = table.rows[0].cells["average"]
    assert avg.std == {} and avg.n == 0 and avg.values["mAP"] == pytest.approx((11 + 21 + 31 + 40) / 4)


def test_synthetic_never_mixed_with_real_or_published(results_dir):
    results = expand_per_target(load_records(results_dir))
    tables = build_tables(results, load_published())
    syn = [t for t in tables if t.benchmark == "synthetic"]
    assert len(syn) == 1 and "GENERATED benchmark" in syn[0].title
    assert {r.origin for r in syn[0].rows} == {"ours"}
    assert {r.label for r in syn[0].rows} == {"DCAC (ours)", "OSNet (ours)"}
    assert syn[0].rows[0].cells["MA->MS"].values["mAP"] == 90.0
    real = [t for t in tables if t.benchmark == "real"]
    real_dcac = next(r for r in real[0].rows if r.label == "DCAC (ours)").cells["MA->MS"]
    assert real_dcac.values["mAP"] == pytest.approx(24.5) and real_dcac.n == 2  # synthetic not averaged in
    assert all(r.label != "OSNet (ours)" for t in real for r in t.rows)
    only_syn = build_tables(results, load_published(), benchmark="synthetic")
    assert [t.benchmark for t in only_syn] == ["synthetic"]
    assert all(r.origin == "ours" for t in only_syn for r in t.rows)
    doc = tables_to_dict(tables)
    assert [t["generated_benchmark"] for t in doc["tables"]] == [False, False, False, False, True]
    md = render(tables, "github")
    syn_part = md[md.index("GENERATED benchmark"):]
    assert "paper" not in syn_part and "[1]" not in syn_part.split("Sources:")[0]


def test_protocol_filter_and_bad_options(results_dir):
    results = expand_per_target(load_records(results_dir))
    assert [t.kind for t in build_tables(results, protocol="multi")] == ["multi_source"]
    assert [(t.benchmark, t.kind) for t in build_tables(results, protocol="single")] == [
        ("real", "single_source"), ("synthetic", "single_source")]
    with pytest.raises(LeaderboardError, match="unknown protocol"):
        build_tables(results, protocol="both")
    with pytest.raises(LeaderboardError, match="unknown format 'pdf'"):
        render(build_tables(results), "pdf")
    with pytest.raises(LeaderboardError, match="unknown metric"):
        render(build_tables(results), "github", metric="R5")


def test_metric_option_single_values(golden_tables):
    md = render(golden_tables, "github", metric="rank1")
    line = next(x for x in md.splitlines() if x.startswith("| DCAC (ours)"))
    assert line.split("|")[4:6] == ["          ", " _51.5±0.7_ "]  # R1 52.1 (paper) is best
    assert "Cells: R1 in %." in md


def test_latex_escape():
    assert latex_escape("MA->D") == r"MA$\rightarrow$D"
    assert latex_escape("a_b & 5% > 2") == r"a\_b \& 5\% $>$ 2"
    assert latex_escape("1.0±0.2†") == r"1.0$\pm$0.2\dag{}"


_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden_output(golden_tables, fmt):
    suffix = {"github": "md", "latex": "tex"}.get(fmt, fmt)
    path = GOLDEN / f"leaderboard.{suffix}"
    text = render(golden_tables, fmt)
    if fmt == "html":  # the PNG's bytes depend on the matplotlib version: checked in the html tests
        assert len(_DATA_URI.findall(text)) == 1
        text = _DATA_URI.sub("data:image/png;base64,PLOT", text)
    if os.environ.get("DCAC_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    if fmt == "json":
        doc = json.loads(text)
        assert [s["text"] for s in doc["sources"]] == [
            "Paper A (fixture)", "Paper B (fixture, later work)", "Model zoo E (fixture)",
            "Paper C (fixture, cited)", "Paper D (fixture, flags)"]


def test_plot_is_valid_png(golden_tables, tmp_path):
    from PIL import Image

    out = plot_tables(golden_tables, tmp_path / "plots" / "lb.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 500 and img.size[1] > 500
    with pytest.raises(LeaderboardError, match="nothing to plot"):
        plot_tables([], tmp_path / "empty.png")


# ----------------------------------------------------------------------------------------------
# html page


class _Page(HTMLParser):
    """Collects the tags and attributes of an html page (what the html tests inspect)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def attr(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.tags if t == tag and a.get(name) is not None]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _file_links(page: _Page) -> list[str]:
    return [h for h in page.attr("a", "href") if not h.startswith("#")]


def test_html_page_self_contained_with_relative_links(results_dir, tmp_path):
    out = Path("site/pages/lb.html")  # two folders below the working directory
    assert leaderboard_main(["--results", str(results_dir), "--published-file", str(SMALL_PUBLISHED),
                             "--format", "html", "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text and "<script>" in text
    # nothing fetched from anywhere: no external src/href, no <link>, no script src
    refs = page.attr("img", "src") + page.attr("script", "src") + page.attr("a", "href") + page.attr("link", "href")
    assert not [r for r in refs if re.match(r"(?i)(https?:)?//", r)]
    assert not page.attr("script", "src") and not page.attr("link", "href")
    (src,) = page.attr("img", "src")
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # links to each reproduced run's files, relative to the page, resolving to existing files
    links = _file_links(page)
    assert "../../results/group0/dcac_ma2ms_s1/" in links
    assert "../../results/group0/dcac_ma2ms_s1/checkpoint_ep60.pth" in links
    assert "../../results/group1/dcac_ma2ms_s2/checkpoint_ep10.pth" in links
    assert "../../results/group1/dcac_ma2ms_s2/config.yaml" in links
    for href in links:
        assert (out.parent / unquote(href)).exists(), href
    # provenance visible: full sha256 (recorded and computed), command, commit, device; unknowns said so
    assert hashlib.sha256(CKPT_S1).hexdigest() + "</code> (recorded)" in text
    assert hashlib.sha256(CKPT_S2).hexdigest() + "</code> (computed here)" in text
    assert "train.seed 1234 data.save_dir output/dcac_ma2ms_s1" in text and "0a1b2c3d4e5f" in text
    assert "checkpoint: none" in text and "config.yaml: unknown" in text
    # markers, legend, every published source as a footnote, tables sortable
    # (flag letters in order of first appearance: a = cosine distance in the single-source table)
    assert 'MSMT17 V1; CUHK03 split unverified">b,c</sup>' in text and "<sup>b</sup> MSMT17 V1" in text
    assert "<sup>a</sup> cosine distance at test time" in text and "<sup>†</sup>" in text
    assert page.attr("li", "id") == ["src-1", "src-2", "src-3", "src-4", "src-5"]
    assert len([a for t, a in page.tags if t == "table" and a.get("class") == "lb"]) == 3
    # to stdout: paths as recorded
    text_stdout = render(build_tables(expand_per_target(load_records(results_dir))), "html", embed_plot=False)
    assert 'href="results/group0/dcac_ma2ms_s1/checkpoint_ep60.pth"' in text_stdout


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_html_page_renders_in_headless_chromium(results_dir, tmp_path):
    """The page as a browser sees it (JS run): tables, embedded plot, links to existing files, sorting."""
    browser = _chromium()
    if browser is None:
        unavailable("chromium", "chromium not on PATH (Debian/Ubuntu package: chromium; `make test` installs "
                    "it when it runs as root with apt-get)")
    out = (tmp_path / "site" / "lb.html").resolve()
    assert leaderboard_main(["--results", str(results_dir), "--published-file", str(SMALL_PUBLISHED),
                             "--format", "html", "--output", str(out)]) == 0
    # sort the first table by its "MA->D" column (Method, Source, Runs, MA->D, ...), descending
    url = out.as_uri() + "?sort=0.3.desc"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    page = _parse(dom)
    assert 'data-ready="1"' in dom  # the inline script ran to its end
    assert len([a for t, a in page.tags if t == "table" and a.get("class") == "lb"]) == 3
    (src,) = page.attr("img", "src")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    links = _file_links(page)
    assert links and all((out.parent / urlsplit(h).path).resolve().exists() for h in [unquote(x) for x in links])
    # sorted by MA->D mAP, descending: MUVA (52.0) first, rows without a value last
    first_table = dom[dom.index('id="lb-0"'):dom.index("</table>", dom.index('id="lb-0"'))]
    body = first_table[first_table.index("<tbody>"):first_table.index("</tbody>")]
    names = re.findall(r'<td class="name">([^<]+)', body)
    assert names[0] == "MUVA" and names[1] == "DCAC (paper)" and names[-1] in {"DCAC (ours)", "OSNet (triplet) (ours)"}
    assert 'aria-sort="descending"' in first_table


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_json_published_and_plot(results_dir, tmp_path, capsys):
    plot = tmp_path / "lb.png"
    code = leaderboard_main(["--results", str(results_dir), "--format", "json", "--published",
                             "--benchmark", "real", "--protocol", "single", "--plot", str(plot)])
    assert code == 0 and plot.is_file()
    doc = json.loads(capsys.readouterr().out)
    (table, other) = doc["tables"]  # train splits; all source images with a target-chosen epoch
    assert other["protocol"] == ALL_IMAGES and all(r["origin"] == "published" for r in other["rows"])
    labels = [r["label"] for r in table["rows"]]
    assert "DCAC (paper)" in labels and "DCAC (ours)" in labels and "MUVA" in labels
    assert "OSNet-AIN (torchreid)" in labels and "OSNet-AIN: ours - torchreid" in labels
    assert len(table["columns"]) == 12
    assert doc["sources"][0]["text"].startswith("Li & Gong")


def test_cli_published_without_results(capsys):
    assert leaderboard_main(["--published", "--format", "github"]) == 0
    md = capsys.readouterr().out
    lines = md.splitlines()
    muva = next(x for x in lines if x.startswith("| MUVA ") and "**53.4**" in x)
    assert muva.rstrip(" |").endswith("**53.4**/**69.6**†")
    # the bolded best average is not DCAC's printed 46.4
    multi = md[md.index("### Multi-source"):]
    dcac = next(x for x in multi.splitlines() if x.startswith("| DCAC "))
    assert "**46.4**" not in dcac and dcac.rstrip(" |").endswith("46.4/63.9")
    assert "this repo" not in md and "Runs" not in md
    with pytest.raises(SystemExit) as exc:
        leaderboard_main(["--format", "github"])
    assert exc.value.code == 2 and "pass --results FOLDER" in capsys.readouterr().err


def test_cli_malformed_published_file_names_file_and_key(tmp_path):
    bad = tmp_path / "pub.yaml"
    bad.write_text("source: s\nlater_work:\n  X:\n    source: x\n    multi_source: {MA: [1.0, 200]}\n")
    with pytest.raises(RecordError) as exc:
        leaderboard_main(["--published-file", str(bad)])
    assert str(bad) in str(exc.value) and "later_work.X.multi_source.MA" in str(exc.value)


def test_cli_output_file_and_empty(results_dir, tmp_path, capsys):
    out = tmp_path / "lb.csv"
    assert leaderboard_main(["--results", str(results_dir), "--format", "csv", "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    lines = out.read_text().splitlines()
    assert lines[0].startswith("benchmark,protocol,method,row,origin,column,mAP,rank1,mAP_std,rank1_std")
    assert "real,single_source,DCAC,DCAC (ours),ours,MA->MS,24.50,51.50,0.71,0.71,best,best,2,1234;1235,,," in lines
    empty = tmp_path / "empty"
    empty.mkdir()
    assert leaderboard_main(["--results", str(empty)]) == 1
    assert "no results in" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# the package: renderer modules, page resources


def test_page_css_and_js_are_package_resources_inlined_in_the_page(golden_tables):
    from importlib import resources

    folder = resources.files("dcac_plugin").joinpath("resources").joinpath("leaderboard")
    css = folder.joinpath("leaderboard.css").read_text(encoding="utf-8")
    js = folder.joinpath("leaderboard.js").read_text(encoding="utf-8")
    assert "table.lb" in css and "sortTable" in js and "data-ready" in js
    page = render(golden_tables, "html", embed_plot=False)
    assert f"<style>\n{css}</style>" in page and f"<script>\n{js}</script>" in page
    assert page.count("<style>") == 1 and page.count("<script>") == 1  # inlined, nothing linked


@pytest.mark.parametrize("fmt, module, function", [
    ("github", "github", "render_github"), ("latex", "latex", "render_latex"), ("csv", "csv_table", "render_csv"),
    ("json", "json_doc", "render_json"), ("html", "html_page", "render_html")])
@pytest.mark.parametrize("metric", ["both", "rank1"])
def test_each_renderer_module_alone_equals_render(golden_tables, fmt, module, function, metric):
    import importlib

    from dcac_plugin.benchmark import leaderboard

    renderer = getattr(importlib.import_module(f"dcac_plugin.benchmark.leaderboard.{module}"), function)
    assert getattr(leaderboard, function) is renderer  # the package re-exports the module's function
    kwargs = {"embed_plot": False} if fmt == "html" else {}
    assert renderer(golden_tables, metric, **kwargs) == render(golden_tables, fmt, metric, **kwargs)


def test_package_reexports_the_old_module_names():
    """Every public name of the former single-module leaderboard is importable from the package."""
    from dcac_plugin.benchmark import leaderboard

    old = ["AVERAGE", "BENCHMARK_CHOICES", "COMPUTED_MARK", "CSV_FIELDS", "FLAG_TEXT", "FORMATS", "JSON_SCHEMA",
           "METRIC_CHOICES", "METRIC_LABEL", "PAIR", "PROTOCOL_CHOICES", "PROTOCOL_FLAG", "RENDERERS", "TAG_TEXT",
           "UNKNOWN", "Cell", "LeaderboardError", "Row", "RunValue", "Table", "build_tables", "flag_text",
           "latex_escape", "plot_png", "plot_tables", "provenance_dict", "render", "render_csv", "render_github",
           "render_html", "render_json", "render_latex", "round1", "tables_to_dict"]
    assert sorted(leaderboard.__all__) == sorted(old)
    assert all(hasattr(leaderboard, name) for name in old)
