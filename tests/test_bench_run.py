"""The harness end to end on tiny models: rows, stage split, synchronization, outputs and the CLI."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from fastdiff.bench import runner, timing
from fastdiff.bench.cli import add_bench_arguments, run_bench
from fastdiff.bench.report import contended, format_table, pressured, to_markdown
from fastdiff.bench.runner import RunConfig, run_scenarios
from fastdiff.bench.scenarios import parse_scenario, parse_scenarios
from fastdiff.bench.sources import HubSource, Loaded, RandomSource, make_source
from fastdiff.devices import cpu_has_native_bf16

CPU = torch.device("cpu")
ROW_KEYS = {
    "scenario", "preset", "steps", "height", "width", "latency_s", "stages_s", "load_s", "warmup_s",
    "peak_memory_bytes", "gflops", "tflops_per_s", "images_per_s", "speedup_vs_baseline", "per_unet_call_s",
    "gflops_by_stage", "unet_calls",
}  # fmt: skip


def _source() -> RandomSource:
    return RandomSource(device=CPU, dtype=torch.float32, clock=timing.make_clock(CPU), tiny=True)


def _config(repeats: int = 2) -> RunConfig:
    # one thread: tiny ops gain nothing from more, and one thread is immune to other processes holding the cores
    return RunConfig(device=CPU, dtype=torch.float32, height=64, width=64, repeats=repeats, warmup=1, threads=1)


def test_rows_have_every_field_and_stages_add_up() -> None:
    scenarios = parse_scenarios(["sd15@2", "sdxl-turbo@1", "diffusers:sdxl-turbo@1", "sdxl-lightning@4"])
    ticks: list[int] = []
    rows = run_scenarios(scenarios, _source(), _config(), tick=lambda: ticks.append(1))
    assert len(ticks) == 4 * 3  # one per warm-up and timed run
    by_name = {row.scenario: row for row in rows}
    for row in rows:
        data = row.as_dict()
        assert set(data) >= ROW_KEYS
        assert set(data["latency_s"]) == {"p50", "p95", "min"} and set(data["stages_s"]) == {
            "encode",
            "denoise",
            "decode",
        }
        assert data["latency_s"]["min"] <= data["latency_s"]["p50"] <= data["latency_s"]["p95"]
        assert sum(row.stages_s.values()) == pytest.approx(row.latency_s["p50"], rel=0.25)
        assert row.gflops == pytest.approx(sum(row.gflops_by_stage.values())) and row.gflops > 0
        assert row.peak_memory_bytes > 0 and (row.height, row.width) == (64, 64) and row.warmup_s > 0
        assert row.threads == 1
    assert by_name["sd15@2"].speedup_vs_baseline == 1.0  # no sd15@20: the first row is the baseline
    assert by_name["sd15@2"].unet_calls == 3  # PNDM: N steps = N + 1 UNet calls, batch 2 under CFG
    assert by_name["sdxl-lightning@4"].unet_calls == 4
    assert by_name["diffusers:sdxl-turbo@1"].stages_method == "hooks"
    assert by_name["sdxl-turbo@1"].stages_method == "fastdiff"
    assert by_name["diffusers:sdxl-turbo@1"].load_shared and not by_name["sd15@2"].load_shared
    # FLOPs: CFG doubles the UNet batch, so one sd15 call costs about 2 turbo-wiring calls of the same tiny size
    turbo = by_name["sdxl-turbo@1"].gflops_by_stage["denoise"]
    assert by_name["sdxl-lightning@4"].gflops_by_stage["denoise"] == pytest.approx(4 * turbo)
    assert by_name["diffusers:sdxl-turbo@1"].gflops == pytest.approx(by_name["sdxl-turbo@1"].gflops)


def test_flow_rows_run_beside_unet_rows() -> None:
    """FLUX.1 [schnell] beside SD 1.5 and SDXL-Turbo in one run, from its shipped configs; its plain diffusers row
    makes the card's call (max_sequence_length=256), so both rows do the same work on the same weights."""
    names = ["sd15@2", "sdxl-turbo@1", "flux-schnell@4", "diffusers:flux-schnell@4"]
    rows = {row.scenario: row for row in run_scenarios(parse_scenarios(names), _source(), _config(repeats=1))}
    assert list(rows) == names
    flux, card = rows["flux-schnell@4"], rows["diffusers:flux-schnell@4"]
    assert flux.unet_calls == card.unet_calls == 4 and flux.per_unet_call_s > 0  # the transformer's calls
    assert all(flux.gflops_by_stage[stage] > 0 for stage in ("encode", "denoise", "decode"))
    assert card.gflops == pytest.approx(flux.gflops) and card.load_shared and card.stages_method == "hooks"
    assert flux.speedup_vs_diffusers is not None and not flux.load_shared


def test_a_row_that_cannot_fit_is_skipped_and_the_next_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 MB free: tiny FLUX's 27 MB of weights are refused through memory.check_fits, tiny SDXL's 11 MB run."""
    from fastdiff.bench import random_weights

    monkeypatch.setattr(random_weights, "available_memory", lambda device: 20 * 2**20)
    skipped: list[tuple[str, str]] = []
    scenarios = parse_scenarios(["flux-schnell@4", "sdxl-turbo@1"])
    rows = run_scenarios(scenarios, _source(), _config(repeats=1), on_skip=lambda s, why: skipped.append((s.name, why)))
    assert [row.scenario for row in rows] == ["sdxl-turbo@1"]
    assert [name for name, _ in skipped] == ["flux-schnell@4"] and "GiB free" in skipped[0][1]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap kept by glibc's malloc")
def test_released_weights_return_to_the_os_before_the_next_row_loads() -> None:
    # 8,000 blocks of 64 KiB (below glibc's mmap threshold, like most of a UNet's tensors) stay in the heap when
    # freed; the next row's memory check reads the OS's available memory, so the source must give them back.
    process = psutil.Process()
    before = process.memory_info().rss
    blocks = [torch.ones(16 * 1024) for _ in range(8000)]
    held = process.memory_info().rss - before
    assert held > 400 * 2**20
    del blocks
    source = RandomSource(device=torch.device("cpu"), dtype=torch.float32, clock=timing.make_clock(torch.device("cpu")))
    source.release()
    assert process.memory_info().rss - before < held / 4


def test_rows_of_the_same_work_run_interleaved_on_shared_weights() -> None:
    from diffusers import AutoencoderTiny

    from fastdiff.openvino_engine import OpenVINOForward

    names = ["diffusers:sdxl-turbo@1", "fastdiff:default:sdxl-turbo@1", "fastdiff:max:sdxl-turbo@1"]
    order: list[str] = []
    original = runner.ScenarioRun.run

    def recording(self: runner.ScenarioRun) -> float:
        order.append(self.scenario.name)
        return original(self)

    source = _source()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.ScenarioRun, "run", recording)
        rows = run_scenarios(parse_scenarios(["sd15@2", *names]), source, _config(repeats=3))
    d, f, m = names  # three rows: a balanced square takes 6 rounds, so 3 rounds see half of it
    assert order == ["sd15@2"] * 3 + [d, f, m, f, m, d, m, d, f]  # round by round, not row by row
    by_name = {row.scenario: row for row in rows}
    assert by_name["fastdiff:default:sdxl-turbo@1"].load_shared and by_name["fastdiff:max:sdxl-turbo@1"].load_shared
    assert by_name["diffusers:sdxl-turbo@1"].speedup_vs_diffusers == 1.0
    assert by_name["sd15@2"].speedup_vs_diffusers is None  # no diffusers row of its own
    for name in names[1:]:
        row = by_name[name]
        assert row.unet_calls == 1 and row.gflops > 0  # its own calls only, though the modules are shared
    # FLOPs are the math's: the optimized UNet counts as the stock one
    denoise = {name: by_name[name].gflops_by_stage["denoise"] for name in names}
    assert denoise[names[1]] == pytest.approx(denoise[names[0]]) == pytest.approx(denoise[names[2]])
    assert by_name[names[2]].gflops_by_stage["decode"] > 0  # the tiny VAE's decoder, counted as well
    loaded = source.load(parse_scenario(names[2]))
    assert isinstance(loaded.pipe.vae, AutoencoderTiny)
    assert loaded.generator is not None
    optimized = loaded.generator.recipe  # the level's own recipe: OpenVINO where installed, else torch
    assert isinstance(loaded.pipe.unet.forward, OpenVINOForward) == (optimized.engine == "openvino")
    source.release()


# Seconds each row's runs take on a fake clock: a warm-up, then 3 rounds. Per-round ratios to the diffusers row:
# default 4/2, 6/2, 5/4 → median 2.0 (the ratio of the medians would be 5/2 = 2.5); max 4/1, 6/1.5, 5/2.5 → 4.0.
FAKE_RUNS = {
    "diffusers:sdxl-turbo@1": [7.0, 4.0, 6.0, 5.0],
    "fastdiff:default:sdxl-turbo@1": [9.0, 2.0, 2.0, 4.0],
    "fastdiff:max:sdxl-turbo@1": [3.0, 1.0, 1.5, 2.5],
}


def test_speedup_is_the_median_of_per_round_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    durations = {name: iter(runs) for name, runs in FAKE_RUNS.items()}

    def fake_call(run: runner.ScenarioRun, prompt: str, seed: int) -> None:  # loaded as usual, not run
        now[0] += next(durations[run.scenario.name])

    monkeypatch.setattr(runner.ScenarioRun, "_call", fake_call)
    monkeypatch.setattr(runner, "make_clock", lambda device: lambda: now[0])
    rows = {r.scenario: r for r in run_scenarios(parse_scenarios(list(FAKE_RUNS)), _source(), _config(repeats=3))}
    assert [rows[name].runs_s for name in FAKE_RUNS] == [runs[1:] for runs in FAKE_RUNS.values()]
    assert [rows[name].warmup_s for name in FAKE_RUNS] == [7.0, 9.0, 3.0]
    assert rows["diffusers:sdxl-turbo@1"].latency_s == {"p50": 5.0, "p95": pytest.approx(5.9), "min": 4.0}
    assert rows["fastdiff:default:sdxl-turbo@1"].speedup_vs_diffusers == pytest.approx(2.0)
    assert rows["fastdiff:max:sdxl-turbo@1"].speedup_vs_diffusers == pytest.approx(4.0)
    assert rows["diffusers:sdxl-turbo@1"].speedup_vs_diffusers == 1.0
    assert rows["fastdiff:default:sdxl-turbo@1"].speedup_vs_baseline == pytest.approx(2.5)  # p50s: 5 / 2
    assert rows["fastdiff:max:sdxl-turbo@1"].images_per_s == pytest.approx(1 / 1.5)


def test_rows_that_waited_for_memory_or_shared_the_cpu_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain diffusers' row re-reads its evicted weights while kswapd reclaims memory on the other core, so its
    time and every "vs diffusers" ratio are off. The table says so, naming the row, instead of only the ratios."""
    now, faulted, busy, own = [0.0], [0], [0.0], [0.0]
    runs = {  # seconds per run, pages read back from disk, cores other tasks kept busy
        "diffusers:sdxl-turbo@1": (8.0, 50_000, 0.5),
        "fastdiff:default:sdxl-turbo@1": (2.0, 20, 0.05),
        "fastdiff:max:sdxl-turbo@1": (1.0, 0, 0.0),
    }

    def faulting_call(run: runner.ScenarioRun, prompt: str, seed: int) -> None:
        seconds, faults, others = runs[run.scenario.name]
        now[0] += seconds
        faulted[0] += faults
        own[0] += 2 * seconds  # our two threads
        busy[0] += 2 * seconds + others * seconds

    monkeypatch.setattr(runner.ScenarioRun, "_call", faulting_call)
    monkeypatch.setattr(runner, "make_clock", lambda device: lambda: now[0])
    monkeypatch.setattr(timing, "major_faults", lambda: faulted[0])
    monkeypatch.setattr(timing, "busy_cpu_seconds", lambda: busy[0])
    monkeypatch.setattr(timing.time, "process_time", lambda: own[0])
    rows = {r.scenario: r for r in run_scenarios(parse_scenarios(list(runs)), _source(), _config(repeats=2))}
    assert [rows[n].major_faults for n in runs] == [50_000, 20, 0]
    assert [rows[n].other_cpu_cores for n in runs] == [pytest.approx(0.5), pytest.approx(0.05), 0.0]
    assert [pressured(rows[n]) for n in runs] == [True, False, False]  # 50,000 pages; 20 (a library's); none
    assert [contended(rows[n]) for n in runs] == [True, False, False]
    meta = {"device": "cpu", "dtype": "float32", "weights": "tiny", "size": "64x64", "repeats": 2, "warmup": 1,
            "torch": "x", "diffusers": "x", "date": "x"}  # fmt: skip
    table = format_table(list(rows.values()), meta)
    notes = [line for line in table.splitlines() if line.startswith(("memory pressure", "shared CPU"))]
    assert len(notes) == 2
    assert notes[0].startswith("memory pressure: diffusers:sdxl-turbo@1 read 50000 pages back from disk per")
    assert notes[1].startswith("shared CPU: while diffusers:sdxl-turbo@1 ran, other tasks kept 0.50 cores busy")
    assert "> memory pressure: diffusers:sdxl-turbo@1" in to_markdown(list(rows.values()), meta)
    monkeypatch.setattr(timing, "major_faults", lambda: None)  # no getrusage, no CPU times: nothing claimed
    monkeypatch.setattr(timing, "busy_cpu_seconds", lambda: None)
    unmeasured = run_scenarios(parse_scenarios(list(runs)), _source(), _config(repeats=2))
    assert all(row.major_faults is None and row.other_cpu_cores is None for row in unmeasured)
    assert not any(pressured(row) or contended(row) for row in unmeasured)
    assert "memory pressure" not in format_table(unmeasured, meta)


def test_interleaved_rows_share_one_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # The idle-core count changes between calls (kswapd runnable at one moment, not the next): rows compared
    # round by round must still run on the same number of threads.
    counts = iter([1, 2, 2, 2, 2, 2])
    monkeypatch.setattr(runner, "auto_cpu_threads", lambda: next(counts))
    config = RunConfig(device=CPU, dtype=torch.float32, height=64, width=64, repeats=1, warmup=0)
    names = ["diffusers:sdxl-turbo@1", "fastdiff:default:sdxl-turbo@1", "fastdiff:max:sdxl-turbo@1"]
    rows = run_scenarios(parse_scenarios(names), _source(), config)
    assert [row.threads for row in rows] == [1, 1, 1]


def test_every_clock_read_is_synchronized(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def recording_clock(device: torch.device) -> timing.Clock:
        def sync(dev: torch.device) -> None:
            assert dev == device
            events.append("sync")

        def timer() -> float:
            events.append("read")
            return float(len(events))

        return timing.make_clock(device, sync=sync, timer=timer)

    monkeypatch.setattr(runner, "make_clock", recording_clock)
    run_scenarios([parse_scenario("sdxl-turbo@1")], _source(), _config(repeats=2))
    assert events[::2] == ["sync"] * (len(events) // 2) and events[1::2] == ["read"] * (len(events) // 2)
    # per timed run: 2 reads around the run + 2 per hooked call (2 text encoders, 1 UNet, post_quant_conv, decoder)
    assert len(events) // 2 >= 2 * (2 + 2 * 5)


def test_hub_source_times_cold_loads_and_shares_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdiff import FewStepGenerator
    from fastdiff.testing.tiny import tiny_pipeline

    loads: list[str] = []
    now = [0.0]
    load_seconds = {"sdxl-turbo": 3.0, "sd15": 5.0}  # what each load takes on a fake clock

    def from_preset(preset: Any, **kwargs: Any) -> FewStepGenerator:
        loads.append(preset.name)
        now[0] += load_seconds[preset.name]
        return FewStepGenerator.from_pipeline(preset, tiny_pipeline(preset.family))

    monkeypatch.setattr(FewStepGenerator, "from_preset", from_preset)
    source = HubSource(device=CPU, dtype=torch.float32, clock=lambda: now[0])
    first: Loaded = source.load(parse_scenario("sdxl-turbo@1"))
    again = source.load(parse_scenario("sdxl-turbo@4"))
    other = source.load(parse_scenario("sd15@2"))
    assert loads == ["sdxl-turbo", "sd15"]
    assert not first.shared and again.shared and not other.shared
    assert (first.load_s, again.load_s, other.load_s) == (3.0, 3.0, 5.0)  # a shared load reports the cold one
    source.release()


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    base = ["--weights", "tiny", "--device", "cpu", "--height", "64", "--repeats", "1", "--warmup", "0"]
    return parser.parse_args([*base, "--no-progress", "--threads", "1", *extra])


def test_cli_writes_json_markdown_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = {name: tmp_path / name for name in ("out.json", "out.md", "out.png")}
    args = _args(
        tmp_path, "--scenarios", "sd15@2", "sdxl-turbo@1", "--json", str(out["out.json"]),
        "--markdown", str(out["out.md"]), "--plot", str(out["out.png"]), "--log-scale",
    )  # fmt: skip
    assert run_bench(args) == 0
    data = json.loads(out["out.json"].read_text())
    assert {"device", "torch", "diffusers", "fastdiff", "weights", "dtype", "commit", "date"} <= set(data["meta"])
    assert data["meta"]["weights"] == "tiny" and data["meta"]["size"] == "64x64"
    assert [row["scenario"] for row in data["rows"]] == ["sd15@2", "sdxl-turbo@1"]
    assert "| sdxl-turbo@1 |" in out["out.md"].read_text()
    assert out["out.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "sd15@2" in table and "speedup" in table and "toy widths" in table
    # The CPU's own ceiling, measured: fp32 always, bf16 where the CPU computes it natively.
    rates = data["meta"]["cpu_matmul_tflops"]
    assert set(rates) == {"float32", *(("bfloat16",) if cpu_has_native_bf16() else ())}
    assert all(0 < rate < 100 for rate in rates.values())
    assert f"matmul TFLOP/s: float32 {rates['float32']:.3f}" in table and "matmul TFLOP/s" in out["out.md"].read_text()
    again = tmp_path / "again.md"  # re-render from the JSON, without running anything
    assert run_bench(_args(tmp_path, "--from-json", str(out["out.json"]), "--markdown", str(again))) == 0
    assert again.read_text() == out["out.md"].read_text()
    assert run_bench(_args(tmp_path, "--from-json", str(tmp_path / "missing.json"))) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--scenarios", "sdxl-turbo@9"), "runs 1-4 steps"),
        (("--width", "100"), "multiple of 8"),
        (("--repeats", "0"), "≥ 1"),
        (("--weights-dir", "somewhere"), "--weights-dir is for --weights random"),
    ],
)
def test_cli_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    assert run_bench(_args(tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err


def test_hub_weights_from_a_cache(tmp_path: Path, no_network: None) -> None:
    from fastdiff.testing import make_hf_cache

    cache = make_hf_cache(tmp_path / "hub", ["sdxl-turbo"])
    source = make_source("hub", device=CPU, dtype=torch.float32, clock=timing.make_clock(CPU), cache_dir=cache)
    scenarios = parse_scenarios(["sdxl-turbo@1", "sdxl-turbo@2", "diffusers:sdxl-turbo@1"])
    rows = run_scenarios(scenarios, source, _config(repeats=1))
    assert [(r.scenario, r.load_shared) for r in rows] == [
        ("sdxl-turbo@1", False),
        ("sdxl-turbo@2", True),
        ("diffusers:sdxl-turbo@1", False),  # the card's from_pretrained, loaded (and timed) on its own
    ]
    assert all(r.load_s > 0 and r.unet_calls >= 1 for r in rows)
    assert rows[1].load_s == rows[0].load_s  # the shared row reports the load it shared, not a second one
