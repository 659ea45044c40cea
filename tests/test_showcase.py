"""`fastdiff showcase`, the README's main job: both shipped models, offline, a table, a side-by-side PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from fastdiff.bench import timing
from fastdiff.cli import main


def _other_processes_use(monkeypatch: pytest.MonkeyPatch, cores: float) -> None:
    """A fake /proc/stat reading: the machine's busy CPU seconds are this process's plus `cores` more per second."""
    monkeypatch.setattr(timing, "busy_cpu_seconds", lambda: time.process_time() + cores * time.perf_counter())


@pytest.mark.usefixtures("no_network")
def test_showcase_compares_teacher_and_student_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _other_processes_use(monkeypatch, 0.0)  # the machine to itself (the test machine may not be: see below)
    out = tmp_path / "showcase"
    assert main(["showcase", "--out", str(out), "--prompts", "3"]) == 0
    printed = capsys.readouterr().out
    teacher = next(line for line in printed.splitlines() if line.startswith("| fastdiff-shapes-teacher | 20 |"))
    student = next(line for line in printed.splitlines() if line.startswith("| fastdiff-shapes | 1 |"))
    assert "| 1.0× |" in teacher and "fastdiff bench --weights random" in printed and "busy" not in printed
    record = json.loads((out / "showcase.json").read_text())
    assert record["busy"] is False
    rows = {row["preset"]: row for row in record["rows"]}
    assert len(record["prompts"]) == 3 and set(rows) == {"fastdiff-shapes-teacher", "fastdiff-shapes"}
    # 21 guided UNet calls against one: the student must be the faster, by far, on any machine.
    speedup = rows["fastdiff-shapes-teacher"]["seconds"] / rows["fastdiff-shapes"]["seconds"]
    assert speedup > 3 and f"| {speedup:.1f}× |" in student
    for row in rows.values():
        assert set(row["scores"]) >= {"all", "shape", "color", "background", "position"}
        assert all(0.0 <= v <= 1.0 for v in row["scores"].values())
    # The same comparison on held-out prompts: combinations the recipe never trained on, a table of their own.
    assert "3 held-out prompts (combinations of the grammar's words never trained on)" in printed
    held_out = record["held_out"]
    assert len(held_out["prompts"]) == 3 and not set(held_out["prompts"]) & set(record["prompts"])
    assert [row["preset"] for row in held_out["rows"]] == ["fastdiff-shapes-teacher", "fastdiff-shapes"]
    tables = [line for line in printed.splitlines() if line.startswith("| fastdiff-shapes | 1 |")]
    assert len(tables) == 2  # one student row per prompt set
    for sheet_path in (out / "side-by-side.png", out / "side-by-side-held-out.png"):
        with Image.open(sheet_path) as sheet:
            assert sheet.width == 3 * 256 and sheet.height > 2 * 256  # 3 prompts, two rows of 4×-enlarged images
    images = sorted((out / "fastdiff-shapes").glob("*.png"))
    assert len(images) == 3 and len(list((out / "fastdiff-shapes-held-out").glob("*.png"))) == 3
    with Image.open(images[0]) as first:
        colours = first.getcolors(maxcolors=4096)  # None: more than 4096
        assert first.size == (64, 64) and (colours is None or len(colours) > 10)  # a picture, not a flat square


def test_showcase_refuses_a_prompt_count_outside_the_fixed_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["showcase", "--prompts", "49"]) == 2
    assert "--prompts must be 1-48" in capsys.readouterr().err


@pytest.mark.usefixtures("no_network")
def test_showcase_on_a_busy_machine_shows_no_speedup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _other_processes_use(monkeypatch, 1.5)
    assert main(["showcase", "--out", str(tmp_path), "--prompts", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| fastdiff-shapes")]
    assert len(rows) == 4 and all("| — |" in row and "×" not in row for row in rows)  # no ratio it could not measure
    note = next(line for line in printed.splitlines() if line.startswith("note: other processes kept CPU cores busy"))
    assert (
        "fastdiff-shapes-teacher 1.5" in note and "fastdiff-shapes 1.5" in note and "when the machine is idle" in note
    )
    record = json.loads((tmp_path / "showcase.json").read_text())
    assert record["busy"] is True and all(row["other_cores"] == pytest.approx(1.5, abs=0.05) for row in record["rows"])
