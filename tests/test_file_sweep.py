"""Every CLI x every file it reads or writes x missing / empty / truncated / malformed / wrong kind /
no permission / failed write, each run as a child process (table-driven).

Expected: exit 2 with exactly one ``error:`` line that contains the row's cause, no traceback, and
every file that existed before the run unchanged (a documented recovery -- resume past a damaged
checkpoint -- exits 0 and moves the damaged file aside, byte for byte). Failed writes are real:
a read-only bind mount (EROFS), a folder the child may not write to (EACCES; a child of a root test
runs without root's permission override), a file-size limit in the child (EFBIG), a small tmpfs (ENOSPC).

The rows run two at a time; ``python -m pytest tests/test_file_sweep.py -s`` prints the table
(``SWEEP_ONLY=extract`` runs the rows whose "cli file case" contains that text).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny
from helpers.realfs import (
    no_read_permission,
    no_write_permission,
    read_only_folder,
    run_cli,
    small_tmpfs,
)
from PIL import Image

from dcac_plugin.cli.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
DCAC = str(ROOT / "configs/demo/dcac_tiny.yaml")
TINY = tiny.TINY + ["train.print_freq", "50", "train.checkpoint_period", "1", "train.keep_checkpoints", "3"]
HTML = "<!DOCTYPE html>\n<html><body>Sign in</body></html>\n"


@dataclass
class Ctx:
    """What a row's setup gets: its own folder, the data and a finished run."""

    work: Path
    data: Path
    run_template: Path
    kw: dict = field(default_factory=dict)  # subprocess options (user, preexec_fn)
    mounts: list = field(default_factory=list)  # entered mounts (read-only, tmpfs), left after the row

    def run(self) -> Path:
        """A private copy of the two-epoch run folder."""
        dst = self.work / "run"
        if not dst.exists():
            shutil.copytree(self.run_template, dst)
        return dst

    def image(self, name: str = "img/a.png") -> Path:
        p = self.work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 16, 3), 90, np.uint8)).save(p)
        return p

    def text(self, name: str, text: str | bytes) -> Path:
        p = self.work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    def truncated(self, src: Path, name: str) -> Path:
        data = src.read_bytes()
        return self.text(name, data[: len(data) // 2])

    def _enter(self, cm) -> None:
        cm.__enter__()
        self.mounts.append(cm)

    def read_only(self, folder: Path) -> Path:
        """``folder`` (with what was written into it so far) read-only from here on."""
        folder.mkdir(parents=True, exist_ok=True)
        self._enter(read_only_folder(folder))
        return folder

    def full_disk(self, folder: Path, old: dict[str, str] | None = None) -> Path:
        """A 128 KiB tmpfs at ``folder`` holding ``old`` files, then filled to the last byte."""
        self._enter(small_tmpfs(folder, "128k"))
        for name, text in (old or {}).items():
            (folder / name).write_text(text)
        try:
            with open(folder / "filler.bin", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        except OSError:
            pass  # full
        return folder

    def no_permission(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.kw.update(no_write_permission(folder))
        return folder

    def unreadable(self, path: Path) -> Path:
        self.kw.update(no_read_permission(path))
        return path

    def size_limit(self, nbytes: int) -> None:
        self.kw["fsize"] = nbytes


@dataclass
class Row:
    cli: str
    file: str
    case: str
    setup: Callable[[Ctx], list]  # returns the argv after tools/<cli>.py
    expect: str  # must appear in the one error line (or, for a recovery, in stderr)
    code: int = 2
    moved_aside: tuple[str, ...] = ()  # recovery: these files were renamed <name>.damaged (bytes kept)
    updated: tuple[str, ...] = ()  # files the run itself updates (a resumed run's log and merged config)


def _model(c: Ctx) -> list:
    return ["--run-dir", c.run(), "--device", "cpu", "--opts", "data.root", c.data]


def _weights(c: Ctx, path: Path) -> list:
    return ["--config-file", DCAC, "--weights", path, "--device", "cpu", "--opts", "data.root", c.data]


def _extract(c: Ctx, model: list, out: str | Path | None = None) -> list:
    return [*model, "--images", c.image(), "--output", out or c.work / "out/f.npz"]


def _results(c: Ctx, text: str | bytes, name: str = "res/r1/results.json") -> list:
    c.text(name, text)
    return ["--results", c.work / "res"]


def _good_results(c: Ctx) -> Path:
    rec = json.loads((c.run_template / "results.json").read_text())
    c.text("res/r1/results.json", json.dumps(rec))
    return c.work / "res"


def _train_args(c: Ctx, *extra) -> list:
    return ["--config-file", DCAC, "data.root", c.data, *TINY, *extra]


def _resume_truncated(c: Ctx) -> list:
    run = c.run()
    (run / "results.json").unlink()
    c.truncated(run / "checkpoint_ep2.pth", "run/checkpoint_ep2.pth")
    return ["--resume", *_train_args(c, "data.save_dir", run, "train.max_epoch", "2")]


def _resume_all_bad(c: Ctx) -> list:
    run = c.run()
    c.truncated(run / "checkpoint_ep2.pth", "run/checkpoint_ep2.pth")
    c.text("run/checkpoint_ep1.pth", HTML)
    return ["--resume", *_train_args(c, "data.save_dir", run, "train.max_epoch", "3")]


def _eval_weights(c: Ctx, path: Path) -> list:
    return ["--eval-only", *_train_args(c, "data.save_dir", c.work / "eval", "model.load_weights", path)]


def _osnet_file(c: Ctx) -> Path:
    p = c.work / "other.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, p)
    return p


def _features_of_another_model(c: Ctx) -> Path:
    from dcac_plugin.inference import save_features

    return save_features(c.work / "q.npz", np.zeros((1, 4), np.float32), [str(c.image())],
                         {"model": "osnet_x1_0", "weights": "x.pth"}, [])


def _snapshot_feature_file(c: Ctx) -> Path:
    from dcac_plugin.inference import save_features

    return save_features(c.work / "good.npz", np.ones((2, 4), np.float32), ["a", "b"], {"model": "m"}, [])


ROWS: list[Row] = [
    # ----------------------------------------------------------------------------- train
    Row("train", "--config-file", "missing", lambda c: ["--config-file", c.work / "nope.yaml"],
        "config file not found"),
    Row("train", "--config-file", "malformed (unclosed bracket)",
        lambda c: ["--config-file", c.text("bad.yaml", "train:\n  stepsize: [8, 11\n")],
        "bad.yaml line 3 column 1: expected ',' or ']'"),
    Row("train", "--config-file", "malformed (tab indent)",
        lambda c: ["--config-file", c.text("tab.yaml", "train:\n\tlr: 1\n")], "tab.yaml line 2 column 1: "),
    Row("train", "--config-file", "wrong kind (a list)",
        lambda c: ["--config-file", c.text("list.yaml", "- a\n- b\n")], "must map config keys to values"),
    Row("train", "--config-file", "wrong kind (binary)",
        lambda c: ["--config-file", c.text("bin.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")], "bin.yaml"),
    Row("train", "--config-file", "empty (defaults: no data there)",
        lambda c: ["--config-file", c.text("empty.yaml", ""), "data.root", c.work / "nodata", "data.save_dir",
                   c.work / "o"], "dataset folder not found"),
    Row("train", "--config-file", "no permission",
        lambda c: ["--config-file", c.unreadable(c.text("cfg.yaml", "train:\n  lr: 1\n"))], "Permission denied"),
    Row("train", "checkpoint_epN.pth (--resume)", "truncated newest (recovery)", _resume_truncated,
        "moved aside to checkpoint_ep2.pth.damaged", code=0, moved_aside=("run/checkpoint_ep2.pth",),
        updated=("run/train.log", "run/config.yaml")),
    Row("train", "checkpoint_epN.pth (--resume)", "none readable (truncated + HTML)", _resume_all_bad,
        "can be read: checkpoint_ep2.pth (", moved_aside=("run/checkpoint_ep1.pth", "run/checkpoint_ep2.pth"),
        updated=("run/train.log", "run/config.yaml")),
    Row("train", "model.load_weights", "missing", lambda c: _eval_weights(c, c.work / "nope.pth"), "no such file"),
    Row("train", "model.load_weights", "empty", lambda c: _eval_weights(c, c.text("e.pth", b"")), "is empty (0 bytes)"),
    Row("train", "model.load_weights", "truncated",
        lambda c: _eval_weights(c, c.truncated(c.run_template / "checkpoint_ep1.pth", "t.pth")),
        "is a truncated zip archive"),
    Row("train", "model.load_weights", "wrong kind (HTML page)", lambda c: _eval_weights(c, c.text("p.pth", HTML)),
        "is an HTML/XML page"),
    Row("train", "model.load_weights", "wrong kind (another model)", lambda c: _eval_weights(c, _osnet_file(c)),
        "is a checkpoint of another model"),
    Row("train", "data.save_dir", "read-only folder (EROFS)",
        lambda c: _train_args(c, "data.save_dir", c.read_only(c.work / "ro") / "run"), "(EROFS)"),
    Row("train", "data.save_dir", "no permission (EACCES)",
        lambda c: _train_args(c, "data.save_dir", c.no_permission(c.work / "locked") / "run"), "(EACCES)"),
    Row("train", "checkpoint_ep1.pth (write)", "file-size limit (EFBIG)",
        lambda c: (c.size_limit(256 * 1024), _train_args(c, "data.save_dir", c.work / "run1",
                                                         "train.max_epoch", "1"))[1],
        "checkpoint_ep1.pth: file too large for this process or file system (EFBIG)"),
    Row("train", "config.yaml (write)", "disk full (ENOSPC)",
        lambda c: _train_args(c, "data.save_dir", c.full_disk(c.work / "disk") / "run"),
        "config.yaml: no space left on device (ENOSPC)"),
    # ----------------------------------------------------------------------------- benchmark
    Row("benchmark", "--suite", "missing", lambda c: ["--suite", c.work / "nope.yaml", "--dry-run"],
        "suite file not found"),
    Row("benchmark", "--suite", "malformed",
        lambda c: ["--suite", c.text("s.yaml", "name: x\nruns: [{name: a}\n"), "--dry-run"], "s.yaml line 3 column 1"),
    Row("benchmark", "--suite", "empty", lambda c: ["--suite", c.text("s.yaml", ""), "--dry-run"], "s.yaml"),
    Row("benchmark", "--suite", "wrong kind (a list)",
        lambda c: ["--suite", c.text("s.yaml", "- 1\n"), "--dry-run"], "s.yaml"),
    Row("benchmark", "--suite", "no permission",
        lambda c: ["--suite", c.unreadable(c.text("s.yaml", "name: x\n")), "--dry-run"], "Permission denied"),
    # ----------------------------------------------------------------------------- leaderboard
    Row("leaderboard", "--results", "missing", lambda c: ["--results", c.work / "nope"], "nope"),
    Row("leaderboard", "results.json", "empty", lambda c: _results(c, ""), "results.json"),
    Row("leaderboard", "results.json", "truncated",
        lambda c: _results(c, (c.run_template / "results.json").read_text()[:300]), "results.json"),
    Row("leaderboard", "results.json", "wrong kind (a list)", lambda c: _results(c, "[1, 2]"), "results.json"),
    Row("leaderboard", "config.yaml (run folder)", "malformed",
        lambda c: (_results(c, json.dumps({k: v for k, v in json.loads(
            (c.run_template / "results.json").read_text()).items() if k != "seed"})),
            c.text("res/r1/config.yaml", "train: {seed: [1\n"))[0], "config.yaml line 2 column 1"),
    Row("leaderboard", "--published-file", "missing", lambda c: ["--published-file", c.work / "nope.yaml"],
        "published numbers file not found"),
    Row("leaderboard", "--published-file", "malformed",
        lambda c: ["--published-file", c.text("p.yaml", "source: s\nsingle_source: {A: [1\n")], "p.yaml line 3"),
    Row("leaderboard", "--published-file", "wrong kind", lambda c: ["--published-file", c.text("p.yaml", "- 1\n")],
        "p.yaml"),
    Row("leaderboard", "--output", "read-only folder (EROFS)",
        lambda c: ["--results", _good_results(c), "--output",
                   (c.text("ro/table.md", "old table\n"), c.read_only(c.work / "ro"))[1] / "table.md"], "(EROFS)"),
    Row("leaderboard", "--output", "no permission (EACCES)",
        lambda c: ["--results", _good_results(c), "--output",
                   (c.text("locked/table.md", "old\n"), c.no_permission(c.work / "locked"))[1] / "table.md"],
        "(EACCES)"),
    Row("leaderboard", "--output", "file-size limit (EFBIG)",
        lambda c: (c.size_limit(64), ["--results", _good_results(c), "--format", "html", "--output",
                                      c.text("out/page.html", "old page\n")])[1], "(EFBIG)"),
    Row("leaderboard", "--output", "disk full (ENOSPC)",
        lambda c: ["--results", _good_results(c), "--output",
                   c.full_disk(c.work / "disk", {"table.md": "old table\n"}) / "table.md"], "(ENOSPC)"),
    Row("leaderboard", "--plot", "read-only folder (EROFS)",
        lambda c: ["--results", _good_results(c), "--plot", c.read_only(c.work / "ro") / "p.png"], "(EROFS)"),
    # ----------------------------------------------------------------------------- extract
    Row("extract", "--weights", "missing", lambda c: _extract(c, _weights(c, c.work / "nope.pth")), "not found"),
    Row("extract", "--weights", "empty", lambda c: _extract(c, _weights(c, c.text("e.pth", b""))), "is empty"),
    Row("extract", "--weights", "truncated zip",
        lambda c: _extract(c, _weights(c, c.truncated(c.run_template / "checkpoint_ep1.pth", "t.pth"))),
        "is a truncated zip archive"),
    Row("extract", "--weights", "truncated safetensors",
        lambda c: _extract(c, _weights(c, c.text("w.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": {"))),
        "truncated or damaged safetensors"),
    Row("extract", "--weights", "wrong kind (HTML page)", lambda c: _extract(c, _weights(c, c.text("p.pth", HTML))),
        "is an HTML/XML page"),
    Row("extract", "--weights", "wrong kind (another model)", lambda c: _extract(c, _weights(c, _osnet_file(c))),
        "is a checkpoint of another model"),
    Row("extract", "--weights", "no permission",
        lambda c: _extract(c, _weights(c, c.unreadable(c.text("u.pth", (c.run_template / "checkpoint_ep1.pth")
                                                              .read_bytes())))),
        "Permission denied"),
    Row("extract", "--run-dir config.yaml", "malformed",
        lambda c: (c.text("run/config.yaml", "model: {name: [x\n") if c.run() else None,
                   _extract(c, _model(c)))[1], "config.yaml line 2 column 1"),
    Row("extract", "--run-dir checkpoint", "truncated newest (recovery)",
        lambda c: (c.run(), (c.run() / "results.json").unlink(),
                   c.truncated(c.run_template / "checkpoint_ep2.pth", "run/checkpoint_ep2.pth"),
                   _extract(c, _model(c)))[3], "moved aside to checkpoint_ep2.pth.damaged", code=0,
        moved_aside=("run/checkpoint_ep2.pth",)),
    Row("extract", "--images", "missing", lambda c: [*_weights(c, c.run_template / "checkpoint_ep1.pth"), "--images",
                                                     c.work / "nope", "--output", c.work / "f.npz"], "nope"),
    Row("extract", "--images", "empty folder",
        lambda c: [*_weights(c, c.run_template / "checkpoint_ep1.pth"), "--images",
                   (c.work / "none").mkdir() or c.work / "none", "--output", c.work / "f.npz"], "no images"),
    Row("extract", "--images", "wrong kind (binary, not a list file)",
        lambda c: [*_weights(c, c.run_template / "checkpoint_ep1.pth"), "--images", c.text("x.lst", b"\x89\xff\x00"),
                   "--output", c.work / "f.npz"], "is not a list file (not UTF-8 text)"),
    Row("extract", "--images (an image)", "truncated",
        lambda c: [*_weights(c, c.run_template / "checkpoint_ep1.pth"), "--images",
                   (c.truncated(c.image("img/x.png"), "img/x.png"), c.work / "img")[1], "--output",
                   c.work / "f.npz"], "cannot decode image"),
    Row("extract", "--output", "wrong kind (.txt)",
        lambda c: _extract(c, _weights(c, c.run_template / "checkpoint_ep1.pth"), c.work / "f.txt"),
        "must end in .npz or .safetensors"),
    Row("extract", "--output", "read-only folder (EROFS)",
        lambda c: _extract(c, _weights(c, c.run_template / "checkpoint_ep1.pth"),
                           (c.text("ro/f.npz", "old\n"), c.read_only(c.work / "ro"))[1] / "f.npz"), "(EROFS)"),
    Row("extract", "--output", "file-size limit (EFBIG)",
        lambda c: (c.size_limit(1024), _extract(c, _weights(c, c.run_template / "checkpoint_ep1.pth"),
                                                c.work / "out/f.npz"))[1], "f.npz: file too large"),
    Row("extract", "--output", "disk full (ENOSPC)",
        lambda c: _extract(c, _weights(c, c.run_template / "checkpoint_ep1.pth"),
                           c.full_disk(c.work / "disk", {"f.npz": "old"}) / "f.npz"), "f.npz: no space left"),
    # ----------------------------------------------------------------------------- search
    Row("search", "--query (feature file)", "truncated",
        lambda c: [*_model(c), "--query", c.truncated(_snapshot_feature_file(c), "q.npz"), "--gallery", c.image()],
        "cannot read feature file"),
    Row("search", "--query (feature file)", "empty",
        lambda c: [*_model(c), "--query", c.text("q.npz", b""), "--gallery", c.image()], "it is empty"),
    Row("search", "--query (feature file)", "wrong kind (another model)",
        lambda c: [*_model(c), "--query", _features_of_another_model(c), "--gallery", c.image()],
        "holds features of another model"),
    Row("search", "--json", "read-only folder (EROFS)",
        lambda c: [*_model(c), "--query", c.image(), "--gallery", c.image(), "--json",
                   (c.text("ro/m.json", "{}"), c.read_only(c.work / "ro"))[1] / "m.json"], "(EROFS)"),
    # ----------------------------------------------------------------------------- visrank
    Row("visrank", "results.json", "malformed",
        lambda c: (c.text("run/results.json", "{\"results\": ") if c.run() else None,
                   [*_model(c), "--target", "msmt17"])[1], "is not valid JSON"),
    Row("visrank", "--output", "read-only folder (EROFS)",
        lambda c: [*_model(c), "--target", "msmt17", "--num-queries", "2", "--output",
                   c.read_only(c.work / "ro") / "vis"], "(EROFS)"),
    # ----------------------------------------------------------------------------- export
    Row("export", "--weights", "truncated",
        lambda c: [*_weights(c, c.truncated(c.run_template / "checkpoint_ep1.pth", "t.pth")), "--output",
                   c.work / "m.onnx"], "is a truncated zip archive"),
    Row("export", "--output", "read-only folder (EROFS)",
        lambda c: [*_model(c), "--output", (c.text("ro/m.onnx", "old"), c.read_only(c.work / "ro"))[1] / "m.onnx"],
        "(EROFS)"),
    Row("export", "--output", "file-size limit (EFBIG)",
        lambda c: (c.size_limit(4096), [*_model(c), "--output", c.work / "out/m.onnx"])[1], "(EFBIG)"),
    # ----------------------------------------------------------------------------- make_synthetic
    Row("make_synthetic", "--root", "read-only folder (EROFS)",
        lambda c: ["--root", c.read_only(c.work / "ro") / "data", "--scale", "tiny"], "(EROFS)"),
    Row("make_synthetic", "--root", "no permission (EACCES)",
        lambda c: ["--root", c.no_permission(c.work / "locked") / "data", "--scale", "tiny"], "(EACCES)"),
    Row("make_synthetic", "--root (its files)", "file-size limit (EFBIG)",
        lambda c: (c.size_limit(2048), ["--root", c.work / "data", "--scale", "tiny"])[1], "(EFBIG)"),
    Row("make_synthetic", "--root", "disk full (ENOSPC)",
        lambda c: ["--root", c.full_disk(c.work / "disk") / "data", "--scale", "tiny"], "(ENOSPC)"),
    Row("make_synthetic", "--root", "wrong kind (a real dataset folder)",
        lambda c: (c.text("data/market1501/real.txt", "mine"), ["--root", c.work / "data", "--scale", "tiny"])[1],
        "was not written by the synthetic generator"),
]


def _files(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except PermissionError:
                out[str(p.relative_to(folder))] = "unreadable"
    return out


def _run_row(row: Row, data: Path, template: Path) -> tuple[Row, str, str | None]:
    """Run one row; returns ``(row, outcome, problem)`` (``problem`` None when the row holds)."""
    work = Path(tempfile.mkdtemp(prefix=f"sweep-{row.cli}-"))
    work.chmod(0o755)
    ctx = Ctx(work=work, data=data, run_template=template)
    try:
        try:
            argv = row.setup(ctx)
        except Exception as exc:  # noqa: BLE001 - a broken row is reported in the table
            return row, f"setup failed: {type(exc).__name__}: {exc}", "setup failed"
        before = _files(work)
        proc = run_cli(row.cli, *argv, **ctx.kw)
        after = _files(work)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        outcome = f"exit {proc.returncode}: " + (errors[0][:150] if errors else "(no error line)")
        problems = []
        if proc.returncode != row.code:
            problems.append(f"exit {proc.returncode}, expected {row.code}")
        if "Traceback" in proc.stderr:
            problems.append("traceback")
        if row.code == 2 and (len(errors) != 1 or row.expect not in errors[0]):
            problems.append(f"expected one error line with {row.expect!r}")
        if row.code == 0:
            hit = [line for line in proc.stderr.splitlines() if row.expect in line]
            if not hit:
                problems.append(f"expected {row.expect!r} in the log")
            outcome = "exit 0: " + (hit[0].split(": ", 1)[-1][:150] if hit else "")
        for name, digest in before.items():
            if name in row.moved_aside:
                if after.get(name + ".damaged") != digest:
                    problems.append(f"{name} not moved aside intact")
            elif after.get(name) != digest and name not in row.updated:
                problems.append(f"{name} changed or lost")
        if row.code == 2 and any(n.endswith(".tmp") for n in after):
            problems.append("a temporary file was left")
        return row, outcome, "; ".join(problems) + f"\n{proc.stderr[-2500:]}" if problems else None
    finally:
        for m in reversed(ctx.mounts):
            m.__exit__(None, None, None)
        for p in work.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def sweep_run(synthetic_tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny synthetic data and a finished two-epoch DCAC run (world-readable copies)."""
    base = Path(tempfile.mkdtemp(prefix="sweep-base-"))
    base.chmod(0o755)
    data = base / "data"
    shutil.copytree(synthetic_tiny_root, data)
    run = base / "run"
    train_main(["--config-file", DCAC, "data.root", str(data), "data.save_dir", str(run), *TINY, "train.max_epoch",
                "2"])
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield data, run
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~65 children of 2-15 s each, two at a time
def test_every_cli_file_and_case_ends_in_one_clear_line(sweep_run):
    data, run = sweep_run
    with tempfile.TemporaryDirectory(prefix="sweep-probe-") as probe, small_tmpfs(Path(probe) / "m", "64k"):
        pass  # mounting works here (else: skipped, or failed under CI=true)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda r: _run_row(r, data, run),
                                [r for r in ROWS if os.environ.get("SWEEP_ONLY", "") in f"{r.cli} {r.file} {r.case}"]))
    width = max(len(f"{r.cli} | {r.file} | {r.case}") for r in ROWS)
    table = "\n".join(f"{'FAIL' if problem else 'ok  '} {f'{r.cli} | {r.file} | {r.case}'.ljust(width)} -> {outcome}"
                      for r, outcome, problem in results)
    sys.stdout.write("\n" + table + "\n")
    failed = [f"{r.cli} | {r.file} | {r.case}: {problem}" for r, _, problem in results if problem]
    assert not failed, "\n\n".join(failed)
