"""Scenario names: presets at step counts, family shorthands, the plain-diffusers row."""

from __future__ import annotations

import pytest

from fastdiff import FastDiffError
from fastdiff.bench.scenarios import BASELINE, DEFAULT_SCENARIOS, OPTIONAL_SCENARIOS, parse_scenario, parse_scenarios


@pytest.mark.parametrize(
    ("text", "preset", "steps", "runner"),
    [
        ("sd15@20", "sd15", 20, "fastdiff"),
        ("sdxl-turbo@1", "sdxl-turbo", 1, "fastdiff"),
        ("sdxl-lightning@1", "sdxl-lightning-1step", 1, "fastdiff"),
        ("sdxl-lightning@4", "sdxl-lightning-4step", 4, "fastdiff"),
        ("dmd2-sdxl@4", "dmd2-sdxl-4step", 4, "fastdiff"),
        ("sdxl-turbo", "sdxl-turbo", 1, "fastdiff"),
        ("hyper-sdxl-2step-lora", "hyper-sdxl-2step-lora", 2, "fastdiff"),
        ("diffusers:sdxl-turbo@1", "sdxl-turbo", 1, "diffusers"),
        ("fastdiff:max:sdxl-lightning@4", "sdxl-lightning-4step", 4, "fastdiff"),
    ],
)
def test_parse(text: str, preset: str, steps: int, runner: str) -> None:
    scenario = parse_scenario(text)
    assert (scenario.preset.name, scenario.steps, scenario.runner) == (preset, steps, runner)


def test_optimize_levels() -> None:
    assert parse_scenario("sdxl-turbo@1").optimize == "none"  # a bare name computes as diffusers does
    default = parse_scenario("fastdiff:default:sdxl-turbo@1")
    assert (default.optimize, default.name) == ("default", "fastdiff:default:sdxl-turbo@1")
    assert default.openvino_weights is None


def test_openvino_weights_after_the_level() -> None:
    full = parse_scenario("fastdiff:max+int8-full:sdxl-turbo@1")
    assert (full.optimize, full.openvino_weights) == ("max", "int8-full")
    assert full.name == "fastdiff:max+int8-full:sdxl-turbo@1"
    assert parse_scenario("fastdiff:default+int8:sd-turbo").name == "fastdiff:default+int8:sd-turbo@1"
    # the same level with and without int8 are two rows of one run, side by side
    rows = parse_scenarios(["fastdiff:max:sdxl-turbo@1", "fastdiff:max+int8-full:sdxl-turbo@1"])
    assert [s.openvino_weights for s in rows] == [None, "int8-full"]


def test_every_listed_scenario_parses() -> None:
    names = [s.name for s in parse_scenarios(list(DEFAULT_SCENARIOS + OPTIONAL_SCENARIOS))]
    assert names == list(DEFAULT_SCENARIOS + OPTIONAL_SCENARIOS)
    assert parse_scenario("sd15@20").name == BASELINE  # the row every speedup is relative to


def test_commas_and_duplicates() -> None:
    assert [s.name for s in parse_scenarios(["sd15@20,sdxl-turbo@1", "sd15@20"])] == ["sd15@20", "sdxl-turbo@1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sdxl-turbo@5", "runs 1-4 steps"),
        ("sdxl-lightning@3", "distilled for 1, 2, 4, 8 steps, not 3"),
        ("sdxl-lightning", "distilled for 1, 2, 4, 8 steps"),
        ("nonsense@3", "unknown scenario preset"),
        ("sdxl-turbo@x", "positive integer"),
        ("sdxl-turbo@0", "positive integer"),
        ("sdxl-turb@1", "did you mean 'sdxl-turbo'"),
        ("diffusers:sdxl-lightning@4", "drop 'diffusers:'"),
        ("", "a scenario is a string"),
        ("fastdiff:fast:sdxl-turbo@1", "write fastdiff:LEVEL:PRESET@STEPS"),
        ("fastdiff:defualt:sdxl-turbo@1", "did you mean 'default'"),
        ("fastdiff:max", "write fastdiff:LEVEL:PRESET@STEPS"),
        ("fastdiff:max+int4:sdxl-turbo@1", "after '\\+' comes the OpenVINO weights"),
        ("fastdiff:max+int8-ful:sdxl-turbo@1", "did you mean 'int8-full'"),
        ("fastdiff:max+:sdxl-turbo@1", "after '\\+' comes the OpenVINO weights"),
    ],
)
def test_errors_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(FastDiffError, match=message):
        parse_scenario(text)


def test_no_scenarios() -> None:
    with pytest.raises(FastDiffError, match="no scenarios"):
        parse_scenarios([" , "])
