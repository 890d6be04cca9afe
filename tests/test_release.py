"""Release hygiene that needs no build: one version source, a console script per CLI module, the
changelog, the sdist manifest and the public-host CI workflow (the built artifacts themselves are
checked in test_wheel_install.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

import dcac_plugin

ROOT = Path(__file__).resolve().parents[1]


def test_every_cli_module_has_its_console_script():
    """Each dcac_plugin/cli module with a cli() entry point is installed as dcac-<name>."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    scripts = None
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
    assert scripts is not None
    declared = dict(s.replace(" ", "").split("=") for s in scripts)
    modules = sorted(p.stem for p in (ROOT / "dcac_plugin" / "cli").glob("*.py")
                     if "\ndef cli() -> None:" in p.read_text(encoding="utf-8"))
    assert "make_synthetic" in modules and "train" in modules
    assert declared == {f"dcac-{m.replace('_', '-')}": f"dcac_plugin.cli.{m}:cli" for m in modules}


def test_version_has_one_source():
    """setup.py reads __version__; the changelog's newest release and CITATION.cff name the same one."""
    setup_text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert "version=read_version()" in setup_text and not re.search(r"version=['\"]", setup_text)
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+[^\]]*)\] - (\d{4}-\d{2}-\d{2})$", changelog, flags=re.M)
    assert releases and releases[0][0] == dcac_plugin.__version__
    assert "## [Unreleased]" in changelog and "keepachangelog.com" in changelog
    cff = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert f"\nversion: {dcac_plugin.__version__}\n" in cff


def test_sdist_manifest_carries_the_configs():
    """setup.py copies configs/ into the wheel, and a wheel built from the sdist needs configs/ there."""
    lines = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "graft configs" in lines
    assert any(line.startswith("include ") and "CHANGELOG.md" in line.split() for line in lines)


def test_public_ci_workflow_runs_make_test():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    on = wf.get("on", wf.get(True))  # yaml 1.1 reads a bare 'on' key as True
    assert {"push", "pull_request"} <= set(on)
    job = wf["jobs"]["test"]
    assert [s["run"] for s in job["steps"] if s.get("run", "").strip() == "make test"] == ["make test"]
    assert job["env"]["CI"] == "true" and job["container"].startswith("python:")
    versions = {c.rsplit(" :: ", 1)[1] for c in _setup_classifiers() if re.fullmatch(r".*:: 3\.\d+", c)}
    assert set(job["strategy"]["matrix"]["python"]) == versions  # the versions the metadata claims are tested


def _setup_classifiers() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "classifiers":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py declares no classifiers")
