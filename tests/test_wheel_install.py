"""The released artifacts: ``python -m build`` makes an sdist and a wheel that pass ``twine check``;
the wheel holds every file the code opens at run time; installed alone into a fresh virtual
environment outside the source tree, its console scripts train a tiny model by config *name* on
generated data, evaluate it again, extract features and print the leaderboard.

The fresh environment gets the wheel with ``--no-deps`` and sees its dependencies (torch & co.)
through a ``.pth`` path line naming this interpreter's site-packages: no multi-GB download or copy.
A path line adds that folder to ``sys.path`` without running the ``.pth`` files inside it, so the
editable install of the checkout stays out, and the test asserts that ``dcac_plugin`` is imported
from the new environment. ``pip check`` then verifies the wheel's declared requirements against
what the environment provides.
"""

from __future__ import annotations

import ast
import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest

import dcac_plugin

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dcac_plugin"
pytestmark = pytest.mark.slow

_NOT_SHIPPED = {"__pycache__", ".pytest_cache"}


def _sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``cmd``; on a non-zero exit fail with its output. Returns stdout."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                    f"--- stderr\n{proc.stderr[-6000:]}")
    return proc.stdout


def _console_scripts() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            return [s.split("=")[0].strip() for s in ast.literal_eval(node.value)["console_scripts"]]
    raise AssertionError("setup.py declares no console_scripts")


def _runtime_files() -> set[str]:
    """Every file the installed package must hold: all of dcac_plugin/ (modules and data) and the
    configs/ folder, which the build copies to dcac_plugin/configs/."""
    out = set()
    for f in PACKAGE.rglob("*"):
        rel = f.relative_to(ROOT)
        if f.is_file() and not _NOT_SHIPPED & set(rel.parts) and f.suffix not in (".pyc", ".nbc", ".nbi"):
            out.add(rel.as_posix())
    for f in (ROOT / "configs").rglob("*"):
        if f.is_file():
            out.add("dcac_plugin/" + f.relative_to(ROOT).as_posix())
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """sdist + wheel from ``python -m build`` (the wheel is built from the sdist, as for a release)."""
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools instead of downloading a fresh one
    _sh([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=out)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_sdist_and_wheel_pass_twine_check(dist):
    out = _sh([sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])], cwd=ROOT)
    assert out.count("PASSED") == 2, out
    version = dcac_plugin.__version__
    assert dist["wheel"].name == f"dcac_plugin-{version}-py3-none-any.whl"
    assert dist["sdist"].name == f"dcac_plugin-{version}.tar.gz"


def test_wheel_metadata_is_complete(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        info = f"dcac_plugin-{dcac_plugin.__version__}.dist-info"
        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        names = set(z.namelist())
    assert meta["Name"] == "dcac_plugin" and meta["Version"] == dcac_plugin.__version__
    assert meta["License-Expression"] == "MIT" and f"{info}/licenses/LICENSE" in names
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown" and "DCAC" in meta.get_payload()
    classifiers = meta.get_all("Classifier")
    for v in ("3.10", "3.11", "3.12"):
        assert f"Programming Language :: Python :: {v}" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Paper"] == "https://doi.org/10.3390/s25020552"
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch==") for r in requires) and any(r.startswith("torchreid==") for r in requires)
    for script in _console_scripts():
        assert f"\n{script} = dcac_plugin.cli." in entry_points, script


def test_wheel_holds_every_runtime_file(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        shipped = {n for n in z.namelist() if not n.endswith("/")}
    expected = _runtime_files()
    assert {"dcac_plugin/configs/dcac_ma2ms.yaml", "dcac_plugin/configs/suites/demo.yaml",
            "dcac_plugin/configs/demo/dcac_tiny.yaml", "dcac_plugin/resources/sd15/unet/config.json",
            "dcac_plugin/resources/tiny/vision/config.json", "dcac_plugin/benchmark/published.yaml"} <= expected
    missing = sorted(expected - shipped)
    assert not missing, f"the wheel lacks {missing}: add them to package_data in setup.py"
    junk = sorted(n for n in shipped if "__pycache__" in n or n.endswith((".pyc", ".nbc", ".nbi")))
    assert not junk, junk
    with zipfile.ZipFile(dist["wheel"]) as z:  # the copies are the configs/ files, byte for byte
        for f in (ROOT / "configs").rglob("*.yaml"):
            assert z.read("dcac_plugin/" + f.relative_to(ROOT).as_posix()) == f.read_bytes()


def test_sdist_builds_the_wheel_again(dist):
    """The sdist holds configs/ (the wheel's configs are made from it) plus changelog and licence."""
    import tarfile

    with tarfile.open(dist["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for rel in ("configs/suites/demo.yaml", "configs/dcac_ma2ms.yaml", "CHANGELOG.md", "LICENSE", "CITATION.cff",
                "MANIFEST.in", "setup.py", "dcac_plugin/resources/sd15/vae/config.json"):
        assert rel in names, rel


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> dict[str, object]:
    """A fresh venv (outside the source tree) holding only the built wheel; deps via a .pth line."""
    base = tmp_path_factory.mktemp("fresh")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # no PYTHONPATH: a checkout on it (the tests put it there) would make the package look installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    _sh([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(dist["wheel"])], cwd=base, env=env)
    purelib = Path(_sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=base, env=env).strip())
    deps = [p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"],
                                      sysconfig.get_paths()["platlib"]]) if Path(p).is_dir()]
    (purelib / "_dcac_test_dependencies.pth").write_text("".join(p + "\n" for p in deps))
    work = base / "work"
    work.mkdir()
    assert ROOT not in work.resolve().parents and ROOT not in env_dir.resolve().parents
    return {"python": python, "bin": env_dir / "bin", "env": env, "work": work, "venv": env_dir}


def test_installed_wheel_imports_from_the_new_environment(installed):
    out = _sh([str(installed["python"]), "-c",
               "import json, dcac_plugin, torch; from dcac_plugin import configs; "
               "print(json.dumps({'file': dcac_plugin.__file__, 'root': str(configs.root()), "
               "'names': configs.list(), 'version': dcac_plugin.__version__}))"],
              cwd=installed["work"], env=installed["env"])
    got = json.loads(out)
    venv_dir = installed["venv"].resolve()
    assert venv_dir in Path(got["file"]).resolve().parents, got["file"]
    assert Path(got["root"]).resolve() == Path(got["file"]).resolve().parent / "configs"
    assert got["names"] == sorted(p.relative_to(ROOT / "configs").with_suffix("").as_posix()
                                  for p in (ROOT / "configs").rglob("*.yaml"))
    assert got["version"] == dcac_plugin.__version__
    # the wheel's declared requirements are met by what the environment provides
    _sh([sys.executable, "-m", "pip", "--python", str(installed["python"]), "check"], cwd=installed["work"],
        env=installed["env"])


def test_installed_console_scripts_run_the_demo_by_config_name(installed):
    """Every console script is installed and loads, dcac-train answers --help; then, by config name
    in an empty folder: generate the
    tiny benchmark, train one epoch, evaluate again on another target, extract features (by run
    folder and by config name: the same numbers), the leaderboard with the published rows, a
    one-run suite naming a packaged config, and the demo suite's dry run."""
    env, work, bin_dir = installed["env"], installed["work"], installed["bin"]

    def run(*args: str) -> str:
        return _sh([str(bin_dir / args[0]), *args[1:]], cwd=work, env=env)

    # every declared script is installed and its entry point loads (one process: each script's own
    # --help would import torch again, ~4 s apiece); dcac-train --help runs the real wrapper
    scripts = _console_scripts()
    assert all((bin_dir / s).is_file() for s in scripts), sorted(p.name for p in bin_dir.iterdir())
    loaded = _sh([str(installed["python"]), "-c",
                  "from importlib.metadata import entry_points as e; "
                  "print(*sorted(p.name for p in e(group='console_scripts') if p.value.startswith('dcac_plugin.') "
                  "and callable(p.load())))"], cwd=work, env=env).split()
    assert loaded == sorted(scripts)
    assert run("dcac-train", "--help").startswith("usage: dcac-train ")
    names = run("dcac-train", "--list-configs").splitlines()
    assert {"dcac_ma2ms", "clip_baseline_ms2ma", "baselines/resnet50_triplet", "demo/dcac_tiny"} <= set(names)

    run("dcac-make-synthetic", "--root", "data", "--scale", "tiny")
    assert (work / "data" / "SYNTHETIC.json").is_file()
    tiny = ["data.workers", "0", "train.batch_size", "16", "test.batch_size", "64"]
    out = run("dcac-train", "--config-file", "dcac_tiny", "data.root", "data", "train.max_epoch", "1",
              "data.save_dir", "runs/dcac_tiny", *tiny)
    run_dir = work / "runs" / "dcac_tiny"
    rec = json.loads((run_dir / "results.json").read_text())
    assert json.loads(out) == rec["results"] and rec["status"] == "ok" and rec["epochs"] == 1
    assert rec["model"] == "dcac_tiny" and rec["config_file"] == "dcac_tiny"
    assert rec["command"].startswith("dcac-train --config-file dcac_tiny data.root data")
    assert rec["protocol"]["benchmark"] == "synthetic" and set(rec["results"]) == {"msmt17"}
    assert rec["versions"]["dcac_plugin"] == dcac_plugin.__version__

    run("dcac-train", "--config-file", "demo/dcac_tiny", "--eval-only", "data.root", "data",
        "data.save_dir", "runs/dcac_tiny", "data.targets", "market1501", *tiny)
    rec2 = json.loads((run_dir / "results.json").read_text())
    assert set(rec2["results"]) == {"msmt17", "market1501"} and rec2["results"]["msmt17"] == rec["results"]["msmt17"]

    (query,) = (work / "data" / "market1501").glob("*/query")
    run("dcac-extract", "--run-dir", "runs/dcac_tiny", "--images", str(query), "--output", "a.npz")
    run("dcac-extract", "--config-file", "dcac_tiny", "--weights", "runs/dcac_tiny/checkpoint_ep1.pth",
        "--images", str(query), "--output", "b.npz")
    a, b = np.load(work / "a.npz"), np.load(work / "b.npz")
    n_query = len(list(query.glob("*.jpg")))
    assert a["features"].shape[0] == n_query > 0 and np.allclose(a["features"], b["features"], atol=1e-6)

    board = run("dcac-leaderboard", "--results", "runs", "--published", "--format", "github")
    assert "| DCAC                                          | [1]      | 49.5/69.1" in board  # packaged rows
    assert "GENERATED benchmark" in board and "DCAC (tiny)" in board
    run("dcac-leaderboard", "--results", "runs", "--format", "html", "--output", "board.html")
    assert "DCAC (tiny)" in (work / "board.html").read_text(encoding="utf-8")

    # a suite naming a packaged config runs (inline launcher) and prints its leaderboard
    (work / "tiny.yaml").write_text(
        "name: tiny\noutput_root: runs/suite\n"
        "common_opts: [data.root, data, train.max_epoch, 1, data.workers, 0, train.batch_size, 16]\n"
        "matrix:\n  protocols: [{name: ma2ms, sources: [market1501], targets: [msmt17]}]\n"
        "  models: [{name: osnet_x0_25, config: demo/osnet}]\n")
    text = run("dcac-benchmark", "--suite", "tiny.yaml")
    assert "1 planned, 1 ran, 0 skipped (results exist), 0 failed" in text and "| OSNet-x0.25 (ours)" in text
    suite_rec = json.loads((work / "runs" / "suite" / "osnet_x0_25_ma2ms" / "results.json").read_text())
    assert suite_rec["status"] == "ok" and suite_rec["config_file"] == "demo/osnet"

    plan = run("dcac-benchmark", "--suite", "demo", "--dry-run")
    assert "dcac-train --config-file demo/dcac_tiny data.root data/synthetic-small" in plan
    assert "| dcac_tiny_ma2ms | msmt17, market1501 | 12 |" in plan  # the packaged config was read
    assert not (work / "output").exists()
