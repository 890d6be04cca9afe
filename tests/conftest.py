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
