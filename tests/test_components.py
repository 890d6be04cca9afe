"""A missing real component skips outside CI (named in the run's last line) and fails under CI.

Runs pytest in a subprocess on a throw-away test folder that uses this suite's own conftest.py and
components.py; and checks that tools/slurm_local.sh tells "cannot install here" (exit 3) apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_PROBE = '''
from components import require_import, unavailable


def test_uses_a_browser():
    unavailable("fakebrowser", "fakebrowser not on PATH")


def test_uses_a_module():
    require_import("dcac_no_such_module_xyz")


def test_plain():
    assert 1 + 1 == 2
'''


def _run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    d = tmp_path / "probe"
    d.mkdir(exist_ok=True)
    for name in ("conftest.py", "components.py"):
        shutil.copy(HERE / name, d / name)
    (d / "test_probe.py").write_text(_PROBE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "DCAC_REQUIRE_ALL", "PYTEST_ADDOPTS")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(d)],
                          cwd=d, env=clean, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_missing_component_skips_outside_ci_and_the_last_line_names_it(tmp_path):
    res = _run_probe(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("skipped components: dcac_no_such_module_xyz (test_probe.py), fakebrowser "
                           "(test_probe.py)"), last
    assert "1 passed, 2 skipped" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"CI": "true"}, {"DCAC_REQUIRE_ALL": "1"}])
def test_missing_component_fails_under_ci(tmp_path, env):
    res = _run_probe(tmp_path, **env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2 failed, 1 passed" in res.stdout
    assert "missing component 'fakebrowser': fakebrowser not on PATH" in res.stdout
    assert "missing component 'dcac_no_such_module_xyz': cannot import dcac_no_such_module_xyz" in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith("skipped components: none")


def _fake_bin(tmp_path: Path, uid: int, apt: bool) -> str:
    """A PATH with no Slurm, an ``id`` that answers ``uid`` and, if ``apt``, an apt-get that fails."""
    b = tmp_path / f"bin{uid}{int(apt)}"
    b.mkdir()
    (b / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt:
        (b / "apt-get").write_text("#!/bin/sh\necho 'E: cannot reach the mirror' >&2\nexit 100\n")
    for f in b.iterdir():
        f.chmod(0o755)
    return str(b)


@pytest.mark.parametrize("uid,apt,why", [(1000, False, "needs root"), (0, False, "has no apt-get"),
                                         (0, True, "apt-get could not install")])
def test_slurm_script_exit_3_only_when_it_cannot_install(tmp_path, uid, apt, why):
    env = {"PATH": _fake_bin(tmp_path, uid, apt), "SLURM_LOCAL_DIR": str(tmp_path / "state")}
    res = subprocess.run(["/bin/bash", str(REPO / "tools" / "slurm_local.sh"), "start"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert why in res.stderr
