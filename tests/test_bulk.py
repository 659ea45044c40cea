"""`fastdiff batch`: prompt files, seeds, images equal to direct calls, resume after SIGKILL, refusals, workers."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fastdiff import FastDiffError, GenerationResult, presets
from fastdiff.serving.bulk.cli import add_batch_arguments, main, run_batch
from fastdiff.serving.bulk.manifest import RunDir, image_name
from fastdiff.serving.bulk.prompts import Job, make_jobs, prompts_sha256, read_prompt_file
from fastdiff.serving.bulk.worker import LoadSpec, Worker

PRESET = "sdxl-turbo"
SIZE = ["--height", "64", "--width", "64"]


def batch_argv(prompts: Path, out: Path, hub_cache: Path, *extra: str, preset: str = PRESET) -> list[str]:
    """The arguments of a quiet tiny run (sdxl-turbo unless `preset` names another) at 64x64 on the CPU from the test
    cache (one torch thread, as in conftest: tiny models run faster on one)."""
    return [
        str(prompts),
        *["--preset", preset, "--out", str(out), "--cache-dir", str(hub_cache), "--local-files-only"],
        *["--device", "cpu", "--optimize", "none", "--threads", "1", "--no-progress", *SIZE, *extra],
    ]


def run(prompts: Path, out: Path, hub_cache: Path, *extra: str, preset: str = PRESET) -> int:
    parser = argparse.ArgumentParser()
    add_batch_arguments(parser)
    return run_batch(parser.parse_args(batch_argv(prompts, out, hub_cache, *extra, preset=preset)))


def write_txt(path: Path, prompts: list[str]) -> Path:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def pixels(image: Image.Image | Path) -> np.ndarray:
    img = Image.open(image) if isinstance(image, Path) else image
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def assert_complete(out: Path, count: int) -> list[dict[str, Any]]:
    """Every index once in the manifest, each file in place with its hash, and no temp file left."""
    entries = manifest(out)
    assert sorted(e["index"] for e in entries) == list(range(count))
    for entry in entries:
        assert entry["file"] == image_name(entry["index"])
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    return entries


# --- the prompt file ----------------------------------------------------------------------------------------------


def test_txt_skips_blank_lines_and_strips(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n   \n  a dog  \r\na fox", encoding="utf-8")
    assert read_prompt_file(path) == [{"prompt": "a cat"}, {"prompt": "a dog"}, {"prompt": "a fox"}]


def test_jsonl_seeds_are_base_plus_index_unless_a_line_names_one(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [{"prompt": "a"}, {"prompt": "b", "seed": 7, "steps": 2}, {"prompt": "c", "negative_prompt": None}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    jobs = make_jobs(read_prompt_file(path), base_seed=100, defaults={"steps": 1, "height": 64, "width": None})
    assert [(j.index, j.prompt, j.seed) for j in jobs] == [(0, "a", 100), (1, "b", 7), (2, "c", 102)]
    one, two = {"steps": 1, "height": 64}, {"steps": 2, "height": 64}
    assert [j.options for j in jobs] == [one, two, one]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "p.jsonl",
            '{"prompt": "a"}\n\n{"prompt": "b", "sed": 3}\n',
            r"p.jsonl line 3: unknown key 'sed'; did you mean 'seed'",
        ),
        ("p.jsonl", '{"prompt": "a"\n', r"line 1: not JSON"),
        ("p.jsonl", '["a cat"]\n', r"line 1: expected a JSON object"),
        ("p.jsonl", '{"seed": 1}\n', r'line 1: every line needs a "prompt" string'),
        ("p.jsonl", '{"prompt": "a", "seed": true}\n', r"'seed' must be a int, got True"),
        ("p.jsonl", '{"prompt": "a", "guidance_scale": "high"}\n', r"'guidance_scale' must be a float"),
        ("p.txt", "\n  \n", r"holds no prompt"),
        ("p.csv", "a cat\n", r"must end in .txt \(one prompt a line\) or .jsonl"),
    ],
)
def test_bad_prompt_files_are_refused_with_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FastDiffError, match=message):
        read_prompt_file(path)


def test_missing_prompt_file(tmp_path: Path) -> None:
    with pytest.raises(FastDiffError, match="does not exist"):
        read_prompt_file(tmp_path / "nope.txt")


def test_prompt_hash_ignores_layout_not_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"prompt": "x", "seed": 1}\n', encoding="utf-8")
    b.write_text('\n{"seed":1,"prompt":"x"}\n\n', encoding="utf-8")
    assert prompts_sha256(read_prompt_file(a)) == prompts_sha256(read_prompt_file(b))
    assert prompts_sha256([{"prompt": "x"}]) != prompts_sha256([{"prompt": "x "}])


# --- the output folder --------------------------------------------------------------------------------------------

HEADER = {"settings": {"preset": "sdxl-turbo"}, "count": 3, "prompts_sha256": "abc"}


def test_resume_repairs_a_torn_line_a_changed_image_and_temp_files(tmp_path: Path) -> None:
    run_dir = RunDir.open(tmp_path, header=HEADER)
    for index in range(3):
        run_dir.record({"index": index, "prompt": "p"}, f"png {index}".encode())
    run_dir.close()
    with (tmp_path / "manifest.jsonl").open("a", encoding="utf-8") as file:
        file.write('{"index": 1, "prom')  # killed mid-append
    (tmp_path / image_name(2)).write_bytes(b"changed by hand")
    (tmp_path / ".000002.png.1a2b3c4d.tmp").write_bytes(b"half an image")
    resumed = RunDir.open(tmp_path, header=HEADER)
    resumed.close()
    assert sorted(resumed.done) == [0, 1]
    assert [e["index"] for e in manifest(tmp_path)] == [0, 1]
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FastDiffError, match=r"a different prompt list \(3 prompts then, 4 now\).*--force"):
        RunDir.open(tmp_path, header={**HEADER, "count": 4, "prompts_sha256": "abd"})
    with pytest.raises(FastDiffError, match=r"--preset 'sdxl-turbo' \(now 'sd-turbo'\)"):
        RunDir.open(tmp_path, header={**HEADER, "settings": {"preset": "sd-turbo"}})


def test_a_folder_of_images_without_a_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "000000.png").write_bytes(b"someone's image")
    with pytest.raises(FastDiffError, match=r"holds images but no run.json; use another --out, or --force"):
        RunDir.open(tmp_path, header=HEADER)
    RunDir.open(tmp_path, header=HEADER, force=True).close()
    assert not (tmp_path / "000000.png").exists()


# --- whole runs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "batch_size"), [(PRESET, "1"), (PRESET, "2"), ("flux-schnell", "2")])
def test_images_equal_direct_calls_and_the_manifest_says_how(
    tmp_path: Path,
    hub_cache: Path,
    load: Any,
    small_sizes: None,
    capsys: pytest.CaptureFixture[str],
    preset: str,
    batch_size: str,
) -> None:
    prompts = tmp_path / "p.jsonl"
    lines = [{"prompt": "a red fox"}, {"prompt": "a green frog"}, {"prompt": "a blue bird", "seed": 42, "steps": 2}]
    prompts.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache, "--seed", "10", "--batch-size", batch_size, preset=preset) == 0
    assert "made 3, skipped 0 (done before), failed 0" in capsys.readouterr().out
    entries = sorted(assert_complete(out, 3), key=lambda e: e["index"])
    made = [(e["seed"], e["steps"], e["preset"]) for e in entries]
    default = presets.get(preset).default_steps
    assert made == [(10, default, preset), (11, default, preset), (42, 2, preset)]  # --batch-size 2: two in one call
    assert entries[0]["prompt"] == "a red fox" and set(entries[0]["timings"]) >= {"encode", "denoise", "total"}
    gen = load(preset)
    for entry in entries:
        direct = gen(entry["prompt"], seed=entry["seed"], steps=entry["steps"], height=64, width=64).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


def test_rerun_skips_what_is_done_refuses_another_run_and_force_starts_over(
    tmp_path: Path, hub_cache: Path, small_sizes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["one", "two"])
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache) == 0
    first = (out / "000001.png").stat().st_mtime_ns
    assert run(prompts, out, hub_cache) == 0
    assert "made 0, skipped 2" in capsys.readouterr().out
    assert (out / "000001.png").stat().st_mtime_ns == first
    with pytest.raises(FastDiffError, match=r"made by another run: it used a different prompt list"):
        run(write_txt(prompts, ["one", "two", "three"]), out, hub_cache)
    with pytest.raises(FastDiffError, match=r"--steps unset \(now 2\)"):
        run(write_txt(prompts, ["one", "two"]), out, hub_cache, "--steps", "2")
    assert run(write_txt(prompts, ["three"]), out, hub_cache, "--force") == 0
    assert [e["prompt"] for e in assert_complete(out, 1)] == ["three"]
    assert not (out / "000001.png").exists()


def test_a_refused_prompt_fails_alone_and_is_retried_next_time(
    tmp_path: Path, hub_cache: Path, small_sizes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": "too many", "steps": 9}\n{"prompt": "fine too"}\n')
    out = tmp_path / "out"
    assert run(prompts, out, hub_cache) == 1
    captured = capsys.readouterr()
    assert "error: prompt 1 'too many':" in captured.err and "made 2, skipped 0 (done before), failed 1" in captured.out
    assert sorted(e["index"] for e in manifest(out)) == [0, 2]
    assert run(prompts, out, hub_cache) == 1
    assert "made 0, skipped 2 (done before), failed 1" in capsys.readouterr().out


@pytest.mark.parametrize(("preset", "workers"), [(PRESET, "2"), ("flux-schnell", "1")])
def test_sigkill_mid_run_loses_nothing_and_a_rerun_finishes_it(
    tmp_path: Path, hub_cache: Path, load: Any, small_sizes: None, preset: str, workers: str
) -> None:
    """Killed part-way, then resumed (sdxl-turbo by two spawned workers; FLUX in this process, to stay fast)."""
    count = 16
    prompts = write_txt(tmp_path / "p.txt", [f"prompt number {i}" for i in range(count)])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "fastdiff.serving.bulk.cli", *batch_argv(prompts, out, hub_cache, preset=preset)]
    with (tmp_path / "stderr.txt").open("wb") as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        written = _wait_for_lines(out / "manifest.jsonl", at_least=2, child=child)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert 2 <= written < count, (tmp_path / "stderr.txt").read_text()
    for path in out.glob("[0-9]*.png"):  # whatever has a final name is a whole image
        Image.open(path).load()
    # The rest is made by the rerun (with two worker processes: the images of one), i.e. of direct calls.
    assert run(prompts, out, hub_cache, "--workers", workers, preset=preset) == 0
    gen = load(preset)
    for entry in assert_complete(out, count):
        direct = gen(entry["prompt"], seed=entry["seed"], height=64, width=64).images[0]
        assert np.abs(pixels(out / entry["file"]) - pixels(direct)).max() <= 1


def _wait_for_lines(path: Path, *, at_least: int, child: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= at_least:
            return lines
        time.sleep(0.002)
    raise AssertionError(f"the batch never wrote {at_least} manifest lines (exit status {child.poll()})")


def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a cat"])
    assert main([str(prompts), "--preset", "sdxl_turbo", "--out", str(tmp_path / "out")]) == 2
    assert "error: unknown preset 'sdxl_turbo'; did you mean 'sdxl-turbo'?" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_missing_names_the_extra(tmp_path: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is not installed
    with pytest.raises(FastDiffError, match=r'--ray needs Ray: pip install "fastdiff\[ray\]"'):
        run(write_txt(tmp_path / "p.txt", ["a cat"]), tmp_path / "out", hub_cache, "--ray")


class StubGenerator:
    """Stands in for a generator in `Worker` (no model): records calls, refuses steps=9 like the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def _result(self, seed: int, options: dict[str, Any]) -> GenerationResult:
        if options.get("steps") == 9:
            raise FastDiffError("sdxl-turbo runs 1-4 steps")
        image = Image.new("RGB", (8, 8), (seed % 256, 0, 0))
        return GenerationResult([image], seed, options.get("steps", 1), "sdxl-turbo", 0.0, 8, 8, {"total": 0.1})

    def __call__(self, prompt: str, *, seed: int, **options: Any) -> GenerationResult:
        self.calls.append(("call", (prompt,)))
        return self._result(seed, options)

    def map(self, prompts: list[str], *, seeds: list[int], batch_size: int, progress: bool, **options: Any) -> Any:
        self.calls.append(("map", tuple(prompts)))
        return [self._result(seed, options) for seed in seeds]


def test_batches_go_through_map_per_run_of_equal_options_and_a_refusal_fails_alone() -> None:
    worker = Worker(LoadSpec(preset="sdxl-turbo", batch_size=4))
    stub = StubGenerator()
    worker._gen = stub  # type: ignore[assignment]
    options = [{}, {}, {"steps": 9}, {"steps": 9}, {"steps": 2}]
    jobs = [Job(index=i, prompt=f"p{i}", seed=10 + i, options=o) for i, o in enumerate(options)]
    made = worker.make(jobs)
    assert [o.index for o in made.outcomes] == [0, 1, 2, 3, 4]
    assert [o.error is not None for o in made.outcomes] == [False, False, True, True, False]
    assert [o.seed for o in made.outcomes if o.error is None] == [10, 11, 14]
    fallback = [("call", ("p2",)), ("call", ("p3",))]  # the refused batch, one by one
    assert stub.calls == [("map", ("p0", "p1")), ("map", ("p2", "p3")), *fallback, ("call", ("p4",))]
    with Image.open(io.BytesIO(made.outcomes[1].png)) as img:
        assert img.getpixel((0, 0)) == (11, 0, 0)


def test_a_worker_that_cannot_load_stops_the_run_with_its_error(tmp_path: Path, hub_cache: Path) -> None:
    prompts = write_txt(tmp_path / "p.txt", ["a cat"])
    with pytest.raises(FastDiffError, match="does not exist"):
        run(prompts, tmp_path / "out", hub_cache, "--source", str(tmp_path / "no-such-model"))
    assert not (tmp_path / "out" / "manifest.jsonl").read_text()
