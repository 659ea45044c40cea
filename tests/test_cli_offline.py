"""The `fastdiff` command starts without torch, and with no network and nothing cached says so in one line.

Each case runs the real console entry in a subprocess, so that `sys.modules` and stderr are the command's own.
"No network" is `HF_ENDPOINT` on a closed loopback port with an empty `HF_HOME`: every connection is refused at
once and nothing leaves this machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers")
# Runs `fastdiff ARGS...` and then prints which heavy libraries it imported (argparse's --help exits early).
RUN = f"""
import sys
from fastdiff.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:
    code = done.code
print("imported:", [name for name in {HEAVY!r} if name in sys.modules])
sys.exit(code)
"""


def fastdiff(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["batch", "--help"], ["generate", "--help"]])
def test_help_and_presets_do_not_import_torch(args: list[str]) -> None:
    done = fastdiff(*args)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout


@pytest.fixture
def unreachable_hub(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty hub cache and a hub on a closed local port (connection refused)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: nothing listens there
    return env


OFFLINE_COMMANDS = {
    "download": ["download", "sdxl-turbo"],
    "download-fp32": ["download", "sdxl-lightning-4step", "--dtype", "float32"],
    "generate": ["generate", "a cat", "--preset", "sdxl-turbo", "--output", "{tmp}/cat.png"],
    "batch": ["batch", "{tmp}/prompts.txt", "--preset", "sdxl-turbo", "--out", "{tmp}/run"],
    "demo": ["demo", "--preset", "sdxl-turbo"],
    "bench": ["bench", "--weights", "real", "--scenarios", "sdxl-turbo@1", "--no-progress"],  # real = hub
}


@pytest.mark.parametrize("name", list(OFFLINE_COMMANDS))
def test_unreachable_hub_is_one_line_before_torch_loads(
    name: str, unreachable_hub: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "prompts.txt").write_text("a cat\n")
    args = [arg.format(tmp=tmp_path) for arg in OFFLINE_COMMANDS[name]]
    start, cpu = time.perf_counter(), _children_cpu_seconds()
    done = fastdiff(*args, env=unreachable_hub)
    seconds, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "127.0.0.1:9 is unreachable" in lines[0] and "Run `fastdiff download sdxl-" in lines[0]
    assert "imported: []" in done.stdout  # the answer came before torch, diffusers and transformers loaded
    assert not (tmp_path / "run").exists()  # batch refused before it made its output folder
    # huggingface_hub's own retry loop backs off 1+2+4+8+8 s before giving up; 15 s catches it and leaves a busy
    # 2-core machine room (the command itself takes well under a second here). The CPU time the command used, which
    # other processes do not inflate, holds it to the 2 s: importing torch alone takes more.
    assert seconds < 15 and cpu < 2, (seconds, cpu)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("command", ["generate", "batch"])
def test_wrong_step_count_is_refused_before_the_weights_are_looked_for(
    command: str, unreachable_hub: dict[str, str], tmp_path: Path
) -> None:
    """A count the preset's checkpoint was not distilled for is the error, not the missing download it would need."""
    (tmp_path / "prompts.txt").write_text("a cat\n")
    where = (
        ["a cat", "--output", str(tmp_path / "cat.png")]
        if command == "generate"
        else [str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "run")]
    )
    done = fastdiff(command, *where, "--preset", "sdxl-lightning-4step", "--steps", "2", env=unreachable_hub)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == (
        "error: sdxl-lightning-4step runs exactly 4 steps (its checkpoint was distilled for that count), got steps=2; "
        "for 2 steps use sdxl-lightning-2step"
    )
    assert "imported: []" in done.stdout and not (tmp_path / "run").exists()


def test_hf_hub_offline_without_cache_is_one_line(unreachable_hub: dict[str, str]) -> None:
    done = fastdiff("download", "sd-turbo", "--dtype", "float16", env=unreachable_hub | {"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: sd-turbo: files not in the Hugging Face")
    assert "offline (HF_HUB_OFFLINE" in done.stderr and "`fastdiff download sd-turbo --dtype float16`" in done.stderr


def test_bench_hub_weights_unreachable_is_one_line(unreachable_hub: dict[str, str]) -> None:
    """The default scenarios: checked for every one before the first loads, and before torch."""
    done = fastdiff("bench", "--weights", "hub", "--device", "cpu", "--no-progress", env=unreachable_hub)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "imported: []" in done.stdout
    assert lines[0].startswith("error: sd15: files not in the Hugging Face cache and the hub at http://127.0.0.1:9")
