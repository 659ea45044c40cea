"""Where a scenario's pipeline comes from: random weights on the real architecture (or at toy widths), or the hub.
A source holds one model at a time; consecutive rows that can share it do, and say so (`load_shared`)."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .._quiet import silenced
from ..errors import FastDiffError
from ..generator import FewStepGenerator
from ..optimize import Optimizations, own_copy
from ..weights import WeightsIdentity
from .architectures import architecture, tiny_architecture
from .random_weights import (
    meta_modules,
    parameter_shapes,
    pipeline_from,
    random_components,
    random_tiny_vae,
    weights_name,
)
from .scenarios import Scenario
from .timing import Clock

__all__ = ["HubSource", "Loaded", "ModelSource", "RandomSource", "Weights", "make_source"]

Weights = Literal["random", "tiny", "hub"]


@dataclass
class Loaded:
    """A scenario's pipeline (and fastdiff generator for fastdiff rows) with its cold-start time."""

    pipe: Any
    generator: FewStepGenerator | None
    load_s: float
    shared: bool


def openvino_pipeline(pipe: Any, *, cache_key: str | None = None) -> Any:
    """The bench's peer: `pipe` (left as it was) with plain OpenVINO running copies of its text encoder(s), UNet and
    VAE; `cache_key` names the weights as `FewStepGenerator.from_pipeline` does, to share its converted models."""
    from diffusers import AutoPipelineForText2Image

    from ..openvino_cache import openvino_usable
    from ..openvino_engine import use_openvino

    if not openvino_usable():
        raise FastDiffError("the openvino: rows need OpenVINO: pip install openvino")
    names = ("unet", "text_encoder", "text_encoder_2", "vae")
    own = {name: own_copy(getattr(pipe, name)) for name in names if getattr(pipe, name, None) is not None}
    weights = WeightsIdentity(None if cache_key is None else (f"cache_key={cache_key}",))
    use_openvino(own, weights_keys={name: weights.module_key(name) for name in own})
    return AutoPipelineForText2Image.from_pipe(pipe, **own)


def _free(device: torch.device) -> None:
    """Give freed weights back to the device, so that the next row's memory check sees them free."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif platform.libc_ver()[0] == "glibc":
        # glibc keeps freed blocks under its mmap threshold in the heap: after an SDXL row the process still held
        # 9.3 GiB of freed weights, and SANA-Sprint's memory check beside it refused a model that fits.
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RandomSource:
    """The real architecture of each repo (`tiny=True`: at toy widths) with random weights, memory-mapped from
    `folder` if given; rows whose modules have the same shapes share them (`shares_weights`)."""

    def __init__(
        self, *, device: torch.device, dtype: torch.dtype, clock: Clock, tiny: bool = False, folder: Path | None = None
    ) -> None:
        self.device, self.dtype, self.clock, self.tiny, self.folder = device, dtype, clock, tiny, folder
        self.shares_weights = True
        self._repo: str | None = None
        self._components: dict[str, Any] = {}
        self._load_s = 0.0

    def load(self, scenario: Scenario) -> Loaded:
        """Build the modules (meta device, one fill) or reuse the last ones, then wrap them as the scenario asks."""
        arch = architecture(scenario.preset.repo_id)
        arch = tiny_architecture(arch) if self.tiny else arch
        shared = self._repo == arch.repo_id or (  # another repo of the same shapes (SDXL-Turbo's, SDXL base's)
            bool(self._components) and parameter_shapes(self._components) == parameter_shapes(meta_modules(arch))
        )
        if not shared:
            self.release()
            start = self.clock()
            self._components = random_components(arch, device=self.device, dtype=self.dtype, folder=self.folder)
            self._load_s = self.clock() - start
        self._repo = arch.repo_id
        with silenced("numpy-copy"):
            pipe = pipeline_from(arch, dict(self._components))
            generator = None
            key = f"random:{weights_name(arch, dtype=self.dtype)}"  # what from_pipeline's disk cache keys on
            if scenario.runner == "openvino":
                pipe = openvino_pipeline(pipe, cache_key=key)
            elif scenario.runner == "fastdiff":
                tiny_vae = None
                if scenario.optimize == "max":  # TAESD's architecture with random weights: nothing downloaded
                    tiny_vae = random_tiny_vae(device=self.device, dtype=self.dtype, config=arch.tiny_vae)
                optimize = Optimizations.level(
                    scenario.optimize, tiny_vae=tiny_vae, openvino_weights=scenario.openvino_weights
                )
                generator = FewStepGenerator.from_pipeline(scenario.preset, pipe, optimize=optimize, cache_key=key)
        used = generator.pipeline if generator is not None else pipe  # optimized rows run their own module copies
        return Loaded(pipe=used, generator=generator, load_s=self._load_s, shared=shared)

    def release(self) -> None:
        """Drop the held modules."""
        self._components, self._repo = {}, None
        _free(self.device)


class HubSource:
    """Real weights from the Hugging Face cache (or the hub), loaded cold one at a time: `from_preset` for fastdiff
    rows, the card's `<Pipeline>.from_pretrained` for the others."""

    shares_weights = False  # each row loads its own weights (the card's pipeline, or from_preset)

    def __init__(
        self, *, device: torch.device, dtype: torch.dtype, clock: Clock, cache_dir: str | Path | None = None
    ) -> None:
        self.device, self.dtype, self.clock, self.cache_dir = device, dtype, clock, cache_dir
        self._held: tuple[tuple[str, str, str | None, str], Loaded] | None = None  # the last load, by its key

    def load(self, scenario: Scenario) -> Loaded:
        """Load the scenario's weights unless the previous scenario used the very same ones."""
        key = (scenario.runner, scenario.optimize, scenario.openvino_weights, scenario.preset.name)
        if self._held is not None and self._held[0] == key:
            return dataclasses.replace(self._held[1], shared=True)
        self.release()
        start = self.clock()
        with silenced("numpy-copy"):
            if scenario.runner == "fastdiff":
                gen = FewStepGenerator.from_preset(
                    scenario.preset,
                    device=self.device,
                    dtype=self.dtype,
                    cache_dir=self.cache_dir,
                    optimize=Optimizations.level(scenario.optimize, openvino_weights=scenario.openvino_weights),
                )
                pipe: Any = gen.pipeline
            else:
                gen, pipe = None, self._diffusers_pipeline(scenario)
                if scenario.runner == "openvino":
                    pipe = openvino_pipeline(pipe)
        self._held = key, Loaded(pipe=pipe, generator=gen, load_s=self.clock() - start, shared=False)
        return self._held[1]

    def _diffusers_pipeline(self, scenario: Scenario) -> Any:
        from huggingface_hub import try_to_load_from_cache

        from ..families import family

        repo = scenario.preset.repo_id
        variant = "fp16" if self.dtype == torch.float16 and scenario.preset.variant == "fp16" else None
        # A cached repo loads without network calls, as fastdiff's own loading does: both load times are comparable.
        cached = isinstance(try_to_load_from_cache(repo, "model_index.json", cache_dir=self.cache_dir), str)
        pipe = family(scenario.preset.family).pipeline.from_pretrained(  # the auto mapping lacks SANA-Sprint
            repo, dtype=self.dtype, variant=variant, cache_dir=self.cache_dir, local_files_only=cached
        )
        return pipe.to(self.device)

    def release(self) -> None:
        """Drop the held pipeline."""
        self._held = None
        _free(self.device)


# Gives each scenario its pipeline (`load`), sharing the last one where it can; `release()` frees what it holds.
ModelSource = RandomSource | HubSource


def make_source(
    weights: Weights,
    *,
    device: torch.device,
    dtype: torch.dtype,
    clock: Clock,
    cache_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
) -> ModelSource:
    """The source for `--weights random|tiny|hub`; `cache_dir` for `hub`, `weights_dir` (memory-mapped) for `random`."""
    if weights == "hub":
        return HubSource(device=device, dtype=dtype, clock=clock, cache_dir=cache_dir)
    folder = Path(weights_dir) if weights_dir is not None else None
    return RandomSource(device=device, dtype=dtype, clock=clock, tiny=weights == "tiny", folder=folder)
