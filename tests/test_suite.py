"""Benchmark suites: parsing, argv resolution, resume, failure recording, --only, dry-run, CLI.

The runner injected here stands in for ``dcac_plugin.cli.train.main``: it reads the argv the
suite produces, exactly as the training entry point would, and writes a real schema-v1
``results.json`` into ``data.save_dir``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from dcac_plugin.benchmark.records import load_records
from dcac_plugin.benchmark.suite import (
    FAILED_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    SuiteError,
    load_suite,
    parse_suite,
    run_suite,
)
from dcac_plugin.cli.benchmark import main as benchmark_main

REPO = Path(__file__).resolve().parents[1]


class FakeTrain:
    """Stand-in for the training entry: parses argv like yacs would and writes results.json."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> dict:
        self.calls.append(list(argv))
        assert argv[0] == "--config-file"
        cfg = yaml.safe_load(Path(argv[1]).read_text())
        opts = dict(zip(argv[2::2], argv[3::2], strict=True))
        if cfg.get("explode"):
            raise RuntimeError(f"boom in {argv[1]}")
        if cfg.get("silent"):
            return {}
        sources = ast.literal_eval(opts["data.sources"])
        targets = ast.literal_eval(opts["data.targets"])
        seed = int(opts.get("train.seed", "1"))
        save_dir = Path(opts["data.save_dir"])
        record = {
            "schema_version": 1, "run_name": save_dir.name, "model": cfg["model"],
            "protocol": {"key": "", "kind": "multi_source" if len(sources) > 1 else "single_source",
                         "sources": sources, "targets": targets, "benchmark": "synthetic", "variants": {}},
            "results": {t: {"mAP": 10.0 + seed, "rank1": 30.0 + seed} for t in targets},
            "status": "ok",
        }
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / RESULTS_FILE).write_text(json.dumps(record))
        return record


@pytest.fixture
def suite_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    (cfgs / "dcac_ma2ms.yaml").write_text("model: dcac_vit_b16\n")
    (cfgs / "dcac_d2ms.yaml").write_text("model: dcac_vit_b16\n")
    (cfgs / "osnet.yaml").write_text("model: osnet_x1_0\n")
    (cfgs / "broken.yaml").write_text("model: resnet50\nexplode: true\n")
    suite = {
        "name": "demo",
        "output_root": "out/demo",
        "common_opts": ["data.root", "data/synthetic", "train.max_epoch", 1],
        "matrix": {
            "protocols": [
                {"name": "ma2ms", "sources": ["market1501"], "targets": ["msmt17"],
                 "data": {"msmt17_include_val": True}},
                {"name": "d2ms", "sources": ["dukemtmcreid"], "targets": ["msmt17"]},
            ],
            "models": [
                {"name": "dcac", "config": "configs/dcac_{protocol}.yaml"},
                {"name": "osnet", "config": "configs/osnet.yaml", "opts": ["train.seed", 2]},
                {"name": "resnet", "config": "configs/broken.yaml"},
            ],
        },
        "runs": [{"name": "osnet_extra", "config": "configs/osnet.yaml", "protocol": "ma2ms",
                  "opts": ["train.seed", 3]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_entries_resolve_to_expected_argv(suite_file):
    suite = load_suite(suite_file)
    entries = suite.entries()
    assert [e.run_name for e in entries] == ["dcac_ma2ms", "osnet_ma2ms", "resnet_ma2ms", "dcac_d2ms",
                                             "osnet_d2ms", "resnet_d2ms", "osnet_extra"]
    assert entries[1].argv() == [
        "--config-file", "configs/osnet.yaml",
        "data.root", "data/synthetic", "train.max_epoch", "1",
        "train.seed", "2",
        "data.sources", "['market1501']", "data.targets", "['msmt17']", "data.msmt17_include_val", "True",
        "data.save_dir", str(Path("out/demo/osnet_ma2ms")),
    ]
    assert entries[3].config_file == "configs/dcac_d2ms.yaml"
    assert entries[6].argv()[-8:] == ["data.sources", "['market1501']", "data.targets", "['msmt17']",
                                      "data.msmt17_include_val", "True", "data.save_dir",
                                      str(Path("out/demo/osnet_extra"))]
    assert suite.entries("elsewhere")[0].output_dir == Path("elsewhere/dcac_ma2ms")


def test_run_resumes_records_failures_and_continues(suite_file):
    runner = FakeTrain()
    summary = run_suite(load_suite(suite_file), runner=runner)
    assert summary.ran == ["dcac_ma2ms", "osnet_ma2ms", "dcac_d2ms", "osnet_d2ms", "osnet_extra"]
    assert sorted(summary.failed) == ["resnet_d2ms", "resnet_ma2ms"]
    assert summary.failed["resnet_ma2ms"] == "RuntimeError: boom in configs/broken.yaml"
    assert len(runner.calls) == 7 and set(summary.times) == {e.run_name for e in summary.planned}
    failed = json.loads(Path("out/demo/resnet_ma2ms", FAILED_FILE).read_text())
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom in configs/broken.yaml"
    assert "Traceback" in failed["traceback"] and "boom" in failed["traceback"]
    assert failed["argv"][:2] == ["--config-file", "configs/broken.yaml"]
    assert not Path("out/demo/resnet_ma2ms", RESULTS_FILE).exists()
    saved = json.loads(Path("out/demo", SUMMARY_FILE).read_text())
    assert saved["ran"] == summary.ran and sorted(saved["failed"]) == ["resnet_d2ms", "resnet_ma2ms"]
    records = load_records("out/demo")
    assert len(records) == 5
    extra = next(r for r in records if r.run_name == "osnet_extra")
    assert extra.results["msmt17"] == {"mAP": 13.0, "rank1": 33.0}  # train.seed 3 reached the runner

    # second run: finished runs are skipped, failed ones retried; fixing the config clears failed.json
    Path("configs/broken.yaml").write_text("model: resnet50\n")
    runner2 = FakeTrain()
    again = run_suite(load_suite(suite_file), runner=runner2)
    assert again.skipped == ["dcac_ma2ms", "osnet_ma2ms", "dcac_d2ms", "osnet_d2ms", "osnet_extra"]
    assert again.ran == ["resnet_ma2ms", "resnet_d2ms"] and not again.failed
    assert [c[1] for c in runner2.calls] == ["configs/broken.yaml"] * 2
    assert not Path("out/demo/resnet_ma2ms", FAILED_FILE).exists()
    third = FakeTrain()
    assert run_suite(load_suite(suite_file), runner=third).ran == [] and third.calls == []


def test_runner_without_results_and_missing_config_fail_clearly(suite_file):
    Path("configs/osnet.yaml").write_text("model: osnet_x1_0\nsilent: true\n")
    Path("configs/dcac_d2ms.yaml").unlink()
    runner = FakeTrain()
    summary = run_suite(load_suite(suite_file), runner=runner, only=["osnet_ma2ms", "dcac_d2ms"])
    assert summary.failed == {
        "osnet_ma2ms": f"RuntimeError: the runner returned but wrote no results.json in "
                       f"{Path('out/demo/osnet_ma2ms')}",
        "dcac_d2ms": "FileNotFoundError: config file not found: configs/dcac_d2ms.yaml (paths in a suite are "
                     "relative to the working directory; run from the repository root)",
    }
    assert [c[1] for c in runner.calls] == ["configs/osnet.yaml"]  # missing config: runner not called


def test_only_filters_by_fnmatch(suite_file):
    runner = FakeTrain()
    summary = run_suite(load_suite(suite_file), runner=runner, only="osnet_*")
    assert [e.run_name for e in summary.planned] == ["osnet_ma2ms", "osnet_d2ms", "osnet_extra"]
    assert summary.ran == ["osnet_ma2ms", "osnet_d2ms", "osnet_extra"]
    assert not Path("out/demo/dcac_ma2ms").exists()
    none = run_suite(load_suite(suite_file), runner=runner, only="nothing*")
    assert none.planned == [] and len(runner.calls) == 3


def test_dry_run_executes_nothing(suite_file, tmp_path):
    def never(argv):
        raise AssertionError("dry run must not call the runner")

    summary = run_suite(load_suite(suite_file), runner=never, dry_run=True, output_root="dry")
    assert summary.dry_run and len(summary.planned) == 7 and summary.ran == [] and not summary.failed
    assert not (tmp_path / "dry").exists() and not (tmp_path / "out").exists()


def test_cli_runs_suite_and_prints_leaderboard(suite_file, capsys):
    runner = FakeTrain()
    code = benchmark_main(["--suite", str(suite_file), "--only", "dcac_*", "--only", "resnet_ma2ms",
                           "--output", "cli_out"], runner=runner)
    assert code == 1  # resnet_ma2ms failed
    out = capsys.readouterr().out
    assert "3 planned, 2 ran, 0 skipped (results exist), 1 failed" in out
    assert "### Single-source DG: GENERATED benchmark" in out
    assert "| DCAC (ours) | this repo | 1      | 11.0/31.0 | 11.0/31.0 |" in out
    assert Path("cli_out/dcac_ma2ms", RESULTS_FILE).is_file()
    assert benchmark_main(["--suite", str(suite_file), "--only", "dcac_*", "--output", "cli_out"],
                          runner=runner) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_cli_dry_run_prints_plan(suite_file, capsys):
    assert benchmark_main(["--suite", str(suite_file), "--dry-run", "--only", "osnet_d2ms"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"# suite 'demo': 1 run(s), output root {Path('out/demo')}",
        "# osnet_d2ms: run",
        "python tools/train.py --config-file configs/osnet.yaml data.root data/synthetic train.max_epoch 1 "
        "train.seed 2 data.sources \"['dukemtmcreid']\" data.targets \"['msmt17']\" data.save_dir "
        + str(Path("out/demo/osnet_d2ms")),
    ]
    assert not Path("out").exists()


@pytest.mark.parametrize("data, message", [
    ({"name": "x"}, "defines no runs"),
    ({"name": "x", "runs": [{"name": "a", "config": "c.yaml", "opts": ["k"]}]}, "even length"),
    ({"name": "x", "runs": [{"name": "a", "config": "c.yaml"}, {"name": "a", "config": "d.yaml"}]},
     "run name 'a' occurs twice"),
    ({"name": "x", "runs": [{"name": "a"}]}, "runs[0]: missing required key 'config'"),
    ({"name": "x", "runs": [{"name": "a", "config": "c", "protocol": "p"}]}, "names protocol 'p'"),
    ({"name": "x", "model": []}, "unknown keys ['model']"),
    ({"name": "x", "matrix": {"models": [{"name": "m", "config": "c"}]}}, "matrix.protocols is empty"),
    ({"name": "x", "matrix": {"protocols": [{"name": "p", "sources": [], "targets": ["msmt17"]}],
                              "models": [{"name": "m", "config": "c"}]}}, "non-empty list of dataset names"),
])
def test_malformed_suites(data, message):
    with pytest.raises(SuiteError) as exc:
        parse_suite(data, "s.yaml").entries()
    assert message in str(exc.value) and "s.yaml" in str(exc.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, n_protocols", [("paper_single_source", 12), ("paper_multi_source", 4)])
def test_paper_suites(name, n_protocols):
    suite = load_suite(REPO / "configs" / "suites" / f"{name}.yaml")
    entries = suite.entries()
    assert len(entries) == n_protocols * 10
    assert str(entries[0].output_dir) == str(Path("output") / name / entries[0].run_name)
    codes = {"ma": "market1501", "d": "dukemtmcreid", "ms": "msmt17", "c3": "cuhk03_np"}
    for e in entries:
        opts = dict(zip(e.opts[::2], e.opts[1::2], strict=True))
        sources, targets = ast.literal_eval(opts["data.sources"]), ast.literal_eval(opts["data.targets"])
        proto = e.protocol
        if name == "paper_single_source":
            src, tgt = proto.split("2")
            assert (sources, targets) == ([codes[src]], [codes[tgt]])
        else:
            tgt = codes[proto[len("multi2"):]]
            assert targets == [tgt] and sources == [d for d in codes.values() if d != tgt]
        model = e.run_name[: -len(proto) - 1]
        if model in ("dcac", "clip_baseline"):
            assert e.config_file == f"configs/{model}_{proto}.yaml"
        else:
            assert e.config_file == f"configs/baselines/{model}.yaml"
    dcac = [e.run_name for e in entries if e.run_name.startswith("dcac_")]
    assert dcac == [f"dcac_{p}" for p in suite.protocols]
