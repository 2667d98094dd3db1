"""s2unet.io: atomic writes that name the real file, all-or-none result sets, the folder lock,
and CSV cells that a spreadsheet cannot run as formulas."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2unet.inference.outputs import write_csv
from s2unet.io import OutputError, all_or_none, atomic_path, exclusive_lock

REPO = Path(__file__).resolve().parents[1]


def test_full_disk_names_the_final_file_and_leaves_no_temporary(tmp_path: Path, disk_full_at) -> None:
    disk_full_at("summary.json")
    with pytest.raises(OSError, match="No space left") as err:
        with atomic_path(tmp_path / "summary.json") as tmp:
            tmp.write_text("{}")
    assert err.value.filename == str(tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []


def test_all_or_none_removes_the_set_when_a_later_file_fails(tmp_path: Path, disk_full_at) -> None:
    files = [tmp_path / "table.csv", tmp_path / "summary.json"]
    (tmp_path / "unrelated.txt").write_text("kept")
    disk_full_at("summary.json")
    with pytest.raises(OSError), all_or_none(files):
        for path in files:
            with atomic_path(path) as tmp:
                tmp.write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["unrelated.txt"]


def test_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with exclusive_lock(lock, "run directory x"):
        with pytest.raises(OutputError, match=rf"run directory x is in use by process {os.getpid()}"):
            with exclusive_lock(lock, "run directory x"):
                pass
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from s2unet.io import OutputError, exclusive_lock\n"
             "try:\n    exclusive_lock(sys.argv[1], 'run directory x').__enter__()\n"
             "except OutputError as exc:\n    print(exc)\n", str(lock)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )
        assert f"in use by process {os.getpid()}" in other.stdout, other.stderr
    assert not lock.exists()  # a clean finish leaves no stale lock file
    with exclusive_lock(lock, "run directory x"):  # released at the end of the block
        pass
    with pytest.raises(RuntimeError), exclusive_lock(lock, "run directory x"):
        raise RuntimeError("a failed run")
    assert not lock.exists()


def test_a_lock_file_removed_by_its_holder_meanwhile_is_not_locked(tmp_path: Path, monkeypatch) -> None:
    """The holder finishes (and removes the file) between this process's open and its flock:
    this process must lock the file the name holds now, not the removed one a third process
    would never see."""
    import fcntl

    lock, real_flock, calls = tmp_path / ".lock", fcntl.flock, []

    def holder_finishes_first(fd, op):
        if not calls:
            lock.unlink()
        calls.append(op)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", holder_finishes_first)
    with exclusive_lock(lock, "run directory x"):
        assert len(calls) == 2 and lock.read_text() == f"{os.getpid()}\n"
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(OutputError, match="in use by process"):
            with exclusive_lock(lock, "run directory x"):
                pass


def test_csv_escapes_formula_text_but_not_numbers(tmp_path: Path) -> None:
    rows = [{"case": "=HYPERLINK(\"http://x\")", "dice": -0.5, "n": -3, "a": "+1", "b": "-1", "c": "@SUM(A1)",
             "d": "\tx", "e": "case-01", "=col": "ok"}]
    write_csv(tmp_path / "m.csv", rows)
    with (tmp_path / "m.csv").open(newline="") as f:
        header, values = list(csv.reader(f))
    assert header == ["case", "dice", "n", "a", "b", "c", "d", "e", "'=col"]
    assert values == ["'=HYPERLINK(\"http://x\")", "-0.5", "-3", "'+1", "'-1", "'@SUM(A1)", "'\tx", "case-01", "ok"]


# ------------------------------------------------------------------------------------- JSON
def test_json_writers_never_write_nan_and_name_the_file(tmp_path: Path) -> None:
    import json

    import numpy as np

    from s2unet.engine.records import MetricLog
    from s2unet.io import write_json

    data = {"threshold": float("nan"), "metrics": {"hd95": [1.0, float("inf")], "dice": np.float32(0.5)}, "n": np.int64(3)}
    with pytest.warns(UserWarning, match=r"summary\.json: non-finite value\(s\) written as null.*threshold, metrics\.hd95\[1\]"):
        write_json(tmp_path / "summary.json", data)
    text = (tmp_path / "summary.json").read_text()
    # A strict reader (no NaN/Infinity constants) accepts the file; numpy scalars are numbers.
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert strict == {"threshold": None, "metrics": {"hd95": [1.0, None], "dice": 0.5}, "n": 3}
    log = MetricLog(tmp_path)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: .*loss"):
        log.append({"step": 1, "loss": float("nan")})
    assert json.loads(log.path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {"step": 1, "loss": None}
