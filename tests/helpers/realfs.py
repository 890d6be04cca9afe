"""Real failing file systems for tests: a small tmpfs (ENOSPC), a read-only mount (EROFS), a file-size
limit in a child process (EFBIG), a folder the child may not write to (EACCES: chmod, and when the
tests run as root -- whom chmod does not stop -- a child without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH).

Nothing here patches Python: the kernel refuses the writes. Mounting needs root (or CAP_SYS_ADMIN);
where it cannot be done, :func:`unavailable` skips the test, and fails it under ``CI=true``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dcac_plugin

#: the checkout whose ``dcac_plugin`` the tests import (children import the same code)
CODE_ROOT = Path(dcac_plugin.__file__).resolve().parents[1]


def unavailable(reason: str) -> None:
    """Skip: the real failure cannot be produced here; under ``CI=true`` fail with the reason."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot produce a real failing write here ({reason}); CI must be able to")
    pytest.skip(reason)


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a CLI child: this checkout's code, one thread, no colour."""
    env = dict(os.environ, PYTHONPATH=str(CODE_ROOT), OMP_NUM_THREADS="1", MKL_CBWR="COMPATIBLE",
               NUMBA_NUM_THREADS="1", PYTHONWARNINGS="ignore", NO_COLOR="1", **extra)
    env.pop("CI_FORCE_TTY", None)
    return env


def file_size_limit(nbytes: int):
    """``preexec_fn`` for ``subprocess``: the child may write files of at most ``nbytes`` (``ulimit -f``).

    Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the child.
    (Not for children started from several threads at once: use ``run_cli(..., fsize=n)`` there.)
    """
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


#: the child wrapper: ulimit -f (argv[1] bytes, -1: none), drop root's permission override (argv[2] == '1':
#: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave the bounding set, so the exec'd program obeys file
#: modes like any user), then exec the command (no preexec_fn: safe with threads)
_WRAPPER = """import ctypes, os, resource, sys
n, drop = int(sys.argv[1]), sys.argv[2] == "1"
if n >= 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
if drop:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(f"realfs: cannot drop capability {cap} (errno {ctypes.get_errno()})")
os.execv(sys.argv[3], sys.argv[3:])
"""


def _mount(*args: str) -> str | None:
    try:
        r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``'3m'``) mounted at ``path`` for the duration (writes past it: ENOSPC)."""
    path.mkdir(parents=True, exist_ok=True)
    err = _mount("-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path))
    if err:
        unavailable(f"cannot mount a tmpfs at {path}: {err}")
    try:
        yield path
    finally:
        _umount(path)


def resize_tmpfs(path: Path, size: str) -> None:
    """Grow (or shrink) a tmpfs from :func:`small_tmpfs` ("the user freed space")."""
    err = _mount("-o", f"remount,size={size}", str(path))
    assert err is None, err


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` (a folder, filled beforehand) bind-mounted read-only over itself (writes: EROFS)."""
    err = _mount("--bind", str(path), str(path))
    if err:
        unavailable(f"cannot bind-mount {path}: {err}")
    try:
        err = _mount("-o", "remount,bind,ro", str(path))
        if err:
            unavailable(f"cannot remount {path} read-only: {err}")
        yield path
    finally:
        _umount(path)


def no_write_permission(path: Path) -> dict:
    """``run_cli`` keyword arguments under which the child may not write into ``path`` (EACCES).

    ``path`` becomes mode 0555; a child of a root test runs without root's permission override.
    """
    path.chmod(0o555)
    return {"drop_dac": os.geteuid() == 0}


def no_read_permission(path: Path) -> dict:
    """``run_cli`` keyword arguments under which the child may not read ``path`` (mode 0000)."""
    path.chmod(0o000)
    return {"drop_dac": os.geteuid() == 0}


def run_cli(tool: str, *args: str, cwd: Path | None = None, timeout: float = 300, fsize: int | None = None,
            drop_dac: bool = False, **kw) -> subprocess.CompletedProcess:
    """``python tools/<tool>.py args`` as a child process (text output captured).

    Args:
        fsize: ``ulimit -f`` of the child, in bytes.
        drop_dac: the child (of a root test) obeys file modes (see :func:`no_write_permission`).
    """
    env = kw.pop("env", None) or child_env()
    cmd = [sys.executable, str(CODE_ROOT / "tools" / f"{tool}.py"), *map(str, args)]
    if fsize is not None or drop_dac:
        cmd = [sys.executable, "-c", _WRAPPER, str(-1 if fsize is None else fsize), "1" if drop_dac else "0", *cmd]
    return subprocess.run(cmd, cwd=cwd or CODE_ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The only ``error:`` line of a child that must exit 2 without a traceback (asserted)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]
