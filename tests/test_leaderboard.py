"""Result records, published numbers and leaderboard rendering (goldens in tests/golden/).

Regenerate the goldens after an intended change with ``DCAC_UPDATE_GOLDEN=1 pytest
tests/test_leaderboard.py`` and review the diff by eye.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
METRIC_NAMES = ("mAP", "rank1", "rank5", "rank10", "mINP")
STD = ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np")


def make_record(name, model, sources, targets, values, kind=None, benchmark="real", **extra) -> dict:
    """A schema-v1 record; ``values`` holds one [mAP, R1, R5, R10, mINP] list per target."""
    kind = kind or ("multi_source" if len(sources) > 1 else "single_source")
    return {
        "schema_version": 1, "run_name": name, "model": model,
        "protocol": {"key": "", "kind": kind, "sources": list(sources), "targets": list(targets),
                     "benchmark": benchmark, "variants": {}},
        "results": {t: dict(zip(METRIC_NAMES, v, strict=True))
                    for t, v in zip(targets, values, strict=True)},
        "status": "ok", "created": "2025-01-01T00:00:00+00:00", **extra,
    }


def write_record(root: Path, rec: dict, sub: str = "") -> Path:
    path = root / sub / rec["run_name"] / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def fixture_records() -> list[dict]:
    ma, ms = ["market1501"], ["msmt17"]
    recs = [
        make_record("dcac_ma2ms_s1", "dcac_vit_b16", ma, ms, [[24.0, 51.0, 66.0, 71.0, 3.0]]),
        make_record("dcac_ma2ms_s2", "dcac_vit_b16", ma, ms, [[25.0, 52.0, 67.0, 72.0, 3.2]]),
        make_record("clip_ma2x", "clip_reid_vit_b16", ["market1501"], ["msmt17", "dukemtmcreid"],
                    [[21.0, 49.0, 60.0, 65.0, 2.0], [47.0, 66.0, 80.0, 85.0, 10.0]]),
        make_record("osnet_tri_ma2ms", "osnet_x1_0", ma, ms, [[8.0, 25.0, 40.0, 45.0, 1.0]],
                    loss="softmax+triplet"),
        make_record("clip_multi2ma", "clip_reid_vit_b16", ["dukemtmcreid", "msmt17", "cuhk03_np"], ma,
                    [[50.0, 77.0, 88.0, 91.0, 20.0]]),
        make_record("syn_dcac", "dcac_vit_b16", ["market1501"], ["msmt17"], [[90.0, 95.0, 99.0, 99.5, 80.0]],
                    benchmark="synthetic"),
        make_record("syn_osnet", "osnet_x1_0", ["market1501"], ["msmt17"], [[70.0, 95.0, 98.0, 99.0, 60.0]],
                    benchmark="synthetic", loss="softmax"),
    ]
    multi = {"market1501": [56.0, 80.0], "dukemtmcreid": [59.0, 75.0], "msmt17": [27.0, 56.0],
             "cuhk03_np": [42.0, 43.0]}
    for tgt, (m, r) in multi.items():
        srcs = [s for s in STD if s != tgt]
        recs.append(make_record(f"dcac_multi2{tgt}", "dcac_vit_b16", srcs, [tgt], [[m, r, 90.0, 92.0, 10.0]]))
    return recs


@pytest.fixture
def results_dir(tmp_path) -> Path:
    root = tmp_path / "results"
    for i, rec in enumerate(fixture_records()):
        write_record(root, rec, sub=f"group{i % 2}")
    return root


@pytest.fixture
def golden_tables(results_dir):
    results = expand_per_target(load_records(results_dir))
    return build_tables(results, load_published(SMALL_PUBLISHED))


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


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("results"), "missing key 'results'"),
    (lambda d: d["protocol"].pop("benchmark"), "missing key 'protocol.benchmark'"),
    (lambda d: d["protocol"].update(benchmark="fake"), "protocol.benchmark must be one of"),
    (lambda d: d["protocol"].update(kind="cross"), "protocol.kind must be one of"),
    (lambda d: d["results"]["msmt17"].update(mAP=0.234 * 1000), "outside [0, 100]"),
    (lambda d: d["results"]["msmt17"].pop("rank1"), "lacks required metric 'rank1'"),
    (lambda d: d["results"].update(market1501={"mAP": 1, "rank1": 2}), "not in protocol.targets"),
    (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
])
def test_malformed_record_names_file_and_key(tmp_path, mutate, message):
    rec = make_record("r", "osnet_x1_0", ["market1501"], ["msmt17"], [[10.0, 20.0, 30.0, 40.0, 1.0]])
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
    assert len(pub) == 170  # 92 single- + 45 multi-source cells (DCAC paper) + 33 later-work cells
    assert all(p.source for p in pub)
    by = {(p.method, p.kind, p.key): p for p in pub}
    dcac = by[("DCAC", "single_source", "MA->MS")]
    assert (dcac.mAP, dcac.rank1, dcac.later_work) == (23.4, 52.1, False)
    assert dcac.source.startswith("Li & Gong, Sensors 2025")
    assert (by[("DCAC", "multi_source", "average")].mAP, by[("DCAC", "multi_source", "average")].rank1) == (
        46.4, 63.9)
    muva = by[("MUVA", "multi_source", "MA")]
    assert muva.later_work and muva.source.startswith("Li et al., MUVA") and muva.mAP == 66.7
    assert by[("SVIL", "multi_source", "MS")].source == "as cited in MUVA Table 3 (TOMM 2024)"
    keys = {p.key for p in pub if p.kind == "single_source"}
    assert len(keys) == 12 and all("->" in k for k in keys)
    assert {p.key for p in pub if p.kind == "multi_source"} == {"MA", "D", "MS", "C3", "average"}


def test_published_parse_errors():
    with pytest.raises(RecordError, match="top-level 'source'"):
        parse_published({"single_source": {}})
    with pytest.raises(RecordError, match="later_work.X needs its own 'source'"):
        parse_published({"source": "s", "later_work": {"X": {"multi_source": {"MA": [1.0, 2.0]}}}})
    with pytest.raises(RecordError, match=r"must be \[mAP, Rank-1\]"):
        parse_published({"source": "s", "single_source": {"A": {"MA->D": [1.0]}}})


# ----------------------------------------------------------------------------------------------
# tables


def _tr(method: str, key: str, m: float, r: float, benchmark="real", kind="single_source") -> TargetResult:
    return TargetResult(run_name=method, method=method, kind=kind, benchmark=benchmark, key=key,
                        sources=["market1501"], target="msmt17", metrics={"mAP": m, "rank1": r})


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
    html_text = render([table], "html")
    assert "<b>50.0</b>/<b>70.0</b>" in html_text and "30.0/<u>65.0</u>" in html_text
    flags = tables_to_dict([table])["tables"][0]["rows"][2]["cells"]["MA->MS"]["mark"]
    assert flags == {"mAP": "second", "rank1": "best"}


def test_ours_minus_paper_and_mean_over_runs(golden_tables):
    single = next(t for t in golden_tables if t.benchmark == "real" and t.kind == "single_source")
    rows = {r.label: r for r in single.rows}
    ours = rows["DCAC (ours)"].cells["MA->MS"]
    assert ours.n == 2 and ours.values["mAP"] == pytest.approx(24.5)
    assert ours.values["rank1"] == pytest.approx(51.5)
    assert ours.values["mINP"] == pytest.approx(3.1)
    diff = rows["DCAC: ours - paper"].cells
    assert set(diff) == {"MA->MS"}  # only where both exist
    assert diff["MA->MS"].values == {"mAP": pytest.approx(1.1), "rank1": pytest.approx(-0.6)}
    bdiff = rows[f"{BASELINE_METHOD}: ours - paper"].cells
    assert bdiff["MA->D"].values == {"mAP": pytest.approx(-0.8), "rank1": pytest.approx(-1.3)}
    assert bdiff["MA->MS"].values["mAP"] == pytest.approx(-1.0)
    assert "PAT: ours - paper" not in rows and "PAT" in rows and "DCAC (paper)" in rows
    assert rows["OSNet (triplet) (ours)"].cells["MA->MS"].values["mAP"] == 8.0
    # diff rows never take part in the marks
    assert all(not c.marks for r in single.rows if r.origin == "diff" for c in r.cells.values())


def test_multi_source_average_only_with_all_four(golden_tables):
    multi = next(t for t in golden_tables if t.benchmark == "real" and t.kind == "multi_source")
    rows = {r.label: r for r in multi.rows}
    avg = rows["DCAC (ours)"].cells["average"]
    assert avg.computed and avg.values == {"mAP": pytest.approx(46.0), "rank1": pytest.approx(63.5)}
    assert "average" not in rows[f"{BASELINE_METHOD} (ours)"].cells  # only MA present
    assert "average" not in rows["MUVA"].cells  # published averages only as printed
    assert rows["DCAC: ours - paper"].cells["average"].values["mAP"] == pytest.approx(-0.4)
    assert multi.columns == ["MA", "D", "MS", "C3", "average"]


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
    assert [t["generated_benchmark"] for t in doc["tables"]] == [False, False, True]
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
    assert line.split("|")[4:6] == ["          ", " _51.5_   "]  # R1 52.1 (paper) is best
    assert "Cells: R1 in %." in md


def test_latex_escape():
    assert latex_escape("MA->D") == r"MA$\rightarrow$D"
    assert latex_escape("a_b & 5% > 2") == r"a\_b \& 5\% $>$ 2"


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden_output(golden_tables, fmt):
    suffix = {"github": "md", "latex": "tex"}.get(fmt, fmt)
    path = GOLDEN / f"leaderboard.{suffix}"
    text = render(golden_tables, fmt)
    if os.environ.get("DCAC_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    if fmt == "json":
        doc = json.loads(text)
        assert [s["text"] for s in doc["sources"]] == ["Paper A (fixture)", "Paper B (fixture, later work)"]


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
# CLI


def test_cli_json_published_and_plot(results_dir, tmp_path, capsys):
    plot = tmp_path / "lb.png"
    code = leaderboard_main(["--results", str(results_dir), "--format", "json", "--published",
                             "--benchmark", "real", "--protocol", "single", "--plot", str(plot)])
    assert code == 0 and plot.is_file()
    doc = json.loads(capsys.readouterr().out)
    (table,) = doc["tables"]
    labels = [r["label"] for r in table["rows"]]
    assert "DCAC (paper)" in labels and "DCAC (ours)" in labels and "MUVA" in labels
    assert len(table["columns"]) == 12
    assert doc["sources"][0]["text"].startswith("Li & Gong")


def test_cli_output_file_and_empty(results_dir, tmp_path, capsys):
    out = tmp_path / "lb.csv"
    assert leaderboard_main(["--results", str(results_dir), "--format", "csv", "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    lines = out.read_text().splitlines()
    assert lines[0].startswith("benchmark,protocol,method,row,origin,column,mAP,rank1")
    assert "real,single_source,DCAC,DCAC (ours),ours,MA->MS,24.50,51.50,best,best,2," in lines
    empty = tmp_path / "empty"
    empty.mkdir()
    assert leaderboard_main(["--results", str(empty)]) == 1
    assert "no results in" in capsys.readouterr().err
