"""The Slurm launcher end to end on a real single-node Slurm (munge + slurmctld + slurmd).

The session fixture starts the cluster with ``tools/slurm_local.sh start`` (installing the Debian
packages when missing) and stops it at the end. Where Slurm cannot be installed on this machine (the
script exits 3: no root, no apt-get, apt-get failed) the tests are skipped with the script's output,
or fail under ``CI=true`` / ``DCAC_REQUIRE_ALL=1``; any other failure of the script (configuration,
daemons, a start slower than 900 s) is a test failure everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from components import require_import, unavailable

from dcac_plugin.benchmark.suite import RESULTS_FILE
from dcac_plugin.cli.benchmark import main as benchmark_main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "slurm_local.sh"
CANNOT_INSTALL = 3  # tools/slurm_local.sh start: Slurm cannot be installed on this machine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm_cluster():
    """SLURM_CONF of a running local cluster (exported for the session)."""
    require_import("submitit")
    state = Path(tempfile.mkdtemp(prefix="dcac-slurm-", dir="/tmp"))
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state)}
    t0 = time.perf_counter()
    try:
        res = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"tools/slurm_local.sh start did not bring Slurm up within 900 s: {e}", pytrace=False)
    if res.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-40:])
        if res.returncode == CANNOT_INSTALL:
            unavailable("slurm", f"Slurm cannot be installed on this machine (tools/slurm_local.sh start "
                        f"exited {CANNOT_INSTALL}):\n{tail}")
        pytest.fail(f"tools/slurm_local.sh start failed (exit {res.returncode}; Slurm's packages are there, "
                    f"so this is the script or the daemons):\n{tail}", pytrace=False)
    sys.stderr.write(f"local Slurm up in {time.perf_counter() - t0:.1f} s ({state})\n")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _status_rows(capsys, suite: Path, out: Path) -> dict[str, str]:
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:-1]
    return {line.split("|")[0].strip(): line.split("|")[3].strip() for line in lines}


def test_slurm_suite_end_to_end(slurm_cluster, synthetic_tiny_root, tmp_path, monkeypatch, capsys):
    """Two tiny trainings as Slurm jobs (one detached, one waited for), then the leaderboard."""
    from dcac_plugin.cli.leaderboard import main as leaderboard_main

    t_start = time.perf_counter()
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    suite = tmp_path / "tiny_slurm.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny_slurm", "launcher": "slurm", "gpus_per_run": 0,
        "slurm": {"time": "00:20:00", "cpus_per_task": 1},
        "common_opts": ["data.root", str(synthetic_tiny_root), "train.max_epoch", 1, "data.workers", 0],
        "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["msmt17", "market1501"]}],
                   "models": [{"name": "clip_reid_tiny", "config": "configs/demo/clip_tiny.yaml"},
                              {"name": "osnet_x0_25", "config": "configs/demo/osnet.yaml"}]}}))
    out = tmp_path / "out"

    # 1. detached: submit OSNet and return at once
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--only", "osnet_*", "--no-wait"]) == 0
    text = capsys.readouterr().out
    assert "1 submitted (--status follows them)" in text and "osnet_x0_25_ma: Slurm job" in text
    claim = json.loads((out / "osnet_x0_25_ma" / "claim.json").read_text())
    assert claim["launcher"] == "slurm" and claim["job_id"]
    assert _status_rows(capsys, suite, out)["osnet_x0_25_ma"] in ("queued", "running", "done")

    # 2. a second runner waits for the whole suite: OSNet is its job's (claimed), the CLIP run is new
    assert benchmark_main(["--suite", str(suite), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clip_reid_tiny_ma: ok in" in text
    # OSNet was never submitted twice: still its job's, or already finished by it
    assert "osnet_x0_25_ma: claimed by" in text or "1 skipped (results exist)" in text
    assert "1 ran" in text
    deadline = time.time() + 600
    while _status_rows(capsys, suite, out)["osnet_x0_25_ma"] != "done" and time.time() < deadline:
        time.sleep(2)
    rows = _status_rows(capsys, suite, out)
    assert rows == {"clip_reid_tiny_ma": "done", "osnet_x0_25_ma": "done"}

    for run in ("clip_reid_tiny_ma", "osnet_x0_25_ma"):
        rec = json.loads((out / run / RESULTS_FILE).read_text())
        assert rec["status"] == "ok" and set(rec["results"]) == {"msmt17", "market1501"}
        assert rec["command"].startswith("python tools/train.py --config-file configs/demo/")
        assert not (out / run / "claim.json").exists()
        logs = sorted((out / run / "slurm").glob("*_log.err"))
        assert logs, f"no Slurm log in {out / run / 'slurm'}"
        head = logs[-1].read_text()
        assert f"in {REPO}: OMP_NUM_THREADS=1 {sys.executable} tools/train.py" in head

    # 3. everything is done: a third run submits nothing
    assert benchmark_main(["--suite", str(suite), "--output", str(out)]) == 0
    assert "2 skipped (results exist)" in capsys.readouterr().out

    assert leaderboard_main(["--results", str(out), "--format", "github"]) == 0
    board = capsys.readouterr().out
    header = next(line for line in board.splitlines() if line.startswith("| Method"))
    assert "MA->MS" in header and "MA->MA" in header
    methods = [line.split("|")[1].strip() for line in board.splitlines()
               if line.startswith("| ") and not line.startswith(("| Method", "|--", "| -"))]
    assert any(m.startswith("CLIP baseline (tiny ViT") for m in methods)
    assert any(m.startswith("OSNet-x0.25") for m in methods)
    sys.stderr.write(f"Slurm end-to-end test: {time.perf_counter() - t_start:.1f} s\n")
