"""Benchmark scenarios: `PRESET@STEPS` (`sd15@20`; a family picks its preset for the steps, `sdxl-lightning@4`)
run by fastdiff at `optimize="none"` (diffusers' own computation), `fastdiff:LEVEL[+FORMAT]:PRESET@STEPS` at that
level (with `Optimizations.openvino_weights`), `diffusers:` as the repo's own snippet, or `openvino:` as that
snippet with its modules compiled by plain OpenVINO (the peer fastdiff's CPU speed is measured against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import presets as preset_table
from ..cli_options import OPTIMIZE_LEVELS as LEVELS  # torch-free: parsed before `fastdiff bench` checks the hub
from ..errors import FastDiffError, did_you_mean
from ..presets import Preset

__all__ = ["BASELINE", "DEFAULT_SCENARIOS", "OPTIONAL_SCENARIOS", "Scenario", "parse_scenario", "parse_scenarios"]

Runner = Literal["fastdiff", "diffusers", "openvino"]

# The seed's claim compares these: SD 1.5 at 20 steps with CFG 7.5 and its own PNDM scheduler is the baseline.
BASELINE = "sd15@20"
DEFAULT_SCENARIOS: tuple[str, ...] = (
    BASELINE,
    "sdxl-turbo@4",
    "sdxl-turbo@1",  # the four sdxl-turbo@1 rows run interleaved, on the same weights
    "diffusers:sdxl-turbo@1",  # what users would write instead of fastdiff
    "fastdiff:default:sdxl-turbo@1",  # the speedups, measured beside it (interleaved, same weights)
    "fastdiff:max:sdxl-turbo@1",
    "sdxl-lightning@1",  # the 1-step x0 UNet
    "sdxl-lightning@4",
)
OPTIONAL_SCENARIOS: tuple[str, ...] = ("sd-turbo@1", "sdxl-lightning@2", "sdxl-lightning@8", "flux-schnell@4")


@dataclass(frozen=True)
class Scenario:
    """One row of the benchmark: `preset` run for `steps` steps by `runner`."""

    name: str
    preset: Preset
    steps: int
    runner: Runner = "fastdiff"
    optimize: str = "none"  # fastdiff rows: the optimize level
    openvino_weights: str | None = None  # fastdiff rows: `Optimizations.openvino_weights` ("int8", "int8-full")


def _resolve_preset(name: str, steps: int | None) -> Preset:
    known = preset_table.names()
    if name in known:
        return preset_table.get(name)
    if steps is not None and f"{name}-{steps}step" in known:
        return preset_table.get(f"{name}-{steps}step")
    by_family: dict[str, list[str]] = {}
    for n in known:
        family, _, last = n.rpartition("-")
        if last.endswith("step") and last[:-4].isdigit():
            by_family.setdefault(family, []).append(last[:-4])
    if name in by_family:
        given = "" if steps is None else f", not {steps}"
        raise FastDiffError(f"{name} is distilled for {', '.join(by_family[name])} steps{given}; e.g. '{name}@4'")
    raise FastDiffError(f"unknown scenario preset {name!r}" + did_you_mean(name, [*known, *sorted(by_family)]))


def parse_scenario(text: str) -> Scenario:
    """`"sdxl-turbo@1"`, `"sdxl-lightning@4"`, `"diffusers:sdxl-turbo@1"`, `"fastdiff:max:sdxl-turbo@1"`,
    `"fastdiff:max+int8-full:sdxl-turbo@1"`, `"openvino:sdxl-turbo@1"` or a bare preset name (its default steps)."""
    if not isinstance(text, str) or not text.strip():
        raise FastDiffError(f"a scenario is a string like 'sdxl-turbo@1', got {text!r}")
    body = text.strip()
    runner: Runner = "fastdiff"
    level, weights = "none", None
    head, colon, rest = body.partition(":")
    if colon and head in ("diffusers", "openvino"):
        runner, body = "diffusers" if head == "diffusers" else "openvino", rest
    elif colon and head == "fastdiff":
        level, _, body = rest.partition(":")
        level, plus, weights = level.partition("+")
        if plus:
            from ..openvino_cache import WEIGHT_FORMATS  # imports torch: only rows that name a format need it

            if weights not in WEIGHT_FORMATS:
                formats = f"one of {WEIGHT_FORMATS}{did_you_mean(weights, WEIGHT_FORMATS)}"
                raise FastDiffError(f"scenario {text!r}: after '+' comes the OpenVINO weights, {formats}")
        weights = weights or None
        if level not in LEVELS or not body:
            hint = did_you_mean(level, LEVELS) if level not in LEVELS else ""
            example = "e.g. 'fastdiff:max:sdxl-turbo@1'"
            raise FastDiffError(f"scenario {text!r}: write fastdiff:LEVEL:PRESET@STEPS, {example}{hint}")
    name, _, steps_text = body.partition("@")
    steps: int | None = None
    if steps_text:
        if not steps_text.isdigit() or int(steps_text) < 1:
            raise FastDiffError(f"scenario {text!r}: steps after '@' must be a positive integer, e.g. 'sd15@20'")
        steps = int(steps_text)
    preset = _resolve_preset(name, steps)
    steps = preset.default_steps if steps is None else steps
    if steps not in preset.steps:
        raise FastDiffError(f"scenario {text!r}: {preset.name} runs {preset.steps_label()} steps, not {steps}")
    if runner != "fastdiff" and preset.checkpoint is not None:
        raise FastDiffError(
            f"scenario {text!r}: the plain {runner} row runs a repo as its card's snippet does; {preset.name} "
            f"also needs a UNet/LoRA checkpoint, so time it through fastdiff (drop '{runner}:')"
        )
    prefix = "" if runner == "fastdiff" else f"{runner}:"
    if level != "none" or weights is not None:
        prefix = f"fastdiff:{level}{'+' + weights if weights else ''}:"
    row = f"{prefix}{name}@{steps}"
    return Scenario(name=row, preset=preset, steps=steps, runner=runner, optimize=level, openvino_weights=weights)


def parse_scenarios(texts: list[str] | tuple[str, ...]) -> list[Scenario]:
    """Parse several scenarios (commas also separate them); duplicates are kept once, in order."""
    scenarios = dict.fromkeys(parse_scenario(part) for text in texts for part in text.split(",") if part.strip())
    if not scenarios:
        raise FastDiffError("no scenarios given; e.g. --scenarios sd15@20 sdxl-turbo@1")
    return list(scenarios)
