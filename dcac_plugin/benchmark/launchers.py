"""Where the trainings of a suite run: in this process, as local subprocesses, or as Slurm jobs.

* :class:`InlineLauncher` (``--launcher inline``, the default): one run after the other, in this
  process, through the training entry point :func:`dcac_plugin.cli.train.main`.
* :class:`LocalLauncher` (``--launcher local --max-parallel N --gpus-per-run G``): up to ``N``
  trainings at once on this machine, each a subprocess of this venv's python running
  ``tools/train.py`` in the working directory, pinned to its own ``G`` GPUs through
  ``CUDA_VISIBLE_DEVICES`` (``torchrun --standalone --nproc_per_node G`` inside the run when ``G > 1``).
  On a machine without CUDA no GPU is assigned and ``OMP_NUM_THREADS`` splits the cores.
* :class:`SlurmLauncher` (``--launcher slurm``): each training is a Slurm job submitted through
  submitit, running the same command in the same working directory with ``OMP_NUM_THREADS=1``;
  its logs go to ``<output_root>/<run>/slurm/``. Waiting for the jobs is optional (``--no-wait``).

A launcher starts a run with :meth:`Launcher.start` and reports how it ended with
:meth:`Launcher.poll`; :func:`dcac_plugin.benchmark.suite.run_suite` holds the run's claim meanwhile.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcac_plugin.benchmark import claims
from dcac_plugin.benchmark.entries import RunEntry
from dcac_plugin.benchmark.runfiles import write_failure
from dcac_plugin.runfolder import RESULTS_FILE, TRAIN_LOG, clear_failure, read_failure, results_state

logger = logging.getLogger(__name__)

LAUNCHERS = ("inline", "local", "slurm")
#: the log a local run's subprocess writes (stdout and stderr), inside the run folder
LOCAL_LOG = "launcher.log"
SLURM_DIR = "slurm"
#: squeue states of a job that is still queued or running
ALIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}


class LauncherError(ValueError):
    """A launcher cannot work here (missing package, no Slurm, too few GPUs); the message names the fix."""


@dataclass
class Outcome:
    """How a started run ended.

    Attributes:
        ok: ``results.json`` with status ok was written.
        error: one-line reason when not ok.
        traceback: details for ``failed.json`` (traceback or log tail).
        recorded: ``failed.json`` was already written (by the Slurm job itself).
        superseded: another runner took the run over; nothing is recorded for it here.
    """

    ok: bool
    error: str = ""
    traceback: str = ""
    recorded: bool = False
    superseded: bool = False


class Launcher:
    """Starts trainings; ``capacity`` of them may run at once."""

    name = "base"
    capacity = 1
    #: False for a detached Slurm submission: started runs are left to their jobs
    waits = True
    #: started runs go on when this runner stops (Slurm jobs): their claims are left to them
    jobs_outlive_runner = False

    def start(self, entry: RunEntry, claim: claims.Claim) -> Any:
        """Start ``entry``; returns a handle for :meth:`poll`."""
        raise NotImplementedError

    def poll(self, handle: Any) -> Outcome | None:
        """The run's outcome once it ended, else ``None``."""
        raise NotImplementedError

    def describe(self, handle: Any) -> str:
        """Where the run runs (for the log): a pid, GPUs, a job id."""
        return ""

    def close(self) -> None:
        """Stop what is still running (called when the suite runner stops early)."""


def check_results(entry: RunEntry) -> Outcome:
    """The outcome a finished training left in its folder."""
    state, why = results_state(entry.output_dir)
    if state == "done":
        return Outcome(True)
    if state == "incomplete":
        return Outcome(False, f"the run finished but {why} (a target has no finite metrics; see "
                              f"{entry.output_dir / TRAIN_LOG})")
    return Outcome(False, f"the runner returned but wrote no {RESULTS_FILE} in {entry.output_dir}")


# ----------------------------------------------------------------------------------------- inline


class InlineLauncher(Launcher):
    """Runs each training in this process through ``runner(argv)`` (the training entry point)."""

    name = "inline"

    def __init__(self, runner: Callable[[list[str]], Any]):
        self.runner = runner

    def start(self, entry: RunEntry, claim: claims.Claim) -> Outcome:
        try:
            self.runner(entry.argv())
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failed run must not stop the suite
            return Outcome(False, f"{type(exc).__name__}: {exc}",
                           "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return check_results(entry)

    def poll(self, handle: Outcome) -> Outcome:
        return handle


# ------------------------------------------------------------------------------------------ local


def training_command(argv: Sequence[str], nproc: int = 1, python: str | None = None,
                     cwd: str | Path = ".") -> list[str]:
    """The command that trains one run: ``python tools/train.py argv`` (``torchrun`` when ``nproc > 1``).

    ``tools/train.py`` is used when the working directory has it (so ``results.json`` records the
    command a user would type); otherwise the installed module ``dcac_plugin.cli.train``.
    """
    python = python or sys.executable
    script = ["tools/train.py"] if (Path(cwd) / "tools" / "train.py").is_file() else ["-m", "dcac_plugin.cli.train"]
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                *script, *argv]
    return [python, *script, *argv]


def cuda_device_ids() -> list[int]:
    """``range(torch.cuda.device_count())`` (empty without CUDA)."""
    import torch  # local: dcac_plugin.benchmark is torch-free (the suite runner and dry runs never load it)

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def parse_gpus(spec: str | None) -> list[int] | None:
    """``"0,1,3"`` -> ``[0, 1, 3]``; ``None`` -> ``None`` (ask torch).

    Raises:
        LauncherError: not a comma list of distinct non-negative integers.
    """
    if spec is None:
        return None
    try:
        ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        ids = [-1]
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise LauncherError(f"--gpus '{spec}': give distinct GPU indices as a comma list, e.g. --gpus 0,1,2,3")
    return ids


def error_summary(lines: Sequence[str]) -> str:
    """The last ``error:`` line of a training's output, else its last non-empty line."""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return ""


def _tail(path: Path, n: int = 40) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in collections.deque(f, maxlen=n)]
    except OSError:
        return []


@dataclass
class _LocalRun:
    entry: RunEntry
    proc: subprocess.Popen
    gpus: list[int]
    log: Path
    log_file: Any


class LocalLauncher(Launcher):
    """Up to ``max_parallel`` trainings at once as subprocesses, each on its own GPUs.

    Args:
        max_parallel: trainings at once (capped by the GPUs available: ``len(gpus) // gpus_per_run``).
        gpus_per_run: GPUs per training; ``> 1`` runs ``torchrun --nproc_per_node gpus_per_run``.
        gpus: GPU indices to use (default: every CUDA device torch sees). Empty: CPU-only.
        python: interpreter of the trainings (default: this one, i.e. the venv's).
        cwd: working directory of the trainings (default: the current one).

    Raises:
        LauncherError: fewer GPUs than one run needs.
    """

    name = "local"

    def __init__(self, max_parallel: int = 1, gpus_per_run: int = 1, gpus: Sequence[int] | None = None,
                 python: str | None = None, cwd: str | Path | None = None):
        if max_parallel < 1:
            raise LauncherError(f"--max-parallel must be at least 1, got {max_parallel}")
        if gpus_per_run < 0:
            raise LauncherError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
        self.python = python or sys.executable
        self.cwd = Path(cwd or os.getcwd())
        self.gpus = list(cuda_device_ids() if gpus is None else gpus)
        self.gpus_per_run = gpus_per_run
        self.free_gpus = list(self.gpus)
        if self.gpus and gpus_per_run > 0:
            if gpus_per_run > len(self.gpus):
                raise LauncherError(f"--gpus-per-run {gpus_per_run} but only {len(self.gpus)} GPU(s) "
                                    f"{self.gpus} are available: lower --gpus-per-run or pass --gpus")
            fit = len(self.gpus) // gpus_per_run
            if fit < max_parallel:
                logger.warning("--max-parallel %d x --gpus-per-run %d needs %d GPUs; %d available %s: "
                               "running %d at once", max_parallel, gpus_per_run, max_parallel * gpus_per_run,
                               len(self.gpus), self.gpus, fit)
            self.capacity = min(max_parallel, fit)
            self.threads = max(1, (os.cpu_count() or 1) // (self.capacity * gpus_per_run))
        else:
            self.capacity = max_parallel
            self.threads = max(1, (os.cpu_count() or 1) // (max_parallel * max(1, gpus_per_run)))
        self._running: list[_LocalRun] = []

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpus) and self.gpus_per_run > 0

    def start(self, entry: RunEntry, claim: claims.Claim) -> _LocalRun:
        gpus: list[int] = []
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.threads)
        if self.on_gpu:
            gpus, self.free_gpus = self.free_gpus[: self.gpus_per_run], self.free_gpus[self.gpus_per_run:]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        nproc = max(1, self.gpus_per_run)
        cmd = training_command(entry.argv(), nproc, self.python, self.cwd)
        entry.output_dir.mkdir(parents=True, exist_ok=True)
        log = entry.output_dir / LOCAL_LOG
        log_file = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed in poll/close
        log_file.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log_file.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        except OSError:
            log_file.close()
            self.free_gpus += gpus
            raise
        claims.update(claim, worker_pid=proc.pid)
        run = _LocalRun(entry, proc, gpus, log, log_file)
        self._running.append(run)
        return run

    def describe(self, handle: _LocalRun) -> str:
        where = f"GPU {','.join(map(str, handle.gpus))}" if handle.gpus else f"CPU, {self.threads} thread(s)"
        return f"pid {handle.proc.pid}, {where}, log {handle.log}"

    def _finish(self, run: _LocalRun) -> None:
        run.log_file.close()
        self.free_gpus = sorted(self.free_gpus + run.gpus)
        if run in self._running:
            self._running.remove(run)

    def poll(self, handle: _LocalRun) -> Outcome | None:
        rc = handle.proc.poll()
        if rc is None:
            return None
        self._finish(handle)
        if rc != 0:
            lines = _tail(handle.log)
            return Outcome(False, f"exit status {rc}: {error_summary(lines)}", "\n".join(lines))
        return check_results(handle.entry)

    def close(self) -> None:
        for run in list(self._running):
            if run.proc.poll() is None:
                run.proc.terminate()
                try:
                    run.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()
            self._finish(run)


# ------------------------------------------------------------------------------------------ slurm


SLURM_KEYS = ("partition", "time", "cpus_per_task", "mem", "account", "qos", "constraint", "sbatch", "setup")


def parse_slurm_time(value: str | int | None) -> int | None:
    """A Slurm time limit (``minutes``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes.

    Raises:
        ValueError: not one of those forms.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"slurm time {value!r}: give minutes or HH:MM:SS")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"slurm time {value}: must be positive minutes")
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"slurm time '{text}': give minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = (nums + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(nums) == 1:
        seconds = nums[0] * 60
    elif len(nums) == 2:  # MM:SS
        seconds = nums[0] * 60 + nums[1]
    else:
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if seconds <= 0:
        raise ValueError(f"slurm time '{text}': must be positive")
    return math.ceil(seconds / 60)


@dataclass
class SlurmSettings:
    """sbatch resources of every job of a suite (suite ``slurm:`` block, then ``--slurm-*`` flags).

    ``sbatch`` holds further sbatch options (``{"exclusive": True, "gres": "gpu:a100:1"}``); ``setup``
    shell lines run before the training (``module load ...``).
    """

    partition: str | None = None
    time: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    def merged(self, **overrides: Any) -> SlurmSettings:
        """A copy with the non-``None`` overrides applied (``sbatch`` entries added)."""
        out = SlurmSettings(**{**self.__dict__, "sbatch": dict(self.sbatch), "setup": list(self.setup)})
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "sbatch":
                out.sbatch.update(value)
            elif key == "time":
                out.time = parse_slurm_time(value)
            else:
                setattr(out, key, value)
        return out


def _run_quiet(cmd: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def squeue_state(job_id: str) -> str | None:
    """``squeue``'s state of a job (``PENDING``, ``RUNNING``, ...); ``""`` when it is no longer queued or
    running; ``None`` when squeue cannot be asked (not installed, controller unreachable)."""
    if not shutil.which("squeue"):
        return None
    res = _run_quiet(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
    if res is None:
        return None
    if res.returncode != 0:
        return "" if "invalid job id" in (res.stderr or "").lower() else None
    state = res.stdout.strip().splitlines()[0].strip() if res.stdout.strip() else ""
    return state if state in ALIVE_STATES else ""


def sacct_state(job_id: str) -> str | None:
    """``sacct``'s final state of a job (``COMPLETED``, ``FAILED``, ...); ``None`` without accounting."""
    if not shutil.which("sacct"):
        return None
    res = _run_quiet(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"])
    if res is None or res.returncode != 0 or not res.stdout.strip():
        return None
    return res.stdout.strip().splitlines()[0].split()[0]


def check_slurm() -> None:
    """Fail clearly when submitit is missing or Slurm cannot be reached.

    Raises:
        LauncherError: naming the problem and the fix.
    """
    try:
        import submitit  # noqa: F401  (optional dependency, extra "slurm": only the Slurm launcher needs it)
    except ImportError:
        raise LauncherError("--launcher slurm needs the submitit package, which is not installed: "
                            "pip install submitit (or pip install -e '.[slurm]')") from None
    if not shutil.which("sbatch"):
        raise LauncherError("--launcher slurm: no sbatch on PATH, so Slurm cannot be reached. Run on a machine "
                            "that submits to your cluster (a login node), or start the single-node test "
                            "cluster: tools/slurm_local.sh start, then export SLURM_CONF as it prints")
    res = _run_quiet(["sinfo", "-h", "-o", "%P %a %t"]) if shutil.which("sinfo") else None
    if res is None or res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()[-1] if res and (res.stderr or res.stdout).strip() \
            else "sinfo missing or timed out"
        raise LauncherError(f"--launcher slurm: Slurm is unreachable (sinfo failed: {why}). Check that slurmctld "
                            f"runs and that SLURM_CONF points at its slurm.conf (for the local test cluster: "
                            f"tools/slurm_local.sh status)")


@dataclass
class JobSpec:
    """What a Slurm job needs to run one training (pickled by submitit)."""

    run_name: str
    argv: list[str]
    cwd: str
    run_dir: str
    claim_token: str
    nproc: int = 1
    heartbeat_s: float = claims.DEFAULT_HEARTBEAT_S


def run_training_job(spec: JobSpec) -> dict[str, Any]:
    """Body of a Slurm job: adopt the run's claim, train, record the outcome, release the claim.

    Runs ``tools/train.py`` (``torchrun`` for several GPUs) with this interpreter in ``spec.cwd``,
    ``OMP_NUM_THREADS=1``; the training's output goes to the job's log. A failure writes
    ``failed.json`` and raises, so submitit reports the job as failed.

    Returns:
        ``{"run_name", "status": "ok"}``, or status ``"taken_over"`` (nothing run) when another runner
        took the run's claim over before the job started.

    Raises:
        RuntimeError: the training failed.
    """
    os.chdir(spec.cwd)
    os.environ["OMP_NUM_THREADS"] = "1"
    run_dir = Path(spec.run_dir)
    job_id = os.environ.get("SLURM_JOB_ID")
    claim = claims.adopt(run_dir, spec.claim_token, "slurm", job_id=job_id)
    if claim is None:
        sys.stderr.write(f"{spec.run_name}: the run's claim was taken over by another runner before job "
                         f"{job_id} started; not training it twice\n")
        return {"run_name": spec.run_name, "status": "taken_over"}
    beat = claims.Heartbeat(spec.heartbeat_s).start()
    beat.add(claim)
    t0 = time.perf_counter()
    try:
        cmd = training_command(spec.argv, spec.nproc, sys.executable, spec.cwd)
        sys.stderr.write(f"# job {job_id} in {spec.cwd}: OMP_NUM_THREADS=1 {' '.join(cmd)}\n")
        sys.stderr.flush()
        tail: collections.deque[str] = collections.deque(maxlen=40)
        proc = subprocess.Popen(cmd, cwd=spec.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=dict(os.environ))
        claims.update(claim, worker_pid=proc.pid)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
        rc = proc.wait()
        state, why = results_state(run_dir)
        if rc != 0 or state != "done":
            error = f"exit status {rc}: {error_summary(list(tail))}" if rc != 0 else \
                (f"the run finished but {why}" if state == "incomplete" else f"no {RESULTS_FILE} written")
            write_failure(run_dir, spec.run_name, spec.argv, error, "\n".join(tail), time.perf_counter() - t0,
                          launcher="slurm", job_id=job_id)
            raise RuntimeError(f"{spec.run_name}: {error}")
        clear_failure(run_dir)
        return {"run_name": spec.run_name, "status": "ok"}
    finally:
        beat.stop()
        claims.release(claim)


@dataclass
class _SlurmRun:
    entry: RunEntry
    job: Any
    submitted: float


class SlurmLauncher(Launcher):
    """Each training as a Slurm job through submitit (one executor folder per run: ``<run>/slurm``).

    Args:
        settings: sbatch resources.
        gpus_per_run: ``--gpus-per-node`` of each job (0: CPU jobs); ``> 1`` runs torchrun in the job.
        wait: wait for the jobs (default) or return once they are submitted.
        max_parallel: jobs submitted at once by this runner (default: all).
        python: interpreter of the jobs (default: this one, i.e. the venv's).
        cwd: working directory of the jobs (default: the current one).
        heartbeat_s: seconds between two heartbeats of a job's claim (default:
            :data:`dcac_plugin.benchmark.claims.DEFAULT_HEARTBEAT_S` when the launcher is made).

    Raises:
        LauncherError: submitit missing or Slurm unreachable.
    """

    name = "slurm"
    jobs_outlive_runner = True

    def __init__(self, settings: SlurmSettings | None = None, gpus_per_run: int = 1, wait: bool = True,
                 max_parallel: int | None = None, python: str | None = None, cwd: str | Path | None = None,
                 heartbeat_s: float | None = None):
        check_slurm()
        if gpus_per_run < 0:
            raise LauncherError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
        self.settings = settings or SlurmSettings()
        self.gpus_per_run = gpus_per_run
        self.waits = wait
        self.capacity = max_parallel or 1_000_000
        self.python = python or sys.executable
        self.cwd = str(Path(cwd or os.getcwd()).resolve())
        self._gone_since: dict[str, float] = {}
        self.heartbeat_s = claims.DEFAULT_HEARTBEAT_S if heartbeat_s is None else heartbeat_s

    def _executor(self, entry: RunEntry) -> Any:
        import submitit  # optional dependency (extra "slurm"): imported only by the Slurm launcher

        folder = entry.output_dir / SLURM_DIR
        folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=folder, python=self.python)
        s = self.settings
        params: dict[str, Any] = {
            "job_name": entry.run_name, "nodes": 1, "ntasks_per_node": 1,
            "setup": ["export OMP_NUM_THREADS=1", *s.setup],
            "additional_parameters": {"chdir": self.cwd, **s.sbatch},
        }
        if self.gpus_per_run > 0:
            params["gpus_per_node"] = self.gpus_per_run
        for key in ("partition", "time", "cpus_per_task", "mem", "account", "qos", "constraint"):
            value = getattr(s, key)
            if value is not None:
                params[key] = value
        executor.update_parameters(**params)
        return executor

    def start(self, entry: RunEntry, claim: claims.Claim) -> _SlurmRun:
        spec = JobSpec(entry.run_name, entry.argv(), self.cwd, str(entry.output_dir.resolve()), claim.token,
                       max(1, self.gpus_per_run), self.heartbeat_s)
        job = self._executor(entry).submit(run_training_job, spec)
        claims.update(claim, job_id=str(job.job_id))
        return _SlurmRun(entry, job, time.time())

    def describe(self, handle: _SlurmRun) -> str:
        return f"Slurm job {handle.job.job_id}, logs {handle.entry.output_dir / SLURM_DIR}"

    def poll(self, handle: _SlurmRun) -> Outcome | None:
        job = handle.job
        if not job.paths.result_pickle.exists():
            state = squeue_state(job.job_id)
            if state is None or state:
                self._gone_since.pop(job.job_id, None)
                return None
            # squeue no longer lists the job: give its result file a moment to appear
            first = self._gone_since.setdefault(job.job_id, time.time())
            if time.time() - first < 15.0:
                return None
            final = sacct_state(job.job_id) or "ended"
            log = job.paths.stderr
            return Outcome(False, f"Slurm job {job.job_id} {final.lower()} without a result (killed, out of time "
                                  f"or node failure); see {log}", "\n".join(_tail(Path(log))))
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error with its log
            failed = read_failure(handle.entry.output_dir)
            if failed and failed.get("job_id") == str(job.job_id):
                return Outcome(False, str(failed.get("error")), str(exc), recorded=True)
            text = [t for t in str(exc).strip().splitlines() if t.strip()]
            return Outcome(False, f"Slurm job {job.job_id} failed: {text[-1] if text else type(exc).__name__}; "
                                  f"see {job.paths.stderr}", str(exc))
        if isinstance(result, dict) and result.get("status") == "taken_over":
            return Outcome(False, "taken over by another runner before the job started", superseded=True)
        return check_results(handle.entry)
