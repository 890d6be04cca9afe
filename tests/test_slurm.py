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
import signal
import socket
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


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sk in socks:
            sk.bind(("127.0.0.1", 0))
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()


@pytest.fixture(scope="session")
def slurm_cluster():
    """SLURM_CONF of a running local cluster (exported for the session)."""
    require_import("submitit")
    state = Path(tempfile.mkdtemp(prefix="dcac-slurm-", dir="/tmp"))
    # free ports, so that two test runs on one machine never reach each other's controller
    ctld, slurmd = _free_ports(2)
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_CTLD_PORT": str(ctld),
           "SLURM_LOCAL_SLURMD_PORT": str(slurmd)}
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


def _status(capsys, suite: Path, out: Path) -> dict[str, tuple[str, str]]:
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:-1]
    return {c[0]: (c[3], c[4]) for c in ([x.strip() for x in line.split("|")] for line in lines)}


def _wait(what: str, cond, timeout: float = 300.0, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def _write_suite(path: Path, data_root: Path, slow_opts: list, bad_opts: list) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "jobs", "launcher": "slurm", "gpus_per_run": 0, "allow_random_init": True,
        "common_opts": ["data.root", str(data_root), "data.workers", 0],
        "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["market1501"]}],
                   # bad first: on a one-core node the jobs run one after the other
                   "models": [{"name": "bad", "config": "configs/demo/osnet.yaml", "opts": bad_opts},
                              {"name": "slow", "config": "configs/demo/osnet.yaml", "opts": slow_opts}]}}))
    return path


def test_slurm_job_heartbeat_flags_failed_and_vanished_jobs(slurm_cluster, synthetic_tiny_root, tmp_path,
                                                             monkeypatch, capsys):
    """The --slurm-* flags reach sbatch (scontrol shows them); a job adopts its run's claim and keeps
    it alive with its own heartbeat after the detached submitter has returned; a failed job is
    'failed' in --status and rerun only with --retry-failed; a vanished (scancelled) job is 'stale'
    in --status and its run is taken over by the next runner."""
    from dcac_plugin.benchmark import claims

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(claims, "DEFAULT_HEARTBEAT_S", 1.0)  # the jobs' heartbeat interval (pickled with them)
    out = tmp_path / "out"
    suite = _write_suite(tmp_path / "jobs.yaml", synthetic_tiny_root, ["train.max_epoch", 100000],
                         ["train.max_epoch", 1, "data.root", str(tmp_path / "no_such_data")])
    flags = ["--slurm-partition", "debug", "--slurm-time", "00:09:00", "--slurm-cpus", "1", "--slurm-mem", "300M",
             "--slurm-option", "comment=dcac-flags-test"]
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--no-check-data", "--no-wait", *flags]) == 0
    assert "2 submitted" in capsys.readouterr().out
    jobs = {run: json.loads((out / f"{run}_ma" / "claim.json").read_text())["job_id"] for run in ("slow", "bad")}
    for job in jobs.values():
        shown = subprocess.run(["scontrol", "-o", "show", "job", str(job)], capture_output=True, text=True,
                               check=True).stdout
        for field in ("Partition=debug", "TimeLimit=00:09:00", "CPUs/Task=1", "MinMemoryNode=300M",
                      "Comment=dcac-flags-test"):
            assert field in shown, (field, shown)

    # the bad job fails: failed.json (written by the job), 'failed' in --status, its claim released
    _wait("the bad job to fail", lambda: (out / "bad_ma" / "failed.json").exists())
    failed = json.loads((out / "bad_ma" / "failed.json").read_text())
    assert failed["job_id"] == jobs["bad"] and "dataset folder not found" in failed["error"], failed["error"]
    _wait("the bad job to release its claim", lambda: not (out / "bad_ma" / "claim.json").exists(), timeout=60)
    assert _status(capsys, suite, out)["bad_ma"][0] == "failed"

    # the slow job adopted its claim (owner = the job, with its training's pid) and beats it
    slow_claim = out / "slow_ma" / "claim.json"
    first = _wait("the slow job to adopt its claim and start training",
                  lambda: (c := json.loads(slow_claim.read_text())).get("worker_pid") and c)
    assert first["launcher"] == "slurm" and first["job_id"] == jobs["slow"] and first["pid"] != os.getpid()
    later = _wait("two more heartbeats of the slow job",
                  lambda: (c := json.loads(slow_claim.read_text()))["heartbeat"] >= first["heartbeat"] + 2 and c,
                  timeout=60, every=0.2)
    assert later["token"] == first["token"] and later["owner"] == first["owner"]
    state, detail = _status(capsys, suite, out)["slow_ma"]
    assert state == "running" and f"Slurm job {jobs['slow']} (RUNNING)" in detail

    # the slow job vanishes: its processes are SIGKILLed (as by the OOM killer or a node failure), so
    # it cannot release its claim; Slurm ends the job. --status: 'stale'; the next runner takes it over
    now = json.loads(slow_claim.read_text())
    assert now["token"] == first["token"] and not (out / "slow_ma" / RESULTS_FILE).exists()
    for pid in (now["worker_pid"], now["pid"]):
        os.kill(pid, signal.SIGKILL)
    _wait("squeue to drop the cancelled job", lambda: subprocess.run(
        ["squeue", "-h", "-j", str(jobs["slow"])], capture_output=True, text=True).stdout.strip() == "", timeout=120)
    assert json.loads(slow_claim.read_text())["token"] == first["token"]  # left behind
    state, detail = _status(capsys, suite, out)["slow_ma"]
    assert state == "stale" and f"Slurm job {jobs['slow']} is no longer queued or running" in detail

    # next runner (the suite now trains 1 epoch, and the bad run's data is fixed): the vanished
    # job's run is taken over and trained; the failed run is skipped without --retry-failed
    _write_suite(suite, synthetic_tiny_root, ["train.max_epoch", 1], ["train.max_epoch", 1])
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--no-check-data"]) == 0
    text = capsys.readouterr().out
    assert "slow_ma: ok in" in text and "1 ran" in text
    assert json.loads((out / "slow_ma" / RESULTS_FILE).read_text())["status"] == "ok"
    rows = _status(capsys, suite, out)
    assert rows["slow_ma"] == ("done", "") and rows["bad_ma"][0] == "failed"
    assert benchmark_main(["--suite", str(suite), "--output", str(out), "--no-check-data", "--retry-failed"]) == 0
    text = capsys.readouterr().out
    assert "bad_ma: ok in" in text and "1 ran" in text
    assert _status(capsys, suite, out) == {"bad_ma": ("done", ""), "slow_ma": ("done", "")}
    assert not (out / "bad_ma" / "failed.json").exists()
