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


# ----------------------------------------------------------------------------------------------
# shared tiny runs: trained once per session (tests/helpers/tiny.py), read by many tests, written by none

SHARED_RUNS = ("tiny_dcac_run", "tiny_clip_run", "tiny_osnet_run")


@pytest.fixture(scope="session")
def tiny_dcac_run(synthetic_tiny_root, tmp_path_factory):
    """A finished 1-epoch DCAC-tiny run folder (targets msmt17, market1501). Read it only: a test that
    changes a run works on a copy (``shutil.copytree``)."""
    from helpers.tiny import train_shared

    return train_shared("dcac", synthetic_tiny_root, tmp_path_factory.mktemp("shared_runs") / "dcac")


@pytest.fixture(scope="session")
def tiny_clip_run(synthetic_tiny_root, tmp_path_factory):
    """A finished 1-epoch CLIP-baseline (clip_reid_tiny) run folder (target msmt17). Read it only."""
    from helpers.tiny import train_shared

    return train_shared("clip", synthetic_tiny_root, tmp_path_factory.mktemp("shared_runs") / "clip")


@pytest.fixture(scope="session")
def tiny_osnet_run(synthetic_tiny_root, tmp_path_factory):
    """A finished 1-epoch OSNet (osnet_x0_25, torchreid engine) run folder (target msmt17). Read it only."""
    from helpers.tiny import train_shared

    return train_shared("osnet", synthetic_tiny_root, tmp_path_factory.mktemp("shared_runs") / "osnet")


def _listing(folder):
    """Every path under ``folder`` with its modification time and size."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


@pytest.fixture(autouse=True)
def _shared_runs_stay_unchanged(request):
    """Fail a test that changed a shared run folder, so that reusing the run cannot hide a side effect
    (nor let one test's writes reach the next)."""
    used = {name: request.getfixturevalue(name) for name in SHARED_RUNS if name in request.fixturenames}
    before = {name: _listing(run) for name, run in used.items()}
    yield
    for name, run in used.items():
        after = _listing(run)
        if after != before[name]:
            was = before[name]
            changes = {"added": sorted(after.keys() - was.keys()), "removed": sorted(was.keys() - after.keys()),
                       "rewritten": sorted(k for k in was.keys() & after.keys() if was[k] != after[k])}
            what = "; ".join(f"{kind}: {', '.join(paths)}" for kind, paths in changes.items() if paths)
            pytest.fail(f"{request.node.nodeid} changed the shared run folder {name} ({run}): {what}. A test that "
                        f"writes into a run works on a copy: shutil.copytree({name}, tmp_path / ...)", pytrace=False)


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
# on request (DCAC_TEST_COUNT_RUNS=1, or =list for one line per run): how many runs the session does,
# counted at dcac_plugin.runner.run in this process (runs in child processes are not seen)

_runs: list[tuple[str, str]] = []


def pytest_configure(config):
    if os.environ.get("DCAC_TEST_COUNT_RUNS", "") not in ("1", "list"):
        return
    import dcac_plugin.cli.train as cli_train
    import dcac_plugin.runner as runner

    real = runner.run

    def counted(cfg, **kw):
        evaluate = cfg.test.evaluate if kw.get("eval_only") is None else kw["eval_only"]
        kind = "evaluation" if evaluate else "resume" if cfg.model.resume else "training"
        test = os.environ.get("PYTEST_CURRENT_TEST", "?")
        try:
            record = real(cfg, **kw)
        except BaseException:
            _runs.append((f"{kind} (raised)", test))
            raise
        _runs.append((f"{kind} ({cfg.model.name}, {cfg.train.max_epoch} ep)" if kind == "training" else kind, test))
        return record

    runner.run = cli_train.run = counted


def _write_run_counts(reporter) -> None:
    if os.environ.get("DCAC_TEST_COUNT_RUNS", "") not in ("1", "list"):
        return
    counts: dict[str, int] = {}
    for kind, _ in _runs:
        key = kind.split(" (")[0] + (" (raised)" if kind.endswith("(raised)") else "")
        counts[key] = counts.get(key, 0) + 1
    reporter.write_line("runner runs in this process: "
                        + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    if os.environ["DCAC_TEST_COUNT_RUNS"] == "list":
        for kind, test in _runs:
            reporter.write_line(f"  {kind}: {test}")


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
    _write_run_counts(reporter)
