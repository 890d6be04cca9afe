"""Configs by name (dcac_plugin.configs): every form of a name, a path wins, errors, and the CLIs
that take a name (dcac-train --config-file, --list-configs, dcac-benchmark --suite) from a folder
that is not the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcac_plugin import configs
from dcac_plugin.benchmark.suite import load_suite
from dcac_plugin.cli.benchmark import main as benchmark_main
from dcac_plugin.cli.train import parse_args
from dcac_plugin.config import ConfigError, get_default_config, merge_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def test_a_checkout_reads_the_top_level_configs_folder():
    assert configs.root() == CONFIGS.resolve()
    on_disk = sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert configs.list() == on_disk and len(on_disk) >= 46
    assert configs.list("suites/*") == ["suites/demo", "suites/mechanism", "suites/paper_multi_source",
                                        "suites/paper_single_source"]
    assert "dcac_ma2ms" in configs.list() and "demo/dcac_tiny" in configs.list()
    assert "demo/vit_small" not in configs.list()  # json files are named with their suffix only


@pytest.mark.parametrize("name, rel", [
    ("dcac_ma2ms", "dcac_ma2ms.yaml"),
    ("dcac_ma2ms.yaml", "dcac_ma2ms.yaml"),
    ("demo/dcac_tiny", "demo/dcac_tiny.yaml"),
    ("demo/dcac_tiny.yaml", "demo/dcac_tiny.yaml"),
    ("dcac_tiny", "demo/dcac_tiny.yaml"),  # a bare file name found in one folder only
    ("osnet_x1_0_softmax", "baselines/osnet_x1_0_softmax.yaml"),
    ("baselines/resnet50_triplet", "baselines/resnet50_triplet.yaml"),
    ("demo/vit_small.json", "demo/vit_small.json"),
    ("suites/demo", "suites/demo.yaml"),
])
def test_every_form_of_a_name(name, rel):
    assert configs.path(name) == CONFIGS.resolve() / rel


def test_suite_names():
    assert configs.path("demo", kind="suite") == CONFIGS.resolve() / "suites/demo.yaml"
    suites = CONFIGS.resolve() / "suites"
    assert configs.path("paper_single_source.yaml", kind="suite") == suites / "paper_single_source.yaml"
    assert configs.path("suites/demo", kind="suite") == CONFIGS.resolve() / "suites/demo.yaml"
    with pytest.raises(ConfigError, match="no config named 'demo'"):  # a suite is not a training config
        configs.path("demo")
    with pytest.raises(ConfigError, match=r"no suite named 'dcac_tiny' \(suites by name: demo, "
                                          r"mechanism, paper_multi_source, paper_single_source\)"):
        configs.path("dcac_tiny", kind="suite")


def test_an_existing_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir(parents=True)
    (tmp_path / "demo" / "dcac_tiny.yaml").write_text("model:\n  name: osnet_x0_25\n")
    assert configs.resolve("demo/dcac_tiny.yaml") == Path("demo/dcac_tiny.yaml")
    assert merge_config(get_default_config(), "demo/dcac_tiny.yaml").model.name == "osnet_x0_25"
    # no file of that path here: the name is the project's config
    assert configs.resolve("demo/dcac_tiny") == CONFIGS.resolve() / "demo/dcac_tiny.yaml"
    assert merge_config(get_default_config(), "demo/dcac_tiny").model.name == "dcac_tiny"


def test_a_missing_configs_path_is_not_taken_for_a_name(tmp_path, monkeypatch):
    """A folder with a configs/ of its own never silently gets the project's file of the same path:
    the error names the project's config instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("model:\n  name: osnet_x0_25\n")
    assert merge_config(get_default_config(), "configs/mine.yaml").model.name == "osnet_x0_25"
    with pytest.raises(ConfigError, match=r"^config file not found: configs/dcac_ma2ms.yaml, and 'configs/dcac_ma2ms"
                                          r"\.yaml' is a path, not a config name; the project's config of that "
                                          r"path is named 'dcac_ma2ms' \(--config-file dcac_ma2ms\)$"):
        merge_config(get_default_config(), "configs/dcac_ma2ms.yaml")
    with pytest.raises(FileNotFoundError, match=r"'configs/suites/demo.yaml' is a path, not a suite name; the "
                                                r"project's suite of that path is named 'demo' \(--suite demo\)$"):
        load_suite("configs/suites/demo.yaml")


def test_a_name_merges_the_same_config_as_its_path():
    by_path = merge_config(get_default_config(), str(CONFIGS / "dcac_ms2ma.yaml"), ["data.root", "x"])
    by_name = merge_config(get_default_config(), "dcac_ms2ma", ["data.root", "x"])
    assert by_name.dump() == by_path.dump()
    assert by_name.dcac.sd.lora_rank == 32 and by_name.data.sources == ["msmt17"]


@pytest.mark.parametrize("ref, message", [
    ("nope", r"config file not found: nope, and no config named 'nope' \(\d+ configs by name, e\.g\. dcac_ma2ms, "
             r"clip_baseline_ma2ms, baselines/osnet_x1_0_softmax, demo/dcac_tiny; dcac-train --list-configs"),
    ("configs/nope.yaml", "config file not found: configs/nope.yaml, and 'configs/nope.yaml' is a path, not a "
                          "config name$"),
    ("/abs/nope.yaml", "'/abs/nope.yaml' is not a config name"),
    ("../setup.py", "'../setup.py' is not a config name"),  # names stay inside the configs folder
])
def test_unknown_names_say_what_exists(ref, message):
    with pytest.raises(ConfigError, match=message):
        merge_config(get_default_config(), ref)


def test_an_ambiguous_bare_name_lists_the_candidates(tmp_path, monkeypatch):
    fake = tmp_path / "configs"
    for rel in ("suites/s.yaml", "a/x.yaml", "b/x.yaml"):
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text("model:\n  name: osnet_x0_25\n")
    monkeypatch.setattr(configs, "_HERE", tmp_path / "nowhere")
    monkeypatch.setattr(configs, "_CHECKOUT", fake)
    assert configs.root() == fake and configs.list() == ["a/x", "b/x", "suites/s"]
    with pytest.raises(ConfigError, match=r"'x' matches several configs \(a/x.yaml, b/x.yaml\); give the folder"):
        configs.path("x")
    assert configs.path("b/x") == fake / "b/x.yaml"


def test_a_package_without_configs_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(configs, "_HERE", tmp_path / "a")
    monkeypatch.setattr(configs, "_CHECKOUT", tmp_path / "b")
    with pytest.raises(ConfigError, match="installed without its configs"):
        configs.list()


def test_an_installed_copy_is_preferred_over_a_checkout(tmp_path, monkeypatch):
    """The wheel's copy (dcac_plugin/configs/ with the config files in it) is what root() returns."""
    (tmp_path / "pkg" / "suites").mkdir(parents=True)
    (tmp_path / "pkg" / "suites" / "demo.yaml").write_text("name: demo\n")
    monkeypatch.setattr(configs, "_HERE", tmp_path / "pkg")
    assert configs.root() == tmp_path / "pkg" and configs.list() == ["suites/demo"]


def test_list_configs_prints_every_training_config(capsys):
    with pytest.raises(SystemExit) as ei:
        parse_args(["--list-configs"])
    assert ei.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# configs in {CONFIGS.resolve()} (suites: dcac-benchmark --suite NAME, demo, ")
    assert lines[1:] == [n for n in configs.list() if not n.startswith("suites/")]


def test_train_and_benchmark_by_name_from_another_folder(tmp_path, monkeypatch, capsys):
    """In a folder without configs/ the suite's config names are the project's configs, so the dry
    run estimates every run, and it prints the dcac-train command (no tools/train.py here)."""
    monkeypatch.chdir(tmp_path)
    assert load_suite("demo").name == "demo"
    assert benchmark_main(["--suite", "demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dcac-train --config-file demo/dcac_tiny data.root data/synthetic-small" in out
    assert "python tools/train.py" not in out
    # every run's config was read: epochs in the cost table, no '?'
    assert re.search(r"\| dcac_tiny_ma2ms \| msmt17, market1501 \| 12 \|", out), out
    assert re.search(r"\| osnet_x0_25_ma2ms \| msmt17, market1501 \| \d+ \|", out), out
    with pytest.raises(FileNotFoundError, match=r"suite file not found: nope, and no suite named 'nope' "
                                                r"\(suites by name: demo, mechanism, paper_multi_source"):
        load_suite("nope")
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
