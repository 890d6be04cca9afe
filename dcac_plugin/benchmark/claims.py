"""Run claims: two suite runners on one output root never run the same training twice.

A runner that is about to run ``<output_root>/<run>`` first creates ``<run>/claim.json``
atomically (a complete temporary file hard-linked into place, which fails when the claim exists;
``O_CREAT | O_EXCL`` where the filesystem has no hard links). The claim holds::

    {"owner": "host:pid:launcher", "host", "pid", "launcher", "token", "job_id", "worker_pid",
     "created", "heartbeat", "heartbeat_utc"}

Its owner rewrites ``heartbeat`` every few seconds (:class:`Heartbeat`); a Slurm job adopts the
claim its submitter made and keeps it alive from the compute node. A claim is *stale* when

* its heartbeat is older than ``stale_after`` seconds, or
* it was made on this host by a process that is gone (``pid`` and ``worker_pid`` both dead; not
  used for Slurm claims, whose owner may be a detached submitter), or
* it names a Slurm job that ``squeue`` no longer lists (when ``squeue`` answers).

A stale claim is taken over under a short lock file (``claim.json.lock``, itself created with
``O_EXCL``), after checking again that it is still the same stale claim. Claims are released
(deleted) by their owner after ``results.json`` or ``failed.json`` has been written, so a runner
that gets a claim re-checks the results first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
#: seconds without a heartbeat after which a claim counts as abandoned
DEFAULT_STALE_AFTER_S = 600.0
#: seconds between two heartbeats of a live owner
DEFAULT_HEARTBEAT_S = 30.0
_LOCK_STALE_S = 60.0

#: ``job_id -> squeue state`` ("PENDING", "RUNNING", ...), ``""`` when squeue no longer lists the job,
#: ``None`` when squeue cannot be asked.
JobQuery = Callable[[str], "str | None"]


def hostname() -> str:
    """This machine's name as claims record it."""
    return socket.gethostname()


def owner_id(launcher: str, pid: int | None = None) -> str:
    """``host:pid:launcher`` of this process."""
    return f"{hostname()}:{pid or os.getpid()}:{launcher}"


@dataclass
class Claim:
    """A claim this process holds (or adopted): enough to heartbeat and release it."""

    path: Path
    token: str
    owner: str

    @property
    def run_dir(self) -> Path:
        return self.path.parent


def _now_fields() -> dict[str, Any]:
    now = time.time()
    return {"heartbeat": now, "heartbeat_utc": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")}


def read_claim(path: str | Path) -> dict[str, Any] | None:
    """The claim's content; ``None`` when there is no claim. A claim being written reads as ``{}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(path: str | Path, info: dict[str, Any] | None, stale_after: float = DEFAULT_STALE_AFTER_S,
                 job_query: JobQuery | None = None) -> str | None:
    """Why the claim ``info`` (read from ``path``) is abandoned, or ``None`` when its owner is alive."""
    if info is None:
        return None
    if not info:  # half-written (O_EXCL fallback) or corrupt: judge by the file's age
        try:
            age = time.time() - Path(path).stat().st_mtime
        except FileNotFoundError:
            return None
        return f"unreadable claim, {age:.0f} s old" if age > stale_after else None
    job_id = info.get("job_id")
    if info.get("launcher") == "slurm" and job_id and job_query is not None:
        state = job_query(str(job_id))
        if state:  # squeue lists it: queued or running
            return None
        if state == "":
            return f"Slurm job {job_id} is no longer queued or running"
    age = time.time() - float(info.get("heartbeat") or 0.0)
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (owner {info.get('owner')})"
    if info.get("launcher") != "slurm" and info.get("host") == hostname():
        pids = [p for p in (info.get("pid"), info.get("worker_pid")) if p]
        if pids and not any(_pid_alive(p) for p in pids):
            return f"owner {info.get('owner')} is not running"
    return None


def _create_exclusive(path: Path, data: dict[str, Any]) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it."""
    text = json.dumps(data, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create, then write
            try:
                fd2 = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "w", encoding="utf-8") as f:
                f.write(text)
            return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _takeover_lock(path: Path):
    lock = path.with_name(path.name + ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > _LOCK_STALE_S:
                    lock.unlink()
                    continue
            except FileNotFoundError:
                continue
            yield False
            return
        os.close(fd)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        return
    yield False


def acquire(run_dir: str | Path, launcher: str, stale_after: float = DEFAULT_STALE_AFTER_S,
            job_query: JobQuery | None = None) -> Claim | dict[str, Any]:
    """Claim ``run_dir`` for this process.

    Returns:
        The :class:`Claim` on success; otherwise the live claim that holds the run (a dict with at
        least ``owner``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    token = uuid.uuid4().hex
    owner = owner_id(launcher)
    data = {"owner": owner, "host": hostname(), "pid": os.getpid(), "launcher": launcher, "token": token,
            "job_id": None, "worker_pid": None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_now_fields()}
    for _ in range(3):
        if _create_exclusive(path, data):
            return Claim(path, token, owner)
        held = read_claim(path)
        if held is None:
            continue  # released in between: try again
        reason = stale_reason(path, held, stale_after, job_query)
        if reason is None:
            return held or {"owner": "unknown (claim being written)"}
        with _takeover_lock(path) as locked:
            if not locked:
                return held
            again = read_claim(path)
            if again is not None and again.get("token") == held.get("token") and \
                    stale_reason(path, again, stale_after, job_query) is not None:
                logger.warning("%s: taking over a stale claim (%s)", run_dir.name, reason)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    held = read_claim(path)
    return held if held else {"owner": "unknown (claim contended)"}


def update(claim: Claim, **fields: Any) -> bool:
    """Rewrite fields of a claim this process holds (atomically); False when it is no longer ours."""
    info = read_claim(claim.path)
    if not info or info.get("token") != claim.token or info.get("owner") != claim.owner:
        return False
    info.update(fields)
    atomic_write_json(info, claim.path)
    return True


def heartbeat(claim: Claim) -> bool:
    """Refresh the claim's heartbeat; False when it is no longer ours."""
    return update(claim, **_now_fields())


def adopt(run_dir: str | Path, token: str, launcher: str, **fields: Any) -> Claim | None:
    """Make this process the owner of the claim ``token`` (a Slurm job adopting its submitter's claim).

    Returns:
        The claim, or ``None`` when ``run_dir`` holds no claim with that token (taken over meanwhile).
    """
    path = Path(run_dir) / CLAIM_FILE
    info = read_claim(path)
    if not info or info.get("token") != token:
        return None
    owner = owner_id(launcher)
    info.update({"owner": owner, "host": hostname(), "pid": os.getpid(), "launcher": launcher, **fields,
                 **_now_fields()})
    atomic_write_json(info, path)
    return Claim(path, token, owner)


def release(claim: Claim) -> None:
    """Delete the claim if it is still this process's (same token and owner; an adopting job's stays)."""
    info = read_claim(claim.path)
    if info is not None and info.get("token") == claim.token and info.get("owner") == claim.owner:
        with contextlib.suppress(FileNotFoundError):
            claim.path.unlink()


class Heartbeat:
    """A daemon thread that refreshes the heartbeat of every claim added to it."""

    def __init__(self, interval: float = DEFAULT_HEARTBEAT_S):
        self.interval = interval
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._claims[claim.token] = claim

    def discard(self, claim: Claim) -> None:
        with self._lock:
            self._claims.pop(claim.token, None)

    def _loop(self) -> None:
        # The lock is held while a claim is rewritten, so once discard() returns no rewrite of that
        # claim is in flight and releasing it cannot be undone by a late heartbeat.
        while not self._stop.wait(self.interval):
            with self._lock:
                for token, c in list(self._claims.items()):
                    try:
                        if not heartbeat(c):
                            del self._claims[token]  # adopted by a job, released or taken over
                    except OSError as e:  # a full disk must not kill the runner
                        logger.warning("heartbeat of %s failed: %s", c.path, e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """:func:`dcac_plugin.utils.io.atomic_write_json`, imported on use (it imports torch)."""
    # local: dcac_plugin.benchmark stays torch-free (utils.io imports torch)
    from dcac_plugin.utils.io import atomic_write_json as write

    return write(obj, path)
