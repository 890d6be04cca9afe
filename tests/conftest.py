"""Shared test setup: one torch thread (stable timings on 2-core CI), no network."""

import os
import socket

# numba's OpenMP threading layer (the evaluation kernels) sets the process's OpenMP thread count to
# NUMBA_NUM_THREADS (default: every core) at its first parallel call, which also changes torch's
# thread count: keep both at one.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that tries to open a network connection (loopback allowed)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return real_connect(self, address)
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise RuntimeError(f"network access attempted in a test: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture(scope="session")
def synthetic_tiny_root(tmp_path_factory):
    """The tiny synthetic benchmark (all 4 domains), generated once per session (cached by marker)."""
    from dcac_plugin.data.synthetic import make_synthetic

    root = tmp_path_factory.getbasetemp() / "synthetic_tiny"
    make_synthetic(root, scale="tiny", seed=0)
    return root


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where CUDA exists: elsewhere they are deselected (not skipped),
    since a CPU machine cannot have the component at all."""
    if torch.cuda.is_available():
        return
    keep = [item for item in items if "cuda" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if "cuda" in item.keywords])
        items[:] = keep


# ----------------------------------------------------------------------------------------------
# missing real components (see tests/components.py): collected from the skip reasons, named in
# one line at the very end of the run (after pytest's own summary)

_skipped_components: dict[str, set[str]] = {}


def _note_skip(report) -> None:
    from components import component_of

    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    found = component_of(str(report.longrepr[2]))
    if found is not None:
        _skipped_components.setdefault(found[0], set()).add(report.nodeid.split("::")[0])


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_unconfigure(config):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.option.collectonly:
        return
    from components import required

    if _skipped_components:
        names = ", ".join(f"{c} ({', '.join(sorted(files))})" for c, files in sorted(_skipped_components.items()))
        line = f"skipped components: {names}; set CI=true or DCAC_REQUIRE_ALL=1 to make them fail"
    else:
        line = "skipped components: none" + (" (CI=true / DCAC_REQUIRE_ALL=1: missing ones fail)" if required()
                                             else "")
    reporter.write_line(line, yellow=bool(_skipped_components), bold=True)
