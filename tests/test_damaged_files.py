"""Damaged and malformed files: resume past a truncated checkpoint, weight files diagnosed by cause,
yaml parse errors as one line, real failed writes (EFBIG, ENOSPC), every PIL image mode as RGB."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny
from helpers.realfs import (
    child_env,
    file_size_limit,
    one_error_line,
    resize_tmpfs,
    run_cli,
    small_tmpfs,
)
from PIL import Image

from dcac_plugin.cli.train import main as train_main
from dcac_plugin.config import ConfigError, get_default_config, merge_config
from dcac_plugin.models.weights import WeightLoadError, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny.TINY + ["train.print_freq", "50", "train.checkpoint_period", "1", "train.keep_checkpoints", "3"]
DCAC = str(ROOT / "configs/demo/dcac_tiny.yaml")


@pytest.fixture(scope="module")
def two_epoch_run(synthetic_tiny_root, tmp_path_factory) -> Path:
    """A tiny DCAC run with checkpoint_ep1.pth and checkpoint_ep2.pth (a copy is taken per test)."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    train_main(["--config-file", DCAC, "data.root", str(synthetic_tiny_root), "data.save_dir", str(out), *TINY,
                "train.max_epoch", "2"])
    assert (out / "checkpoint_ep1.pth").is_file() and (out / "checkpoint_ep2.pth").is_file()
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path.read_bytes()


# ------------------------------------------------------------------------------------------------ 1


def test_resume_moves_a_truncated_newest_checkpoint_aside_and_continues_from_the_previous(
        two_epoch_run, synthetic_tiny_root, tmp_path, caplog):
    run = _copy_run(two_epoch_run, tmp_path / "run")
    (run / "results.json").unlink()
    damaged = _truncate(run / "checkpoint_ep2.pth")
    caplog.set_level(logging.WARNING)
    rec = train_main(["--resume", "--config-file", DCAC, "data.root", str(synthetic_tiny_root),
                      "data.save_dir", str(run), *TINY, "train.max_epoch", "3"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("checkpoint_ep2.pth cannot be read" in m and "truncated zip archive" in m
               and "moved aside to checkpoint_ep2.pth.damaged" in m for m in warned), warned
    assert (run / "checkpoint_ep2.pth.damaged").read_bytes() == damaged  # kept, byte for byte
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'checkpoint_ep1.pth'} (completed epochs: 1)" in log
    assert rec["status"] == "ok" and rec["epochs"] == 3
    assert torch.load(run / "checkpoint_ep3.pth", weights_only=True)["epoch"] == 3
    assert torch.load(run / "checkpoint_ep2.pth", weights_only=True)["epoch"] == 2  # written again


def test_resume_with_no_readable_checkpoint_is_one_error_listing_them(two_epoch_run, synthetic_tiny_root, tmp_path):
    run = _copy_run(two_epoch_run, tmp_path / "run")
    _truncate(run / "checkpoint_ep2.pth")
    (run / "checkpoint_ep1.pth").write_bytes(b"")
    proc = run_cli("train", "--resume", "--config-file", DCAC, "data.root", synthetic_tiny_root,
                   "data.save_dir", run, *TINY, "train.max_epoch", "3")
    line = one_error_line(proc)
    assert line.startswith(f"error: no checkpoint in {run} can be read: checkpoint_ep2.pth (")
    assert "checkpoint_ep1.pth (" in line and "empty (0 bytes)" in line and "truncated zip archive" in line
    assert sorted(p.name for p in run.glob("checkpoint_ep*")) == ["checkpoint_ep1.pth.damaged",
                                                                   "checkpoint_ep2.pth.damaged"]


def test_eval_only_and_run_folder_tools_take_the_newest_readable_checkpoint(two_epoch_run, synthetic_tiny_root,
                                                                            tmp_path):
    from dcac_plugin.inference import run_weights

    run = _copy_run(two_epoch_run, tmp_path / "run")
    (run / "results.json").unlink()
    _truncate(run / "checkpoint_ep2.pth", 0.9)
    assert run_weights(run) == run / "checkpoint_ep1.pth"  # what extract/search/visrank/export --run-dir load
    assert (run / "checkpoint_ep2.pth.damaged").is_file()
    (run / "checkpoint_ep2.pth.damaged").rename(run / "checkpoint_ep2.pth")
    rec = train_main(["--eval-only", "--config-file", str(run / "config.yaml"), "data.root", str(synthetic_tiny_root),
                      "data.save_dir", str(run), "data.workers", "0"])
    assert rec["checkpoint"]["file"] == "checkpoint_ep1.pth" and rec["status"] == "ok"


# ------------------------------------------------------------------------------------------------ 2


def _zip_checkpoint(path: Path) -> bytes:
    torch.save({"model": {"encoder.fc.weight": torch.randn(8, 4)}, "epoch": 1}, path)
    return path.read_bytes()


def _cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    """file -> the one-line cause its error must give."""
    out = {}
    full = _zip_checkpoint(tmp / "full.pth")
    (tmp / "trunc.pth").write_bytes(full[: len(full) // 2])
    out["truncated zip"] = (tmp / "trunc.pth", f"is a truncated zip archive ({len(full) // 2} bytes; a torch.save "
                                               "file keeps its index at the end, which is missing)")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, tmp / "w.safetensors")
    data = (tmp / "w.safetensors").read_bytes()
    (tmp / "w_trunc.safetensors").write_bytes(data[:-100])
    out["truncated safetensors"] = (tmp / "w_trunc.safetensors",
                                    f"is a truncated safetensors file ({len(data) - 100} of {len(data)} bytes)")
    (tmp / "empty.pth").write_bytes(b"")
    out["empty"] = (tmp / "empty.pth", "is empty (0 bytes): the copy or download did not complete")
    (tmp / "page.pth").write_text("<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n")
    out["html page"] = (tmp / "page.pth", "is an HTML/XML page (62 bytes), not weights: a failed download")
    (tmp / "lfs.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    out["lfs pointer"] = (tmp / "lfs.pth", "is a Git LFS pointer")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(32, 32)}, buf, _use_new_zipfile_serialization=False)
    (tmp / "legacy.pth").write_bytes(buf.getvalue()[:-50])
    out["truncated legacy pickle"] = (tmp / "legacy.pth", "(a legacy torch.save pickle")
    return out


def test_damaged_weight_files_each_get_their_own_cause_and_no_pickle_advice(tmp_path):
    for name, (path, cause) in _cases(tmp_path).items():
        with pytest.raises(WeightLoadError) as ei:
            read_state_dict(path, "model weights")
        msg = str(ei.value)
        assert cause in msg, (name, msg)
        assert "\n" not in msg and "weights_only=False" not in msg and "pickled" not in msg, (name, msg)
        fix = "copy or download it again" if name not in ("html page", "lfs pointer") else "download"
        assert fix in msg, (name, msg)


def test_pickle_advice_only_for_a_complete_pickle_with_objects(tmp_path):
    import argparse

    path = tmp_path / "objects.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(WeightLoadError) as ei:
        read_state_dict(path)
    msg = str(ei.value)
    assert "is a complete checkpoint that holds pickled Python objects besides tensors" in msg
    assert "Unsupported global: GLOBAL argparse.Namespace" in msg and "weights_only=False" in msg
    # a safetensors file under a .pth name is recognised by its content and loads
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3)}, tmp_path / "renamed.pth")
    assert torch.equal(read_state_dict(tmp_path / "renamed.pth")["w"], torch.ones(3))


def test_weights_of_another_model_say_so(two_epoch_run, tmp_path):
    from dcac_plugin.cli import extract as extract_cli

    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3), "classifier.weight": torch.zeros(5, 8)}},
               tmp_path / "osnet.pth")
    Image.fromarray(_picture()).save(tmp_path / "a.png")
    with pytest.raises(WeightLoadError) as ei:
        extract_cli.main(["--config-file", DCAC, "--weights", str(tmp_path / "osnet.pth"), "--images",
                          str(tmp_path), "--output", str(tmp_path / "f.npz"), "--device", "cpu"])
    msg = str(ei.value)
    assert "is a checkpoint of another model: nothing in it matches the DCAC / CLIP-ReID encoder" in msg
    assert "\n" not in msg and "pickled" not in msg


# ------------------------------------------------------------------------------------------------ 3


@pytest.mark.parametrize("text, where, problem", [
    ("train:\n  lr: 0.1\n  stepsize: [8, 11\n", "line 4 column 1",
     "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence that starts at line 3 column 13)"),
    ("train:\n\tlr: 0.1\n", "line 2 column 1",
     "found character '\\t' that cannot start any token (while scanning for the next token); yaml indents with "
     "spaces, never tabs"),
])
def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path, text, where, problem):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as ei:
        merge_config(get_default_config(), str(bad))
    assert str(ei.value) == f"{bad} {where}: {problem}; fix the yaml syntax there"
    Image.fromarray(_picture()).save(tmp_path / "a.png")
    for tool in ("train", "extract"):
        args = ["--config-file", bad] + (["--weights", bad, "--images", tmp_path, "--output", tmp_path / "f.npz"]
                                         if tool == "extract" else [])
        line = one_error_line(run_cli(tool, *args))
        assert line == f"error: {bad} {where}: {problem}; fix the yaml syntax there", line


def test_every_yaml_reader_uses_the_one_parse_error(tmp_path):
    from dcac_plugin.benchmark.records import RecordError, load_published
    from dcac_plugin.benchmark.suite import SuiteError, load_suite

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nruns: [{name: a, config: b}\n")
    want = f"{bad} line 3 column 1: expected ',' or ']', but got '<stream end>'"
    with pytest.raises(SuiteError) as e1:
        load_suite(bad)
    with pytest.raises(RecordError) as e2:
        load_published(bad)
    assert str(e1.value).startswith(want) and str(e2.value).startswith(want)


# ------------------------------------------------------------------------------------------------ 4

_SAVE_CHILD = """
import sys, torch
from dcac_plugin.utils.io import atomic_torch_save
from dcac_plugin.utils.files import WriteError
try:
    atomic_torch_save({"w": torch.zeros(256, 256)}, sys.argv[1])
except WriteError as e:
    print(e)
    sys.exit(3)
"""


def test_a_checkpoint_write_past_the_file_size_limit_is_one_line_and_keeps_the_previous(tmp_path):
    """ulimit -f 64 KiB in the child: torch.save's write fails for real with EFBIG (torch wraps it in
    'RuntimeError: [enforce fail at inline_container.cc] unexpected pos')."""
    target = tmp_path / "checkpoint_ep2.pth"
    torch.save({"w": torch.ones(2)}, target)
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _SAVE_CHILD, str(target)], env=child_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=file_size_limit(64 * 1024))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout.strip() == (
        f"cannot write {target}: file too large for this process or file system (EFBIG). Fix: raise the file-size "
        f"limit (ulimit -f unlimited) or write to another file system. Nothing was written under that name; what "
        f"was there before is unchanged")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_line_and_resumes_once_space_is_freed(synthetic_tiny_root,
                                                                                      tmp_path):
    """A 2.5 MiB tmpfs holds checkpoint_ep1.pth (1.7 MB) but not checkpoint_ep2.pth beside it: ENOSPC for
    real. The run stops with one line, keeps epoch 1, leaves no partial file; after the tmpfs grows
    ("space freed"), --resume finishes the run."""
    with small_tmpfs(tmp_path / "disk", "2560k") as disk:
        run = disk / "run"
        args = ["--config-file", DCAC, "data.root", synthetic_tiny_root, "data.save_dir", run, *TINY,
                "train.max_epoch", "3", "train.keep_checkpoints", "2"]
        line = one_error_line(run_cli("train", *args))
        assert line == (
            f"error: cannot write {run / 'checkpoint_ep2.pth'}: no space left on device (ENOSPC). Fix: free space "
            f"on the disk that holds {run} or write elsewhere. Nothing was written under that name; what was "
            f"there before is unchanged; once fixed, --resume continues from checkpoint_ep1.pth"), line
        assert sorted(p.name for p in run.glob("*checkpoint*")) == ["checkpoint_ep1.pth"]
        assert torch.load(run / "checkpoint_ep1.pth", weights_only=True)["epoch"] == 1
        resize_tmpfs(disk, "64m")
        proc = run_cli("train", "--resume", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"resumed from {run / 'checkpoint_ep1.pth'} (completed epochs: 1)" in (run / "train.log").read_text()
        assert json.loads((run / "results.json").read_text())["status"] == "ok"
        assert torch.load(run / "checkpoint_ep3.pth", weights_only=True)["epoch"] == 3


# ------------------------------------------------------------------------------------------------ 5


def _picture() -> np.ndarray:
    return np.random.RandomState(0).randint(0, 256, (64, 32)).astype(np.uint8)


def test_every_pil_mode_becomes_rgb_as_a_viewer_shows_it(tmp_path):
    from dcac_plugin.data.reader import ALPHA_BACKGROUND, read_image, to_rgb

    a8 = _picture()
    Image.fromarray(a8).save(tmp_path / "gray8.png")
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode in ("I;16", "I")
    want = np.asarray(read_image(tmp_path / "gray8.png"))
    assert np.array_equal(np.asarray(read_image(tmp_path / "gray16.png")), want)  # not almost white
    i32 = Image.fromarray(a8.astype(np.int32) * 257, "I")
    assert np.array_equal(np.asarray(to_rgb(i32)), want)
    f = Image.fromarray(a8.astype(np.float32) / 255.0, "F")
    assert np.array_equal(np.asarray(to_rgb(f)), want)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(a8.astype(np.float32), "F"))), want)  # 0..255 floats
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (200, 100, 50, 255))
    rgba.putpixel((1, 0), (200, 100, 50, 0))
    assert list(to_rgb(rgba).getdata()) == [(200, 100, 50), ALPHA_BACKGROUND]
    assert ALPHA_BACKGROUND == (128, 128, 128)
    la = Image.new("LA", (1, 1), (40, 0))
    assert to_rgb(la).getpixel((0, 0)) == ALPHA_BACKGROUND
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 210, 220] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    assert list(to_rgb(pal).getdata()) == [ALPHA_BACKGROUND, (200, 210, 220)]
    assert to_rgb(Image.new("1", (1, 1), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "LA", "I", "F", "I;16", "I;16B", "PA", "RGBa", "La", "YCbCr"):
        out = to_rgb(Image.new(mode, (3, 2)))
        assert out.mode == "RGB" and out.size == (3, 2), mode


def test_training_evaluation_and_extraction_see_a_16_bit_png_as_its_8_bit_twin(two_epoch_run, synthetic_tiny_root,
                                                                               tmp_path):
    """The dataset loader (training and evaluation) and the extractor read through the same conversion."""
    import dcac_plugin
    from dcac_plugin._torchreid import tr
    from dcac_plugin.data.reader import read_image
    from dcac_plugin.inference import FeatureExtractor

    dcac_plugin.register()
    assert vars(sys.modules[tr.data.ImageDataset.__module__])["read_image"] is read_image
    a8 = _picture()
    Image.fromarray(a8).save(tmp_path / "gray8.png")
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    fx = FeatureExtractor.from_run(two_epoch_run, opts=["data.root", str(synthetic_tiny_root)], device="cpu")
    f8, f16 = fx([str(tmp_path / "gray8.png"), str(tmp_path / "gray16.png")])
    assert torch.equal(f8, f16)
    assert torch.equal(fx([Image.open(tmp_path / "gray16.png")])[0], f8)  # PIL images given directly, too

