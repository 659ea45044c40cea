"""A new user's first hour: warnings at their own line, said once, in plain words; no filters changed at import."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, openvino_cache, presets
from fastdiff._quiet import silenced

GRAMMAR = "a red circle on a blue background"


@pytest.fixture(scope="module")
def toy() -> FewStepGenerator:
    """The shipped toy student on the torch engine (no conversion to wait for)."""
    return FewStepGenerator.from_preset("fastdiff-shapes", device="cpu", optimize="none")


def _said(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, FastDiffWarning)]


def test_a_warning_names_the_callers_line(toy: FewStepGenerator) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toy(GRAMMAR, seed=0, negative_prompt="a green square")  # ignored at guidance 0: a FastDiffWarning
    said = _said(caught)
    assert [str(w.message)[:25] for w in said] == ["negative_prompt is ignore"]
    assert said[0].filename == __file__  # this line, not torch/nn/modules/module.py or fastdiff's validation.py


def test_the_toy_model_names_the_words_it_does_not_know(toy: FewStepGenerator) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toy("an astronaut riding a red horse on mars", seed=0)
    said = [str(w.message) for w in _said(caught)]
    assert len(said) == 1 and "tokens" not in said[0]  # not "the prompt is 29 tokens; CLIP reads only 16"
    assert "knows only the words of its shapes captions" in said[0]
    assert "not 'an', 'astronaut', 'riding', 'horse', 'mars'." in said[0]  # 'a', 'red', 'on' it knows
    assert "Try e.g. 'a small red circle in the top left on a blue background'" in said[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastDiffWarning)
        toy("a large purple triangle in the bottom right on a white background", seed=0)  # all known: silent


def test_importing_fastdiff_changes_no_warning_filter() -> None:
    """Libraries add their own filters at import (torch, scipy, urllib3): the check is on who calls."""
    code = (
        "import os, sys, warnings\n"
        "callers = []\n"
        "for name in ('filterwarnings', 'simplefilter'):\n"
        "    def spy(*args, _real=getattr(warnings, name), **kwargs):\n"
        "        callers.append(sys._getframe(1).f_code.co_filename)\n"
        "        return _real(*args, **kwargs)\n"
        "    setattr(warnings, name, spy)\n"
        "import fastdiff, fastdiff.generator, fastdiff.openvino_cache, fastdiff.openvino_engine, fastdiff.cli\n"
        "ours = [c for c in callers if c.startswith(os.path.dirname(fastdiff.__file__))]\n"
        "assert callers and not ours, ours\n"  # the spy saw the libraries' calls, and none of fastdiff's
    )
    src = str(Path(__file__).parents[1] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src, "PATH": ""})


def test_silenced_hides_only_its_noise_and_only_inside() -> None:
    from torch.jit import TracerWarning  # type: ignore[attr-defined]

    def trace_note() -> None:  # as torch's tracer raises it, from its own module
        warnings.warn_explicit("Converting a tensor to a Python boolean", TracerWarning, "_trace.py", 1, "torch.jit")

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with silenced("tracing"):
            trace_note()
            warnings.warn("the user's own", UserWarning, stacklevel=1)
        trace_note()
    assert [str(w.message) for w in caught] == ["the user's own", "Converting a tensor to a Python boolean"]
    assert warnings.filters == before


def test_loading_the_shipped_models_logs_no_diffusers_warning_but_others_still_show() -> None:
    """Their `AutoencoderTiny` VAE makes diffusers log two lines a user can do nothing about; only those go."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    root = diffusers_logging.get_logger("diffusers")
    root.addHandler(handler)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()  # a CLI test in this process may have set it to errors only
    try:
        pipe = StableDiffusionPipeline.from_pretrained(presets.get("fastdiff-shapes").repo_id)
        assert type(pipe.vae).__name__ == "AutoencoderTiny"
        assert records == []
        logging.getLogger("diffusers.pipelines.pipeline_utils").warning("Expected types for unet: (A,), got B.")
    finally:
        root.removeHandler(handler)
        diffusers_logging.set_verbosity(verbosity)
    assert [r.getMessage() for r in records] == ["Expected types for unet: (A,), got B."]


@pytest.fixture
def fresh_openvino_cache(tmp_path: Path, cpu_engine_default: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FASTDIFF_CACHE", str(tmp_path))
    openvino_cache._live.clear()  # as in a new process
    yield
    openvino_cache._live.clear()


@pytest.mark.usefixtures("fresh_openvino_cache")
def test_conversions_are_said_once_per_call_and_timed_apart() -> None:
    opts = Optimizations.level("default", engine="openvino", precision="fp32")
    gen = FewStepGenerator.from_preset("fastdiff-shapes", device="cpu", optimize=opts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = gen(GRAMMAR, seed=0)
    said = [str(w.message) for w in _said(caught)]
    assert len(said) == 1, said  # one notice for the text encoder, the UNet and the decoder, not three
    assert said[0].startswith("OpenVINO converted the text encoder, UNet and VAE decoder for 64x64 in ")
    assert "gen.warmup(" in said[0]
    stages = [first.timings[k] for k in ("encode", "denoise", "decode")]
    assert first.timings["compile"] > 0 and first.timings["total"] == pytest.approx(sum(stages))
    again = gen(GRAMMAR, seed=1)
    assert "compile" not in again.timings  # nothing left to make ready at this size
    openvino_cache._live.clear()  # a new process: the disk cache holds all three
    reloaded = FewStepGenerator.from_preset("fastdiff-shapes", device="cpu", optimize=opts)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OpenVINO", category=FastDiffWarning)  # a cache hit: silent
        hit = reloaded(GRAMMAR, seed=0)
    assert hit.timings["compile"] > 0  # compiling the cached IR is still not the image's own time
    assert hit.images[0].tobytes() == first.images[0].tobytes()
