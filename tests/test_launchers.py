"""Claims, launchers and --status: runs are never trained twice, survive killed runners, spread out.

The claim tests drive :func:`run_suite` with a stand-in training entry point that writes a real
``results.json`` (and counts its calls); the local-launcher tests run real subprocesses (real tiny
trainings on the generated benchmark, or a stand-in ``tools/train.py`` that reports the GPUs and
the torchrun world it was given).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from components import require_import

from dcac_plugin.benchmark import claims
from dcac_plugin.benchmark.launchers import (
    LauncherError,
    LocalLauncher,
    check_slurm,
    error_summary,
    parse_gpus,
    parse_slurm_time,
    training_command,
)
from dcac_plugin.benchmark.suite import FAILED_FILE, RESULTS_FILE, load_suite, run_suite
from dcac_plugin.cli.benchmark import main as benchmark_main
from dcac_plugin.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


class CountingTrain:
    """Training stand-in: sleeps a little, writes results.json, counts calls per run (thread-safe)."""

    def __init__(self, delay: float = 0.0, fail: tuple[str, ...] = ()):
        self.delay = delay
        self.fail = fail
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, argv: list[str]) -> dict:
        opts = dict(zip(argv[2::2], argv[3::2], strict=True))
        save_dir = Path(opts["data.save_dir"])
        with self._lock:
            self.calls.append(save_dir.name)
        time.sleep(self.delay)
        if save_dir.name in self.fail:
            raise RuntimeError(f"boom in {save_dir.name}")
        record = {"schema_version": 2, "run_name": save_dir.name, "model": "dcac_tiny", "status": "ok",
                  "protocol": {"key": "MA->MS", "kind": "single_source", "sources": ["market1501"],
                               "targets": ["msmt17"], "benchmark": "synthetic", "variants": {}},
                  "results": {"msmt17": {"mAP": 1.0, "rank1": 2.0}}}
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, save_dir / RESULTS_FILE)  # as the real runner does: a reader never sees half a file
        return record


def _suite(tmp_path: Path, n_models: int = 4, name: str = "claims") -> Path:
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "configs" / "m.yaml").write_text("model:\n  name: dcac_tiny\n")
    data = {"name": name, "output_root": str(tmp_path / "out"),
            "matrix": {"protocols": [{"name": "ma2ms", "sources": ["market1501"], "targets": ["msmt17"]}],
                       "models": [{"name": f"m{i}", "config": "configs/m.yaml"} for i in range(n_models)]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_claim(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"owner": "x", "host": socket.gethostname(), "pid": os.getpid(), "launcher": "local", "token": "t0",
            "job_id": None, "worker_pid": None, "heartbeat": time.time(), **fields}
    (run_dir / claims.CLAIM_FILE).write_text(json.dumps(info))


# ---------------------------------------------------------------------------------------- claims


def test_claim_is_exclusive_and_released(tmp_path):
    first = claims.acquire(tmp_path / "run", "inline")
    assert isinstance(first, claims.Claim)
    info = json.loads((tmp_path / "run" / claims.CLAIM_FILE).read_text())
    assert info["owner"] == f"{socket.gethostname()}:{os.getpid()}:inline" and info["token"] == first.token
    held = claims.acquire(tmp_path / "run", "inline")  # this process is alive: the claim holds
    assert isinstance(held, dict) and held["token"] == first.token
    claims.release(first)
    assert not (tmp_path / "run" / claims.CLAIM_FILE).exists()
    assert isinstance(claims.acquire(tmp_path / "run", "inline"), claims.Claim)


@pytest.mark.parametrize("case, taken", [
    ("dead_pid_this_host", True),
    ("old_heartbeat_other_host", True),
    ("fresh_other_host", False),
    ("slurm_job_listed_old_heartbeat", False),
    ("slurm_job_gone", True),
    ("unreadable_old", True),
])
def test_stale_claims_are_taken_over(tmp_path, case, taken):
    run = tmp_path / "run"
    queue = {"7": "RUNNING"}
    if case == "dead_pid_this_host":
        _write_claim(run, pid=_dead_pid())
    elif case == "old_heartbeat_other_host":
        _write_claim(run, host="elsewhere", heartbeat=time.time() - 4000)
    elif case == "fresh_other_host":
        _write_claim(run, host="elsewhere", pid=1)
    elif case == "slurm_job_listed_old_heartbeat":
        _write_claim(run, launcher="slurm", job_id="7", heartbeat=time.time() - 4000, pid=_dead_pid())
    elif case == "slurm_job_gone":
        _write_claim(run, launcher="slurm", job_id="8", pid=_dead_pid())
    else:
        run.mkdir()
        (run / claims.CLAIM_FILE).write_text("")
        old = time.time() - 4000
        os.utime(run / claims.CLAIM_FILE, (old, old))
    got = claims.acquire(run, "local", stale_after=600, job_query=lambda job: queue.get(job, ""))
    assert isinstance(got, claims.Claim) is taken
    if taken:
        assert json.loads((run / claims.CLAIM_FILE).read_text())["token"] == got.token
        assert not (run / "claim.json.lock").exists()


def test_heartbeat_adopt_and_release(tmp_path):
    claim = claims.acquire(tmp_path / "run", "slurm")
    path = claim.path
    beat = claims.Heartbeat(0.05).start()
    beat.add(claim)
    t0 = json.loads(path.read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads(path.read_text())["heartbeat"] > t0
    beat.stop()
    # a job (another process) adopts the claim: same token, new owner; the submitter can no longer touch it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = (f"from dcac_plugin.benchmark import claims; "
            f"c = claims.adopt({str(tmp_path / 'run')!r}, {claim.token!r}, 'slurm', job_id='42'); print(c.owner)")
    job_owner = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
    info = json.loads(path.read_text())
    assert info["job_id"] == "42" and info["owner"] == job_owner != claim.owner and info["token"] == claim.token
    assert not claims.heartbeat(claim)
    claims.release(claim)
    assert path.exists()
    claims.release(claims.Claim(path, claim.token, job_owner))  # the job releases it
    assert not path.exists()
    assert claims.adopt(tmp_path / "run", claim.token, "slurm") is None  # nothing to adopt any more


def test_two_runners_never_train_one_run_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=6)
    train = CountingTrain(delay=0.2)
    summaries = []

    def runner():
        summaries.append(run_suite(load_suite(path), runner=train, heartbeat_s=0.05, poll_s=0.01))

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [f"m{i}_ma2ms" for i in range(6)]
    assert sorted(train.calls) == names  # every training exactly once
    ran = sorted(summaries[0].ran + summaries[1].ran)
    assert ran == names and summaries[0].ran and summaries[1].ran  # both runners did work
    for s in summaries:  # what one runner did not run, it saw claimed or finished by the other
        others = set(names) - set(s.ran)
        assert others == set(s.busy) | set(s.skipped)
    assert not list((tmp_path / "out").glob("*/claim.json"))


def test_live_claim_is_respected_and_stale_one_taken_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=2)
    _write_claim(tmp_path / "out" / "m0_ma2ms", owner="otherhost:1:local", host="otherhost")  # alive elsewhere
    _write_claim(tmp_path / "out" / "m1_ma2ms", owner=f"{socket.gethostname()}:1:local", pid=_dead_pid())
    train = CountingTrain()
    summary = run_suite(load_suite(path), runner=train)
    assert train.calls == ["m1_ma2ms"] and summary.ran == ["m1_ma2ms"]
    assert summary.busy == {"m0_ma2ms": "otherhost:1:local"}
    assert "1 running elsewhere" in summary.text()
    assert (tmp_path / "out" / "m0_ma2ms" / claims.CLAIM_FILE).exists()  # not ours: left alone


def test_finished_run_is_never_rerun_even_with_retry_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=2)
    train = CountingTrain(fail=("m1_ma2ms",))
    first = run_suite(load_suite(path), runner=train)
    assert first.ran == ["m0_ma2ms"] and list(first.failed) == ["m1_ma2ms"]
    failed = json.loads((tmp_path / "out" / "m1_ma2ms" / FAILED_FILE).read_text())
    assert failed["error"] == "RuntimeError: boom in m1_ma2ms" and failed["launcher"] == "inline"
    again = run_suite(load_suite(path), runner=train, retry_failed=True)
    assert again.skipped == ["m0_ma2ms"] and list(again.failed) == ["m1_ma2ms"]
    assert train.calls == ["m0_ma2ms", "m1_ma2ms", "m1_ma2ms"]


_KILLED_RUNNER = """
import json, sys, time
from pathlib import Path
from dcac_plugin.benchmark.suite import load_suite, run_suite

def train(argv):
    opts = dict(zip(argv[2::2], argv[3::2]))
    d = Path(opts["data.save_dir"])
    if d.name == "m1_ma2ms":
        Path(sys.argv[2]).write_text("training m1")
        time.sleep(600)
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps({"run_name": d.name, "status": "ok", "results": {}}))

run_suite(load_suite(sys.argv[1]), runner=train, heartbeat_s=0.1)
"""


@pytest.mark.slow
def test_killed_runner_loses_no_finished_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=3)
    script = tmp_path / "runner.py"
    script.write_text(_KILLED_RUNNER)
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(flag)], cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 120
        while not flag.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert flag.exists(), "the runner never reached the second training"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    out = tmp_path / "out"
    assert json.loads((out / "m0_ma2ms" / RESULTS_FILE).read_text())["status"] == "ok"  # intact
    claim = json.loads((out / "m1_ma2ms" / claims.CLAIM_FILE).read_text())
    assert claim["pid"] == proc.pid and not (out / "m1_ma2ms" / RESULTS_FILE).exists()
    # the next runner keeps m0, takes the dead runner's claim of m1 over, runs m1 and m2
    train = CountingTrain()
    summary = run_suite(load_suite(path), runner=train)
    assert summary.skipped == ["m0_ma2ms"] and summary.ran == ["m1_ma2ms", "m2_ma2ms"]
    assert train.calls == ["m1_ma2ms", "m2_ma2ms"]


# ---------------------------------------------------------------------------------------- status


def test_status_reports_every_state(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=6)
    run_suite(load_suite(path), runner=CountingTrain(fail=("m1_ma2ms",)), only=["m0_*", "m1_*"])
    out = tmp_path / "out"
    _write_claim(out / "m2_ma2ms", owner="h:1:local", host="h")  # live elsewhere
    _write_claim(out / "m3_ma2ms", owner="h:1:local", host="h", heartbeat=time.time() - 4000)
    _write_claim(out / "m4_ma2ms", owner="h:1:slurm", host="h", launcher="slurm", job_id="99")
    assert benchmark_main(["--suite", str(path), "--status", "--claim-timeout", "600"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")] for line in lines[2:-1]}
    assert rows["m0_ma2ms"][3] == "done"
    assert rows["m1_ma2ms"][3] == "failed" and rows["m1_ma2ms"][4] == "RuntimeError: boom in m1_ma2ms"
    assert rows["m2_ma2ms"][3] == "running" and rows["m2_ma2ms"][4] == "h:1:local"
    assert rows["m3_ma2ms"][3] == "stale" and "no heartbeat for" in rows["m3_ma2ms"][4]
    assert rows["m4_ma2ms"][3] in ("running", "stale")  # fresh claim; squeue (if any) does not know job 99
    assert rows["m5_ma2ms"][3] == "not started" and rows["m5_ma2ms"][2] == "msmt17"
    assert lines[-1].startswith("# 1 done, 1 failed")


# -------------------------------------------------------------------------------- local launcher


def test_training_command_and_flags(tmp_path):
    assert training_command(["--config-file", "c.yaml"], 1, "py", REPO) == ["py", "tools/train.py", "--config-file",
                                                                          "c.yaml"]
    assert training_command(["a"], 1, "py", tmp_path) == ["py", "-m", "dcac_plugin.cli.train", "a"]
    assert training_command(["a"], 4, "py", REPO) == ["py", "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", "4", "tools/train.py", "a"]
    assert parse_gpus("0,2, 3") == [0, 2, 3] and parse_gpus(None) is None
    for bad in ("0,0", "a,b", "-1"):
        with pytest.raises(LauncherError, match="--gpus"):
            parse_gpus(bad)
    assert [parse_slurm_time(v) for v in (90, "90", "1:30", "01:30:00", "1-00", "2-01:30", "0-00:00:01")] == \
        [90, 90, 2, 90, 1440, 2970, 1]
    for bad in ("0", "soon", "1:2:3:4", True):
        with pytest.raises(ValueError):
            parse_slurm_time(bad)
    assert error_summary(["Traceback", "error: config file not found: x.yaml", "done"]) == \
        "config file not found: x.yaml"
    assert error_summary(["a", "last words", ""]) == "last words"


def test_local_launcher_gpu_slots():
    launcher = LocalLauncher(max_parallel=4, gpus_per_run=2, gpus=[0, 1, 2])
    assert launcher.capacity == 1 and launcher.on_gpu  # 3 GPUs hold one 2-GPU run at a time
    assert LocalLauncher(max_parallel=2, gpus_per_run=2, gpus=[0, 1, 2, 3]).capacity == 2
    cpu = LocalLauncher(max_parallel=2, gpus_per_run=1, gpus=[])
    assert cpu.capacity == 2 and not cpu.on_gpu and cpu.threads == max(1, (os.cpu_count() or 1) // 2)
    with pytest.raises(LauncherError, match=r"--gpus-per-run 4 but only 2 GPU\(s\) \[0, 1\] are available"):
        LocalLauncher(gpus_per_run=4, gpus=[0, 1])
    with pytest.raises(LauncherError, match="--max-parallel must be at least 1"):
        LocalLauncher(max_parallel=0)


_FAKE_TRAIN = """
import json, os, sys, time
opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
d = opts["data.save_dir"]
rank = int(os.environ.get("RANK", "0"))
info = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "WORLD_SIZE", "RANK")}
info["start"] = time.time()
time.sleep(1.0)
info["end"] = time.time()
os.makedirs(d, exist_ok=True)
if rank == 0:
    json.dump({"status": "ok", "run_name": os.path.basename(d), "env": info, "results": {}},
              open(os.path.join(d, "results.json"), "w"))
"""


@pytest.mark.slow
def test_local_launcher_pins_gpus_and_runs_torchrun(tmp_path, monkeypatch):
    """3 runs, 2 GPUs each, on 4 GPU ids: two at a time on disjoint GPUs, each a 2-process torchrun."""
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=3)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train.py").write_text(_FAKE_TRAIN)
    launcher = LocalLauncher(max_parallel=2, gpus_per_run=2, gpus=[0, 1, 2, 3])
    summary = run_suite(load_suite(path), launcher=launcher, poll_s=0.1)
    assert sorted(summary.ran) == ["m0_ma2ms", "m1_ma2ms", "m2_ma2ms"] and not summary.failed
    env = {n: json.loads((tmp_path / "out" / n / RESULTS_FILE).read_text())["env"] for n in summary.ran}
    assert {env["m0_ma2ms"]["CUDA_VISIBLE_DEVICES"], env["m1_ma2ms"]["CUDA_VISIBLE_DEVICES"]} == {"0,1", "2,3"}
    assert env["m2_ma2ms"]["CUDA_VISIBLE_DEVICES"] in ("0,1", "2,3")
    assert all(e["WORLD_SIZE"] == "2" and e["RANK"] == "0" for e in env.values())
    assert all(e["OMP_NUM_THREADS"] == str(launcher.threads) for e in env.values())
    # the first two overlapped in time; the third started after one of them ended
    assert env["m1_ma2ms"]["start"] < env["m0_ma2ms"]["end"] and env["m0_ma2ms"]["start"] < env["m1_ma2ms"]["end"]
    assert env["m2_ma2ms"]["start"] >= min(env["m0_ma2ms"]["end"], env["m1_ma2ms"]["end"])
    assert (tmp_path / "out" / "m0_ma2ms" / "launcher.log").read_text().startswith("# ")


def test_local_launcher_records_a_failing_subprocess(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=1)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train.py").write_text("import sys\nsys.stderr.write('error: no such dataset\\n')\n"
                                                 "sys.exit(2)\n")
    summary = run_suite(load_suite(path), launcher=LocalLauncher(gpus=[]), poll_s=0.05)
    assert summary.failed == {"m0_ma2ms": "exit status 2: no such dataset"}
    failed = json.loads((tmp_path / "out" / "m0_ma2ms" / FAILED_FILE).read_text())
    assert failed["launcher"] == "local" and "error: no such dataset" in failed["traceback"]
    assert not (tmp_path / "out" / "m0_ma2ms" / claims.CLAIM_FILE).exists()


@pytest.mark.slow
def test_local_launcher_trains_two_real_runs_in_parallel(synthetic_tiny_root, tmp_path, monkeypatch, capsys):
    """A tiny generated-data suite (CLIP baseline + OSNet, 1 epoch) with --launcher local --max-parallel 2."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny", "common_opts": ["data.root", str(synthetic_tiny_root), "train.max_epoch", 1,
                                        "data.workers", 0],
        "matrix": {"protocols": [{"name": "ma", "sources": ["market1501"], "targets": ["msmt17", "market1501"]}],
                   "models": [{"name": "clip_reid_tiny", "config": "configs/demo/clip_tiny.yaml"},
                              {"name": "osnet_x0_25", "config": "configs/demo/osnet.yaml"}]}}))
    out = tmp_path / "out"
    code = benchmark_main(["--suite", str(suite), "--output", str(out), "--launcher", "local", "--max-parallel", "2",
                           "--gpus", ""])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "2 planned, 2 ran, 0 skipped (results exist), 0 failed" in text
    for run in ("clip_reid_tiny_ma", "osnet_x0_25_ma"):
        rec = json.loads((out / run / RESULTS_FILE).read_text())
        assert rec["status"] == "ok" and set(rec["results"]) == {"msmt17", "market1501"}
        assert rec["command"].startswith("python tools/train.py --config-file configs/demo/")
    assert "| OSNet-x0.25 (ours)" in text and "MA->MS" in text and "MA->MA" in text


# ------------------------------------------------------------------------------- slurm: bad setups


def _cli_error(monkeypatch, capsys, argv) -> str:
    from dcac_plugin.cli.benchmark import cli

    monkeypatch.setattr("sys.argv", ["benchmark.py", *argv])
    with pytest.raises(SystemExit) as exc:
        cli()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    return err


def test_slurm_launcher_without_submitit(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(LauncherError, match=r"needs the submitit package.*pip install submitit"):
        check_slurm()
    path = _suite(tmp_path, n_models=1)
    err = _cli_error(monkeypatch, capsys, ["--suite", str(path), "--launcher", "slurm"])
    assert err.startswith("error: --launcher slurm needs the submitit package")


def test_slurm_launcher_without_sbatch(tmp_path, monkeypatch, capsys):
    require_import("submitit")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(LauncherError, match="no sbatch on PATH.*tools/slurm_local.sh start"):
        check_slurm()
    err = _cli_error(monkeypatch, capsys, ["--suite", str(_suite(tmp_path, n_models=1)), "--launcher", "slurm"])
    assert "no sbatch on PATH" in err


def test_slurm_launcher_with_unreachable_controller(tmp_path, monkeypatch, capsys):
    require_import("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'sinfo: error: Unable to contact slurm controller' >&2\n"
                                   "exit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    err = _cli_error(monkeypatch, capsys, ["--suite", str(_suite(tmp_path, n_models=1)), "--launcher", "slurm"])
    assert err.startswith("error: --launcher slurm: Slurm is unreachable (sinfo failed: sinfo: error: Unable to "
                          "contact slurm controller)")


def test_unknown_launcher_flag_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--suite", str(_suite(tmp_path)), "--launcher", "k8s"])
    from dcac_plugin.cli.benchmark import cli

    with pytest.raises(SystemExit) as exc:
        cli()
    assert exc.value.code == 2 and "invalid choice: 'k8s'" in capsys.readouterr().err


# ------------------------------------------------------------------ claims across real processes

# One suite runner as its own process: trainings are sleeps that log their start and end, so that the
# parent sees which process trained what. argv: suite, host ("-": the real one; else this process
# claims as that host, as a runner on another machine sharing the output folder would), log file,
# training seconds, claim timeout (stale_after) and heartbeat seconds.
_RUNNER_PROCESS = """
import json, os, signal, sys, time
from pathlib import Path
# Ctrl-C raises KeyboardInterrupt even where this process was started with SIGINT ignored (as by a
# shell that runs the test suite in the background)
signal.signal(signal.SIGINT, signal.default_int_handler)
import dcac_plugin.utils.io  # noqa: F401  (imports torch now, not at the first heartbeat)
from dcac_plugin.benchmark import claims

suite, host, log, train_s, stale_after, beat_s = sys.argv[1:7]
if host != "-":
    claims.hostname = lambda: host
from dcac_plugin.benchmark.suite import load_suite, run_suite

def note(what, name):
    with open(log, "a") as f:
        f.write(f"{claims.owner_id('inline')} {what} {name} {time.time():.3f}\\n")

def train(argv):
    d = Path(dict(zip(argv[2::2], argv[3::2]))["data.save_dir"])
    note("start", d.name)
    Path(log + ".started").write_text(d.name)
    time.sleep(float(train_s))
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps({"run_name": d.name, "status": "ok", "results": {}}))
    note("end", d.name)

s = run_suite(load_suite(suite), runner=train, stale_after=float(stale_after), heartbeat_s=float(beat_s),
              poll_s=0.05)
print(json.dumps({"ran": s.ran, "busy": s.busy, "skipped": s.skipped}))
"""


def _runner_process(tmp_path: Path, suite: Path, host: str, log: Path, train_s: float, stale_after: float,
                    beat_s: float = 0.1) -> subprocess.Popen:
    script = tmp_path / "runner_process.py"
    script.write_text(_RUNNER_PROCESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script), str(suite), host, str(log), str(train_s), str(stale_after),
                             str(beat_s)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("hosts", [("-", "-"), ("nodeA", "nodeB")], ids=["one_host", "two_hosts"])
def test_two_runner_processes_share_a_folder_and_heartbeats_outlast_the_claim_timeout(tmp_path, monkeypatch, hosts):
    """Two runner processes on one output folder (on one host, or claiming as two hosts, where only the
    heartbeat tells a live claim): every training runs exactly once although each lasts 2.5 s, longer
    than the 1.5 s claim timeout, because the owner's heartbeat (every 0.1 s) keeps its claim fresh."""
    monkeypatch.chdir(tmp_path)
    suite = _suite(tmp_path, n_models=4)
    log = tmp_path / "trainings.log"
    procs = [_runner_process(tmp_path, suite, host, log, train_s=2.5, stale_after=1.5) for host in hosts]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = sorted(name for _, what, name, _ in lines if what == "start")
    names = [f"m{i}_ma2ms" for i in range(4)]
    assert starts == names, lines  # every training exactly once: no claim was taken over while alive
    owners = {owner for owner, *_ in lines}
    assert len(owners) == 2  # both processes trained
    if hosts[0] != "-":
        assert {o.split(":")[0] for o in owners} == {"nodeA", "nodeB"}
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(summaries[0]["ran"] + summaries[1]["ran"]) == names
    for s in summaries:
        assert set(names) - set(s["ran"]) == set(s["busy"]) | set(s["skipped"])
    assert not list((tmp_path / "out").glob("*/claim.json"))


def test_no_heartbeat_after_release(tmp_path, monkeypatch):
    """The runner stops beating a claim before releasing it (a late heartbeat could write the claim
    back after its release): every heartbeat of a run's claim happens before that claim's release,
    and each claim was beaten while its training ran."""
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path, n_models=3)
    events: list[tuple[str, str, float]] = []
    real_heartbeat, real_release = claims.heartbeat, claims.release

    def heartbeat(claim):
        events.append(("beat", claim.token, time.monotonic()))
        return real_heartbeat(claim)

    def release(claim):
        real_release(claim)
        events.append(("release", claim.token, time.monotonic()))

    monkeypatch.setattr(claims, "heartbeat", heartbeat)
    monkeypatch.setattr(claims, "release", release)
    run_suite(load_suite(path), runner=CountingTrain(delay=0.3), heartbeat_s=0.01)
    time.sleep(0.1)  # a heartbeat thread left running would beat again here
    released = {tok: t for what, tok, t in events if what == "release"}
    assert len(released) == 3
    beats = [(tok, t) for what, tok, t in events if what == "beat"]
    assert {tok for tok, _ in beats} == set(released)  # each claim was beaten during its training
    late = [(tok, t - released[tok]) for tok, t in beats if t > released[tok]]
    assert not late, late
    assert not list((tmp_path / "out").glob("*/claim.json"))


@pytest.mark.slow
def test_ctrl_c_frees_the_claim_at_once(tmp_path, monkeypatch):
    """SIGINT (Ctrl-C) to a runner in the middle of a training: it stops, its claim file is gone at
    once (not left for the claim timeout), and the next runner trains the run."""
    monkeypatch.chdir(tmp_path)
    suite = _suite(tmp_path, n_models=1)
    log = tmp_path / "trainings.log"
    proc = _runner_process(tmp_path, suite, "nodeA", log, train_s=600, stale_after=600)
    started = Path(str(log) + ".started")
    deadline = time.time() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "the runner never started its training"
        time.sleep(0.05)
    claim_file = tmp_path / "out" / "m0_ma2ms" / claims.CLAIM_FILE
    assert json.loads(claim_file.read_text())["host"] == "nodeA"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert not claim_file.exists()  # freed by the interrupted runner itself
    # the next runner (another host: a left-over claim would hold it for the 600 s claim timeout)
    monkeypatch.setattr(claims, "hostname", lambda: "nodeB")
    train = CountingTrain()
    assert run_suite(load_suite(suite), runner=train, stale_after=600).ran == ["m0_ma2ms"]
