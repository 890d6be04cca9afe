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

from dcac_plugin import configs
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
from dcac_plugin.utils.io import atomic_write_json

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
            "schema_version": 1, "run_name": save_dir.name,
            "model": cfg["model"]["name"] if isinstance(cfg["model"], dict) else cfg["model"],
            "protocol": {"key": "", "kind": "multi_source" if len(sources) > 1 else "single_source",
                         "sources": sources, "targets": targets, "benchmark": "synthetic", "variants": {}},
            "results": {t: {"mAP": 10.0 + seed, "rank1": 30.0 + seed} for t in targets},
            "status": "ok",
        }
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, save_dir / RESULTS_FILE)  # as the real runner does: a reader never sees half a file
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

    # second run: finished runs are skipped, failed ones too (recorded) unless retry_failed
    Path("configs/broken.yaml").write_text("model: resnet50\n")
    runner2 = FakeTrain()
    again = run_suite(load_suite(suite_file), runner=runner2)
    assert again.skipped == ["dcac_ma2ms", "osnet_ma2ms", "dcac_d2ms", "osnet_d2ms", "osnet_extra"]
    assert again.skipped_failed == ["resnet_ma2ms", "resnet_d2ms"] and again.ran == [] and runner2.calls == []
    assert "2 failed before (not retried; --retry-failed reruns them)" in again.text()
    # --retry-failed reruns them; fixing the config clears failed.json
    retry = run_suite(load_suite(suite_file), runner=runner2, retry_failed=True)
    assert retry.ran == ["resnet_ma2ms", "resnet_d2ms"] and not retry.failed
    assert [c[1] for c in runner2.calls] == ["configs/broken.yaml"] * 2
    assert not Path("out/demo/resnet_ma2ms", FAILED_FILE).exists()
    third = FakeTrain()
    assert run_suite(load_suite(suite_file), runner=third, retry_failed=True).ran == [] and third.calls == []
    assert not list(Path("out/demo").glob("*/claim.json"))  # every claim was released


def test_runner_without_results_and_missing_config_fail_clearly(suite_file):
    Path("configs/osnet.yaml").write_text("model: osnet_x1_0\nsilent: true\n")
    Path("configs/dcac_d2ms.yaml").unlink()
    runner = FakeTrain()
    summary = run_suite(load_suite(suite_file), runner=runner, only=["osnet_ma2ms", "dcac_d2ms"])
    assert summary.failed == {
        "osnet_ma2ms": f"the runner returned but wrote no results.json in "
                       f"{Path('out/demo/osnet_ma2ms')}",
        "dcac_d2ms": "FileNotFoundError: config file not found: configs/dcac_d2ms.yaml, and 'configs/dcac_d2ms.yaml' "
                     "is a path, not a config name; the project's config of that path is named 'dcac_d2ms' "
                     "(--config-file dcac_d2ms)",
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
    assert out[:3] == [
        f"# suite 'demo': 1 training(s) -> 1 evaluation(s), output root {Path('out/demo')}, launcher inline, "
        f"1 GPU(s) per run",
        "# osnet_d2ms: run | targets msmt17",
        # no tools/train.py in this folder: the console script is the command that works here
        "dcac-train --config-file configs/osnet.yaml data.root data/synthetic train.max_epoch 1 "
        "train.seed 2 data.sources \"['dukemtmcreid']\" data.targets \"['msmt17']\" data.save_dir "
        + str(Path("out/demo/osnet_d2ms")),
    ]
    # the fixture's configs are not loadable yacs files: no estimate, and no crash
    assert "| osnet_d2ms | msmt17 | ? | ? | 1 | ? | ? |" in out
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


@pytest.mark.parametrize("name", ["paper_single_source", "paper_multi_source"])
def test_paper_suites(name):
    """4 trainings per model in both suites: single-source trains once per source, evaluates 3 targets."""
    suite = load_suite(REPO / "configs" / "suites" / f"{name}.yaml")
    entries = suite.entries()
    assert len(entries) == 4 * 10
    assert str(entries[0].output_dir) == str(Path("output") / name / entries[0].run_name)
    codes = {"ma": "market1501", "d": "dukemtmcreid", "ms": "msmt17", "c3": "cuhk03_np"}
    pairs = set()
    for e in entries:
        opts = dict(zip(e.opts[::2], e.opts[1::2], strict=True))
        sources, targets = ast.literal_eval(opts["data.sources"]), ast.literal_eval(opts["data.targets"])
        assert "train.seed" not in opts and e.seed is None  # the configs' own seed (1234)
        proto = e.protocol
        if name == "paper_single_source":
            assert sources == [codes[proto]] and targets == [d for d in codes.values() if d != codes[proto]]
            assert tuple(targets) == e.targets
            pairs |= {(proto, t) for t in targets}
        else:
            tgt = codes[proto[len("multi2"):]]
            assert targets == [tgt] and sources == [d for d in codes.values() if d != tgt]
        model = e.run_name[: -len(proto) - 1]
        assert model == e.model
        if model in ("dcac", "clip_baseline"):
            cfg_proto = suite.protocols[proto].config_key
            assert e.config_file == f"{model}_{cfg_proto}"  # a config name (dcac_plugin.configs)
            assert configs.path(e.config_file) == REPO / "configs" / f"{model}_{cfg_proto}.yaml"
            assert cfg_proto == proto if name == "paper_multi_source" else cfg_proto.startswith(proto + "2")
        else:
            assert e.config_file == f"baselines/{model}"
            assert configs.path(e.config_file) == REPO / "configs" / "baselines" / f"{model}.yaml"
    if name == "paper_single_source":
        assert len(pairs) == 12  # the paper's 12 source -> target cells
    dcac = [e.run_name for e in entries if e.run_name.startswith("dcac_")]
    assert dcac == [f"dcac_{p}" for p in suite.protocols]


# ------------------------------------------------------------------ per-source configs, seeds


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_per_pair_configs_agree_apart_from_targets():
    """Hyper-parameters depend only on the source: one training per source serves every target."""
    import re

    from dcac_plugin.config import get_default_config, merge_config

    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        m = re.fullmatch(r"(dcac|clip_baseline)_(ma|d|ms|c3)2(ma|d|ms|c3)\.yaml", path.name)
        if m:
            groups.setdefault((m[1], m[2]), []).append((path.name, _flat(merge_config(get_default_config(),
                                                                                       str(path)))))
    assert len(groups) == 8 and all(len(v) == 3 for v in groups.values())  # 2 methods x 4 sources x 3 targets
    target_dependent = {"data.targets", "data.save_dir"}
    for cfgs in groups.values():
        name0, ref = cfgs[0]
        for name, cfg in cfgs[1:]:
            diff = sorted(k for k in ref if ref[k] != cfg[k])
            assert set(diff) == target_dependent, f"{name} vs {name0}: {diff}"
    # the sources differ where the paper says so: LoRA rank and tau per source
    ranks = {src: dict(cfgs[0][1])["dcac.sd.lora_rank"] for (m, src), cfgs in groups.items() if m == "dcac"}
    taus = {src: dict(cfgs[0][1])["dcac.cond.tau"] for (m, src), cfgs in groups.items() if m == "dcac"}
    assert ranks == {"ma": 8, "d": 8, "ms": 32, "c3": 8} and taus == {"ma": 0.6, "d": 0.6, "ms": 1.0, "c3": 0.1}


def test_seeds_name_runs_and_pass_train_seed(suite_file):
    suite = load_suite(suite_file)
    one = suite.entries(seeds=[7])
    assert [e.run_name for e in one][:2] == ["dcac_ma2ms", "osnet_ma2ms"]  # one seed keeps the plain names
    assert one[0].seed == 7 and one[0].opts[4:6] == ("train.seed", "7")
    # train.seed comes after the model's own opts (osnet sets train.seed 2) and before the protocol's
    assert one[1].opts[4:8] == ("train.seed", "2", "train.seed", "7")
    several = suite.entries(seeds=[1234, 1235])
    assert [e.run_name for e in several][:4] == ["dcac_ma2ms_s1234", "dcac_ma2ms_s1235", "osnet_ma2ms_s1234",
                                                 "osnet_ma2ms_s1235"]
    assert several[1].output_dir == Path("out/demo/dcac_ma2ms_s1235") and several[1].seed == 1235
    assert len(several) == 2 * 7
    runner = FakeTrain()
    summary = run_suite(suite, runner=runner, only="osnet_extra*", seeds=[1, 2])
    assert summary.ran == ["osnet_extra_s1", "osnet_extra_s2"]
    recs = {r.run_name: r.results["msmt17"]["mAP"] for r in load_records("out/demo")}
    assert recs == {"osnet_extra_s1": 11.0, "osnet_extra_s2": 12.0}  # the seed reached each run


def test_suite_seeds_key_and_cli_override(suite_file, capsys):
    data = yaml.safe_load(suite_file.read_text())
    data["seeds"] = [5, 6]
    suite_file.write_text(yaml.safe_dump(data))
    assert [e.run_name for e in load_suite(suite_file).entries()][:2] == ["dcac_ma2ms_s5", "dcac_ma2ms_s6"]
    assert benchmark_main(["--suite", str(suite_file), "--dry-run", "--only", "osnet_d2ms*",
                           "--seeds", "1234,1235,1236"]) == 0
    out = capsys.readouterr().out
    assert "# osnet_d2ms_s1236: run | targets msmt17 | seed 1236" in out and "osnet_d2ms_s5" not in out
    with pytest.raises(SuiteError, match=r"--seeds: seed\(s\) \[1234\] occur more than once"):
        benchmark_main(["--suite", str(suite_file), "--dry-run", "--seeds", "1234,1235,1234"])


def test_config_protocol_names_the_config_and_keeps_every_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = parse_suite({"name": "s", "matrix": {
        "protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["dukemtmcreid", "msmt17"],
                       "config_protocol": "ma2ms"}],
        "models": [{"name": "dcac", "config": "configs/dcac_{protocol}.yaml"}]}})
    (e,) = suite.entries()
    assert (e.run_name, e.config_file, e.targets) == ("dcac_ma", "configs/dcac_ma2ms.yaml",
                                                      ("dukemtmcreid", "msmt17"))
    assert e.argv()[2:6] == ["data.sources", "['market1501']", "data.targets", "['dukemtmcreid', 'msmt17']"]


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "seeds": [1, 2, 1]}, "seed(s) [1] occur more than once"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "seeds": []}, "non-empty list of integers"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "seeds": ["1"]}, "non-negative integers"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "launcher": "kubernetes"},
     "unknown launcher 'kubernetes'; use one of ['inline', 'local', 'slurm']"),
    ({"name": "x", "runs": [{"name": "a", "config": "c", "seed": 3}]}, "runs[0]: unknown keys ['seed']"),
    ({"name": "x", "matrix": {"protocols": [{"name": "p", "sources": ["a"], "targets": ["b"], "target": "c"}],
                              "models": [{"name": "m", "config": "c"}]}}, "unknown keys ['target']"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "slurm": {"partiton": "gpu"}},
     "slurm: unknown keys ['partiton']"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "slurm": {"time": "forever"}}, "slurm time 'forever'"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "max_parallel": 0},
     "'max_parallel' must be an integer >= 1"),
    ({"name": "x", "runs": [{"name": "a", "config": "c"}], "allow_random_init": "yes"}, "true or false"),
])
def test_malformed_scale_keys(data, message):
    with pytest.raises(SuiteError) as exc:
        parse_suite(data, "s.yaml").entries()
    assert message in str(exc.value) and "s.yaml" in str(exc.value)


def test_suite_slurm_block_parses():
    suite = parse_suite({"name": "x", "runs": [{"name": "a", "config": "c"}], "launcher": "slurm",
                         "gpus_per_run": 2, "max_parallel": 8,
                         "slurm": {"partition": "gpu", "time": "1-02:00:30", "cpus_per_task": 8, "mem": "64G",
                                   "sbatch": {"exclusive": True}, "setup": ["module load cuda"]}})
    s = suite.slurm
    assert (suite.launcher, suite.gpus_per_run, suite.max_parallel) == ("slurm", 2, 8)
    assert (s.partition, s.time, s.cpus_per_task, s.mem) == ("gpu", 26 * 60 + 1, 8, "64G")
    assert s.sbatch == {"exclusive": True} and s.setup == ["module load cuda"]
    merged = s.merged(partition="debug", time="90", sbatch={"gres": "gpu:1"})
    assert (merged.partition, merged.time, merged.sbatch) == ("debug", 90, {"exclusive": True, "gres": "gpu:1"})
    assert s.partition == "gpu"  # merged() copies


# ------------------------------------------------------------------ baselines' ImageNet weights


def _real_suite(tmp_path, root: str, allow: bool = False, pretrained: bool = True) -> Path:
    cfgs = tmp_path / "configs"
    cfgs.mkdir(exist_ok=True)
    (cfgs / "osnet.yaml").write_text(
        f"model:\n  name: osnet_x1_0\n  pretrained: {pretrained}\n"
        "  pretrained_path: pretrained/osnet_x1_0_imagenet.pth\n")
    (cfgs / "dcac.yaml").write_text("model:\n  name: dcac_tiny\n")
    data = {"name": "real", "output_root": "out/real", "common_opts": ["data.root", root],
            "allow_random_init": allow,
            "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["msmt17"]}],
                       "models": [{"name": "osnet", "config": "configs/osnet.yaml"},
                                  {"name": "dcac", "config": "configs/dcac.yaml"}]}}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_real_benchmark_refuses_random_init_baselines(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _real_suite(tmp_path, "reid-data")
    runner = FakeTrain()
    with pytest.raises(SuiteError) as exc:
        run_suite(load_suite(path), runner=runner)
    msg = str(exc.value)
    assert msg.startswith("1 run(s) would train a torchreid baseline from random weights on the real benchmark")
    assert "'pretrained/osnet_x1_0_imagenet.pth' (model.pretrained_path) does not exist: osnet_ma" in msg
    assert "allow_random_init: true" in msg and "dcac_ma" not in msg  # plugin models are not affected
    assert runner.calls == [] and not Path("out/real").exists()  # refused before anything ran
    # the CLI: one message, exit 2, no traceback
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--suite", str(path)])
    from dcac_plugin.cli.benchmark import cli

    with pytest.raises(SystemExit) as code:
        cli()
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.startswith("error: 1 run(s) would train") and "Traceback" not in err
    # with the weight file there, it runs
    Path("pretrained").mkdir()
    Path("pretrained/osnet_x1_0_imagenet.pth").write_bytes(b"weights")
    assert run_suite(load_suite(path), runner=runner).ran == ["osnet_ma", "dcac_ma"]


@pytest.mark.parametrize("case", ["pretrained_false", "allowed", "generated"])
def test_random_init_rule_cases(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    root = "reid-data"
    if case == "generated":
        Path("gen").mkdir()
        Path("gen/SYNTHETIC.json").write_text("{}")
        root = "gen"
    path = _real_suite(tmp_path, root, allow=case == "allowed", pretrained=case != "pretrained_false")
    runner = FakeTrain()
    if case == "pretrained_false":
        with pytest.raises(SuiteError, match=r"model.pretrained is False: osnet_ma\n"):
            run_suite(load_suite(path), runner=runner)
    else:  # allow_random_init, or the generated benchmark: trains from scratch
        assert run_suite(load_suite(path), runner=runner).ran == ["osnet_ma", "dcac_ma"]


@pytest.mark.slow
def test_baselines_start_from_real_format_imagenet_files_end_to_end(synthetic_tiny_root, tmp_path, monkeypatch,
                                                                     capsys):
    """ImageNet weight files in the real formats, built with the real classes: torchvision's ResNet-50
    state dict (as in resnet50-19c8e357.pth: torchvision's key names, a 1000-class ``fc``) and
    torchreid's osnet_x1_0_imagenet.pth layout (torchreid's OSNet keys with the ``module.`` prefix
    its own loader strips, a 1000-class ``classifier``). On the real benchmark the suite accepts them
    and trains both paper baselines (configs/baselines) one epoch through the real trainer. The
    baselines' first 10 epochs train only the classifier (fixbase), so every backbone tensor of the
    saved checkpoint must equal the file's; results.json records the file and its sha256, and the
    leaderboard's provenance shows it."""
    import hashlib
    import shutil

    import torch
    import torchvision

    from dcac_plugin._torchreid import tr
    from dcac_plugin.benchmark.leaderboard import build_tables, render, tables_to_dict
    from dcac_plugin.benchmark.records import expand_per_target

    monkeypatch.chdir(tmp_path)
    real = tmp_path / "reid-data"  # the generated images without their marker: the "real" benchmark
    shutil.copytree(synthetic_tiny_root, real)
    (real / "SYNTHETIC.json").unlink()
    Path("pretrained").mkdir()
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(resnet, "pretrained/resnet50-19c8e357.pth")
    osnet_1000 = tr.models.build_model("osnet_x1_0", num_classes=1000, loss="softmax", pretrained=False)
    osnet = {f"module.{k}": v for k, v in osnet_1000.state_dict().items()}
    torch.save(osnet, "pretrained/osnet_x1_0_imagenet.pth")
    files = {"resnet50_ma": ("pretrained/resnet50-19c8e357.pth", resnet, "fc."),
             "osnet_x1_0_ma": ("pretrained/osnet_x1_0_imagenet.pth",
                               {k[len("module."):]: v for k, v in osnet.items()}, "classifier.")}
    suite = tmp_path / "imagenet.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "imagenet", "output_root": "out",
        "common_opts": ["data.root", str(real), "train.max_epoch", 1, "train.batch_size", 16, "data.workers", 0,
                        "test.batch_size", 64],
        "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["market1501"]}],
                   "models": [{"name": "resnet50", "config": str(REPO / "configs/baselines/resnet50_softmax.yaml")},
                              {"name": "osnet_x1_0",
                               "config": str(REPO / "configs/baselines/osnet_x1_0_softmax.yaml")}]}}))
    # the generated images without their marker fail the real-count data check: start anyway
    assert benchmark_main(["--suite", str(suite), "--no-check-data"]) == 0
    assert "2 ran" in capsys.readouterr().out
    for run, (file, weights, head) in files.items():
        rec = json.loads((tmp_path / "out" / run / "results.json").read_text())
        assert rec["status"] == "ok" and rec["init"] == f"imagenet:{Path(file).name}"
        assert rec["init_weights"] == {"file": file, "sha256": hashlib.sha256(Path(file).read_bytes()).hexdigest()}
        ckpt = torch.load(tmp_path / "out" / run / rec["checkpoint"]["file"], map_location="cpu", weights_only=True)
        model = ckpt["model"] if "model" in ckpt else ckpt["state_dict"]
        backbone = [k for k in weights if not k.startswith(head) and not k.endswith("num_batches_tracked")]
        assert len(backbone) > 100 and all(torch.equal(model[k], weights[k]) for k in backbone), run
        assert model["classifier.weight"].shape[0] == 10  # the re-ID head (10 identities), not ImageNet's 1000
    tables = build_tables(expand_per_target(load_records(tmp_path / "out")))
    prov = {r["run"]: r["provenance"] for t in tables_to_dict(tables)["tables"] for row in t["rows"]
            for c in row["cells"].values() for r in c.get("runs", [])}
    for run, (file, _, _) in files.items():
        sha = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        assert (prov[run]["init"], prov[run]["init_file"], prov[run]["init_sha256"]) == (
            f"imagenet:{Path(file).name}", file, sha)
        assert f"<code>{sha}</code>" in render(tables, "html", embed_plot=False)


def test_paper_baselines_name_torchreid_imagenet_files():
    from dcac_plugin.config import get_default_config, merge_config

    expected = {"osnet_x1_0": "osnet_x1_0_imagenet.pth", "osnet_ain_x1_0": "osnet_ain_x1_0_imagenet.pth",
                "osnet_ibn_x1_0": "osnet_ibn_x1_0_imagenet.pth", "resnet50": "resnet50-19c8e357.pth"}
    paths = sorted((REPO / "configs/baselines").glob("*.yaml"))
    assert len(paths) == 8
    for p in paths:
        cfg = merge_config(get_default_config(), str(p))
        assert cfg.model.pretrained is True
        assert cfg.model.pretrained_path == f"pretrained/{expected[cfg.model.name]}"


# ------------------------------------------------------------------ dry-run cost


def test_paper_dry_run_lists_trainings_targets_and_gpu_hours(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert benchmark_main(["--suite", "configs/suites/paper_single_source.yaml", "--dry-run", "--output",
                           "/nonexistent-out", "--imgs-per-sec", "dcac=250,clip_baseline=700,*=1500"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("# suite 'paper_single_source': 40 training(s) -> 120 evaluation(s)")
    assert sum(line.startswith("python tools/train.py") for line in lines) == 40
    assert "# dcac_ma: run | targets dukemtmcreid, msmt17, cuhk03_np" in lines
    assert "# resnet50_triplet_c3: run | targets market1501, dukemtmcreid, msmt17" in lines
    # 60 epochs x 12,936 images / 250 img/s = 0.86 h; OSNet: 150 x 32,621 / 1500 = 0.91 h
    assert "| dcac_ma | dukemtmcreid, msmt17, cuhk03_np | 60 | 12,936 | 1 | 250 | 0.86 |" in lines
    assert "| osnet_x1_0_softmax_ms | market1501, dukemtmcreid, cuhk03_np | 150 | 32,621 | 1 | 1,500 | 0.91 |" in lines
    # per model: dcac 60 x (12,936 + 16,522 + 32,621 + 7,365) / 250 / 3600 = 4.63 h
    assert "| dcac | 4 | 12 | 4.6 |" in lines and "| clip_baseline | 4 | 12 | 1.7 |" in lines
    assert any(line.startswith("total: 40 training(s), 120 evaluation(s), 21.7 GPU-h") for line in lines)
    assert "REFUSED when run: 32 run(s) would train a torchreid baseline" in out


def test_cost_helpers(tmp_path):
    from dcac_plugin.benchmark.cost import parse_throughput, throughput_for, train_images
    from dcac_plugin.config import get_default_config, merge_config

    table = parse_throughput("dcac=250, osnet*=1500")
    assert throughput_for("dcac", table) == 250 and throughput_for("osnet_x1_0_softmax", table) == 1500
    assert throughput_for("resnet50", table) is None and parse_throughput("300") == {"*": 300.0}
    with pytest.raises(ValueError, match="not a positive images/s figure"):
        parse_throughput("dcac=fast")
    cfg = merge_config(get_default_config(), None, ["data.root", str(tmp_path), "data.sources",
                                                     "['market1501', 'msmt17']"])
    assert train_images(cfg) == 12_936 + 32_621
    cfg.data.msmt17_include_val = False
    assert train_images(cfg) == 12_936 + 30_248
    (tmp_path / "SYNTHETIC.json").write_text(json.dumps({"counts": {"market1501": {"train_images": 60},
                                                                    "msmt17": {"train_images": 70}}}))
    assert train_images(cfg) == 130  # a generated root: its own counts
