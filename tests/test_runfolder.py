"""The run folder module: the one results.json reader and its errors, failed.json, the checkpoint lookup,
and the old names that still point at it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from dcac_plugin import runfolder
from dcac_plugin.runfolder import (
    FAILED_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    CheckpointError,
    ResultsFileError,
    check_schema_version,
    checkpoint_name,
    checkpoints,
    clear_failure,
    failure_record,
    latest_checkpoint,
    latest_loadable_checkpoint,
    read_failure,
    read_results,
    read_results_file,
    recorded_checkpoint,
    results_state,
)

GOOD = {"schema_version": 2, "run_name": "r", "status": "ok", "results": {"msmt17": {"mAP": 1.0, "rank1": 2.0}},
        "checkpoint": {"file": "checkpoint_ep2.pth", "sha256": "0" * 64}}


def _fix(run: Path) -> str:
    return (f"Fix: move it away or delete it, then evaluate the run again (tools/train.py --config-file "
            f"{run / 'config.yaml'} --eval-only data.save_dir {run})")


# ------------------------------------------------------------------------------------ results.json


def test_reads_a_good_results_file(tmp_path):
    (tmp_path / RESULTS_FILE).write_text(json.dumps(GOOD))
    assert read_results(tmp_path) == GOOD
    assert read_results_file(tmp_path / RESULTS_FILE) == GOOD
    assert results_state(tmp_path) == ("done", "")


def test_a_missing_results_file_is_none_from_the_folder_and_an_error_by_name(tmp_path):
    assert read_results(tmp_path) is None
    assert results_state(tmp_path) == (None, "")
    with pytest.raises(FileNotFoundError) as ei:
        read_results_file(tmp_path / RESULTS_FILE)
    assert str(ei.value) == f"results file not found: {tmp_path / RESULTS_FILE}"


@pytest.mark.parametrize("text, detail", [
    ('{"schema_version": 2, "results": {"msmt17": {"mAP": 1.0', "Expecting ',' delimiter: line 1 column 56 (char 55)"),
    ("", "Expecting value: line 1 column 1 (char 0)"),
])
def test_a_half_written_results_file_is_one_error_naming_the_file_and_the_fix(tmp_path, text, detail):
    path = tmp_path / RESULTS_FILE
    path.write_text(text)
    with pytest.raises(ResultsFileError) as ei:
        read_results(tmp_path)
    assert str(ei.value) == (f"{path} is not valid JSON ({detail}): the file is damaged or was not written "
                             f"completely. {_fix(tmp_path)}")
    assert isinstance(ei.value, ValueError)  # what the command lines catch and print as one line
    assert results_state(tmp_path) == ("incomplete", "results.json is not a JSON object")  # the suite skips it


def test_bytes_that_are_not_text_and_json_that_is_not_an_object_are_damaged_too(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ResultsFileError, match=r"is not valid JSON \('utf-8' codec can't decode"):
        read_results(tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultsFileError) as ei:
        read_results(tmp_path)
    assert str(ei.value) == f"{path}: a results.json must hold a JSON object, got list. {_fix(tmp_path)}"
    assert results_state(tmp_path)[0] == "incomplete"


def test_the_caller_chooses_the_error_class(tmp_path):
    class MyError(ValueError):
        pass

    (tmp_path / RESULTS_FILE).write_text("{")
    with pytest.raises(MyError, match="is not valid JSON"):
        read_results_file(tmp_path / RESULTS_FILE, MyError)


def test_schema_versions(tmp_path):
    assert SCHEMA_VERSION == 2 and check_schema_version(1, "x") == 1 and check_schema_version(2, "x") == 2
    with pytest.raises(ResultsFileError) as ei:
        check_schema_version(3, "run/results.json")
    assert str(ei.value) == ("run/results.json: schema_version 3 is not supported (this version reads 1, 2); "
                             "re-evaluate the run or upgrade dcac_plugin")
    # the reader reads any version (the runner merges into what is there); records reject a wrong one
    (tmp_path / RESULTS_FILE).write_text(json.dumps({**GOOD, "schema_version": 3}))
    assert read_results(tmp_path)["schema_version"] == 3
    from dcac_plugin.benchmark.records import RecordError, load_record

    with pytest.raises(RecordError, match="schema_version 3 is not supported"):
        load_record(tmp_path / RESULTS_FILE)


def test_a_results_status_other_than_ok_is_incomplete(tmp_path):
    (tmp_path / RESULTS_FILE).write_text(json.dumps({**GOOD, "status": "nan"}))
    assert results_state(tmp_path) == ("incomplete", "results.json status 'nan'")


def test_recorded_checkpoint_is_relative_to_the_run_folder(tmp_path):
    assert recorded_checkpoint(GOOD, tmp_path) == tmp_path / "checkpoint_ep2.pth"
    assert recorded_checkpoint({"checkpoint": {"file": "/abs/c.pth"}}, tmp_path) == Path("/abs/c.pth")
    assert recorded_checkpoint({"checkpoint": None}, tmp_path) is None
    assert recorded_checkpoint({}, tmp_path) is None


# ------------------------------------------------------------------------------------- failed.json


def test_failed_json_round_trip(tmp_path):
    from dcac_plugin.benchmark.runfiles import write_failure

    assert read_failure(tmp_path) is None
    assert write_failure(tmp_path, "m_ma", ["--config-file", "c.yaml"], "boom", "Traceback ...", 1.23456,
                         launcher="inline") == "boom"
    info = read_failure(tmp_path)
    assert info == {**failure_record("m_ma", ["--config-file", "c.yaml"], "boom", "Traceback ...", 1.23456,
                                     launcher="inline"), "created": info["created"]}
    assert info["status"] == "failed" and info["wall_time_s"] == 1.235 and info["launcher"] == "inline"
    assert results_state(tmp_path) == ("failed", "boom")
    (tmp_path / FAILED_FILE).write_text("{")  # damaged: still a failure, the message points at the file
    assert read_failure(tmp_path) is None and results_state(tmp_path) == ("failed", "see failed.json")
    clear_failure(tmp_path)
    clear_failure(tmp_path)  # nothing left: no error
    assert not (tmp_path / FAILED_FILE).exists() and results_state(tmp_path) == (None, "")


# ------------------------------------------------------------------------------------- checkpoints


def _checkpoint(run: Path, epoch: int) -> Path:
    path = run / checkpoint_name(epoch)
    torch.save({"model": {"w": torch.zeros(4, 4)}, "epoch": epoch}, path)
    return path


def test_checkpoints_newest_epoch_first_by_number_not_by_name(tmp_path):
    for e in (2, 10, 1):
        _checkpoint(tmp_path, e)
    (tmp_path / "checkpoint_ep3.pth.damaged").write_bytes(b"")
    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint_ep10.pth", "checkpoint_ep2.pth",
                                                        "checkpoint_ep1.pth"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_ep10.pth"
    assert latest_loadable_checkpoint(tmp_path) == tmp_path / "checkpoint_ep10.pth"
    assert latest_checkpoint(tmp_path / "none") is None and latest_loadable_checkpoint(tmp_path / "none") is None


def test_the_newest_readable_checkpoint_wins_and_a_damaged_one_is_moved_aside(tmp_path, caplog):
    _checkpoint(tmp_path, 1)
    good2 = _checkpoint(tmp_path, 2).read_bytes()
    (tmp_path / "checkpoint_ep2.pth").write_bytes(good2[: len(good2) // 2])
    (tmp_path / "checkpoint_ep2.pth.damaged").write_bytes(b"older")  # the name is taken: .damaged.1
    caplog.set_level(logging.WARNING)
    assert latest_loadable_checkpoint(tmp_path, move_aside=False) == tmp_path / "checkpoint_ep1.pth"
    assert (tmp_path / "checkpoint_ep2.pth").is_file()  # only reported
    assert latest_loadable_checkpoint(tmp_path) == tmp_path / "checkpoint_ep1.pth"
    assert (tmp_path / "checkpoint_ep2.pth.damaged.1").read_bytes() == good2[: len(good2) // 2]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_ep1.pth"
    warned = [r.getMessage() for r in caplog.records]
    assert any("checkpoint_ep2.pth cannot be read" in m and "truncated zip archive" in m
               and "moved aside to checkpoint_ep2.pth.damaged.1" in m for m in warned), warned


def test_no_readable_checkpoint_is_one_error_listing_them(tmp_path):
    (tmp_path / "checkpoint_ep1.pth").write_bytes(b"")
    (tmp_path / "checkpoint_ep2.pth").write_bytes(b"x")

    def probe(path: Path) -> None:
        raise OSError(f"cannot open {path.name}")

    with pytest.raises(CheckpointError) as ei:
        latest_loadable_checkpoint(tmp_path, probe=probe, move_aside=False)
    assert str(ei.value) == (
        f"no checkpoint in {tmp_path} can be read: checkpoint_ep2.pth (OSError: cannot open checkpoint_ep2.pth); "
        "checkpoint_ep1.pth (OSError: cannot open checkpoint_ep1.pth). Fix: restore a good copy of one of them "
        "(unreadable ones were renamed *.damaged), or start the run again without --resume")


# ------------------------------------------------------------------------------------- old names


def test_old_names_are_the_run_folder_ones():
    from dcac_plugin import runner
    from dcac_plugin.benchmark import records, runfiles, suite
    from dcac_plugin.engine import base
    from dcac_plugin.utils import files

    assert runner.RESULTS_SCHEMA_VERSION == records.SCHEMA_VERSION == runfolder.SCHEMA_VERSION
    assert records.SCHEMA_VERSIONS is runfolder.SCHEMA_VERSIONS
    for name in ("CHECKPOINT_PATTERN", "DAMAGED_SUFFIX", "CheckpointError", "checkpoints", "latest_checkpoint",
                 "latest_loadable_checkpoint", "read_results"):
        assert getattr(files, name) is getattr(runfolder, name), name
    assert base.latest_checkpoint is runfolder.latest_checkpoint
    assert base.CHECKPOINT_PATTERN is runfolder.CHECKPOINT_PATTERN
    for name in ("FAILED_FILE", "RESULTS_FILE", "results_state", "clear_failure"):
        assert getattr(runfiles, name) is getattr(runfolder, name), name
    assert runfiles.read_json is runfolder.read_json_object
    assert suite.FAILED_FILE == FAILED_FILE and suite.RESULTS_FILE == RESULTS_FILE


def test_suite_and_launchers_share_run_entry_and_data_check_needs_no_benchmark_import():
    from dcac_plugin.benchmark import entries, launchers, suite

    assert suite.RunEntry is entries.RunEntry is launchers.RunEntry
    source = Path(__file__).resolve().parents[1] / "dcac_plugin" / "data" / "check.py"
    assert "dcac_plugin.benchmark" not in "".join(line for line in source.read_text().splitlines(True)
                                                  if "import" in line)
