"""What a load does to a pipeline: `Optimizations` is what a user asks, a `Recipe` what was decided for a device.

Each device decides in one plain function (`_cpu`, `_cuda`), once per load; `optimize.apply_optimizations` then
does what the `Recipe` says on whatever device the pipeline is (so the CUDA recipe is tested on CPU tensors).
"none" is bit-parity with diffusers; "default" takes every speedup whose image stays within a tested tolerance
of "none"; "max" also swaps the VAE for the tiny autoencoder. Measured gains and costs: docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from .devices import DTYPES, cpu_bf16_pays
from .errors import FastDiffError, did_you_mean
from .openvino_cache import WEIGHT_FORMATS, openvino_usable
from .openvino_int8 import nncf_usable

if TYPE_CHECKING:
    from .families import FamilySpec

__all__ = ["LEVELS", "Optimizations", "Recipe", "decide_recipe"]

Level = Literal["none", "default", "max"]
LEVELS: tuple[Level, ...] = ("none", "default", "max")
Auto = Literal["auto"]
Engine = Literal["torch", "openvino", "auto"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ENGINES: tuple[Engine, ...] = ("torch", "openvino", "auto")
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# every spelling `precision` takes: "auto", diffusers' and torch's dtype names, torch dtypes, OpenVINO's "f32"
_PRECISIONS: dict[Any, str] = {
    "auto": "auto",
    "f32": "fp32",
    **{name: _DTYPE_NAMES[dtype] for name, dtype in DTYPES.items()},
    **_DTYPE_NAMES,
}
# The levels, as the fields they set; every other field keeps its default (off). On the CPU "auto" is OpenVINO
# where installed (2.0-2.3x plain diffusers); inductor took 65 s to compile the SDXL decoder on 2 cores for 7 %.
_DEFAULT: dict[str, Any] = dict.fromkeys(("precision", "engine", "compile", "channels_last", "fuse_qkv"), "auto")
_LEVELS: dict[str, dict[str, Any]] = {"none": {}, "default": _DEFAULT, "max": {**_DEFAULT, "tiny_vae": "auto"}}


@dataclass(frozen=True)
class Optimizations:
    """What a user asks `from_preset`/`from_pipeline` to do to a pipeline at load time; every field defaults to
    off (the "none" level); `Optimizations.level(name, **overrides)` builds a level. "auto": where it was measured
    to pay on the device (`recipe_for(device)` shows the decision).

    `precision`: what the optimized modules compute in: "fp32", "bf16", "fp16" (or a torch dtype, "float16",
    ...); "auto": OpenVINO in bf16 where this CPU computes it faster (`devices.cpu_bf16_pays`), else f32, torch as
    loaded (on CUDA an fp16 VAE in bf16: fp32's range, no upcast; diffusers #4325); None: as loaded, diffusers'
    fp32 upcast of an fp16 VAE and OpenVINO in f32. OpenVINO takes "fp32" or "bf16".
    `engine`: "torch", "openvino" (CPU only: the UNet, text encoders and VAE decoder compiled at static shapes,
    cached on disk) or "auto" (OpenVINO on the CPU where installed, unless `FASTDIFF_CPU_ENGINE=torch`).
    `compile`: torch.compile the UNet and VAE decoder ("auto": on CUDA, with CUDA graphs unless `compile_mode`
    says otherwise); each new shape compiles on its first call, so call `gen.warmup(...)` first.
    `channels_last`, `fuse_qkv`: NHWC weights, one QKV projection ("auto": on CUDA).
    `tiny_vae`: None, "auto" (the family's TAESD, cache first), a hub id, a local folder or an `AutoencoderTiny`.
    `openvino_weights`: the OpenVINO UNet's weights: None, "int8" (NNCF, weights only) or "int8-full" (weights
    and activations, calibrated on the first call); opt-ins, `pip install 'fastdiff[int8]'` (docs/performance.md).
    `embedding_cache_size`: how many prompts' embeddings the generator keeps.
    """

    precision: Precision | torch.dtype | None = None
    engine: Engine = "torch"
    compile: bool | Auto = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    channels_last: bool | Auto = False
    fuse_qkv: bool | Auto = False
    tiny_vae: Any = None
    openvino_weights: str | None = None
    embedding_cache_size: int = 32

    def __post_init__(self) -> None:
        if self.precision is not None:
            if not isinstance(self.precision, (str, torch.dtype)) or self.precision not in _PRECISIONS:
                raise FastDiffError(
                    f"precision must be 'auto', 'fp32', 'bf16', 'fp16', a torch dtype or None, not {self.precision!r}"
                )
            object.__setattr__(self, "precision", _PRECISIONS[self.precision])  # one spelling per precision
        if self.engine not in ENGINES:
            raise FastDiffError(f"unknown engine {self.engine!r}" + did_you_mean(str(self.engine), ENGINES))

    @classmethod
    def level(cls, name: str, **overrides: Any) -> Optimizations:
        """The optimizations of level `name` ("none", "default", "max") with some fields overridden."""
        if name not in _LEVELS:
            raise FastDiffError(f"unknown optimize level {name!r}" + did_you_mean(name, LEVELS))
        try:
            return cls(**{**_LEVELS[name], **_renamed(overrides)})
        except TypeError as err:
            raise FastDiffError(f"{err}; see the fields of fastdiff.Optimizations") from None

    @classmethod
    def preset(cls, level: str, **overrides: Any) -> Optimizations:
        """Deprecated: `Optimizations.level` (model presets are `fastdiff.presets`)."""
        message = "Optimizations.preset is now Optimizations.level (a preset is a model: fastdiff.presets)"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return cls.level(level, **overrides)

    def recipe_for(self, device: str | torch.device) -> Recipe:
        """What these optimizations do on `device` ("cpu", "cuda", ...): every "auto" decided."""
        return decide_recipe(self, torch.device(device))


def _renamed(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the precision fields before `precision` mapped onto it (a DeprecationWarning), or refused
    where no one value of `precision` means the same."""
    out = dict(overrides)
    if "bf16_vae" in out:
        raise FastDiffError(
            "bf16_vae is decided by precision now: precision='auto' (on CUDA) or 'fp16' runs an fp16 VAE in bf16, "
            "precision=None keeps diffusers' fp32 upcast"
        )
    for old in ("compute_dtype", "openvino_precision"):
        if old not in out:
            continue
        value = out.pop(old)
        if old == "compute_dtype" and value == "auto":
            raise FastDiffError(
                "compute_dtype='auto' is gone: precision='bf16' computes the torch engine in bf16 (faster where "
                "fastdiff.devices.cpu_bf16_pays()), precision='auto' is the levels' choice"
            )
        if old == "openvino_precision" and value is None:
            raise FastDiffError(
                "openvino_precision=None (OpenVINO's default) is now precision='bf16' where "
                "fastdiff.devices.cpu_has_native_bf16(), precision='fp32' elsewhere"
            )
        if "precision" in out:
            raise FastDiffError(f"{old}= is the old name of precision=: pass precision= alone")
        if value is not None:  # compute_dtype=None was the default: nothing to map
            out["precision"] = value
        fix = f"pass precision={value!r}" if value is not None else "leave it out (the default)"
        warnings.warn(f"{old}= is now precision= (one for every engine): {fix}", DeprecationWarning, stacklevel=3)
    return out


@dataclass(frozen=True)
class Recipe:
    """What one load does, decided from `optimizations` for one device type and applied as it says on any device
    (`optimize=` takes one as decided). `dtype`: the torch modules' cast (None: as loaded); `bf16_vae`: an fp16
    VAE computes in bf16; `openvino_precision`: "f32", "bf16" (None under torch); the rest: "auto" decided."""

    device: str
    engine: Literal["torch", "openvino"]
    dtype: torch.dtype | None
    bf16_vae: bool
    openvino_precision: str | None
    channels_last: bool
    fuse_qkv: bool
    compile: bool
    compile_mode: str | None
    compile_backend: str
    tiny_vae: Any
    openvino_weights: str | None
    embedding_cache_size: int
    optimizations: Optimizations = field(compare=False, repr=False)

    @property
    def changes_modules(self) -> bool:
        """True when applying this recipe may replace, cast, swap or compile modules."""
        switches = (self.channels_last, self.fuse_qkv, self.bf16_vae, self.compile, self.engine == "openvino")
        return any(switches) or self.tiny_vae is not None or self.dtype is not None

    @property
    def cuda_graphs(self) -> bool:
        """True when compiled with CUDA graphs, which record on the second call at a shape (two warm-up runs)."""
        return self.compile and self.compile_mode is not None and "reduce-overhead" in self.compile_mode


def decide_recipe(
    optimize: str | Optimizations | Recipe, device: torch.device, *, family: FamilySpec | None = None
) -> Recipe:
    """`optimize=` as `from_preset` takes it (a level name, an `Optimizations`, or a `Recipe`, kept as decided)
    decided for `device` and the model `family` (None: a UNet family)."""
    if isinstance(optimize, str):
        optimize = Optimizations.level(optimize)
    if isinstance(optimize, Recipe):
        recipe = optimize
    elif isinstance(optimize, Optimizations):
        unet = family is None or family.denoiser == "unet"
        recipe = _cpu(optimize, unet=unet) if device.type == "cpu" else _cuda(optimize, device.type, unet=unet)
    else:
        raise FastDiffError(f"optimize must be 'none', 'default', 'max' or an Optimizations, not {optimize!r}")
    if recipe.fuse_qkv and family is not None and not family.fuse_qkv:
        if recipe is optimize or recipe.optimizations.fuse_qkv is True:  # asked for, not decided here
            raise FastDiffError(
                f"fused QKV changes the {family.name} family's images (diffusers' fused attention for it skips the "
                "QK-norm): pass fuse_qkv=False"
            )
        recipe = dataclasses.replace(recipe, fuse_qkv=False)
    return recipe


def _cpu(opts: Optimizations, *, unet: bool) -> Recipe:
    """The CPU: OpenVINO ("auto": where installed) in bf16 where this CPU computes it faster than fp32, else f32;
    the torch engine in the loaded dtype unless a precision is named; layouts and torch.compile when asked. A
    transformer family (FLUX) runs torch: the OpenVINO engine converts UNets only, for now."""
    engine = opts.engine
    if engine == "openvino" and not unet:
        raise FastDiffError("the OpenVINO engine converts UNets only, not transformers: pass engine='torch'")
    if engine == "openvino" and not openvino_usable():
        raise FastDiffError("engine='openvino' needs OpenVINO: pip install openvino")
    if engine == "auto":
        wanted = os.environ.get("FASTDIFF_CPU_ENGINE", "auto")  # "torch" keeps the torch engine process-wide
        if wanted not in ("auto", "torch"):
            raise FastDiffError(f"FASTDIFF_CPU_ENGINE must be 'auto' or 'torch', not {wanted!r}")
        engine = "openvino" if unet and wanted == "auto" and openvino_usable() else "torch"
    _check_openvino_weights(opts.openvino_weights, engine)
    if engine == "torch":
        return _recipe(opts, "cpu", auto=False)
    if opts.precision == "fp16":
        raise FastDiffError("the OpenVINO engine computes in 'fp32' or 'bf16': pass engine='torch' for fp16")
    bf16 = opts.precision == "bf16" or (opts.precision == "auto" and cpu_bf16_pays())
    return _recipe(opts, "cpu", auto=False, openvino_precision="bf16" if bf16 else "f32")


def _cuda(opts: Optimizations, device: str, *, unet: bool = True) -> Recipe:
    """CUDA: channels_last, fused QKV and torch.compile where "auto" (with CUDA graphs for a UNet; a transformer's
    repeated blocks compile regionally, where graphs per block are not measured), and an fp16 VAE in bf16 under
    "auto". Other accelerators (MPS): torch, every switch only when asked."""
    if opts.engine == "openvino":
        raise FastDiffError(f"engine='openvino' needs OpenVINO: it runs on the CPU, not {device}")
    _check_openvino_weights(opts.openvino_weights, "torch")
    return _recipe(opts, device, auto=device == "cuda", graphs=unet)


def _recipe(
    opts: Optimizations, device: str, *, auto: bool, openvino_precision: str | None = None, graphs: bool = True
) -> Recipe:
    """The recipe of `opts` on `device`, each "auto" switch decided as `auto`; the torch engine casts to a named
    precision (OpenVINO takes it as its hint), and an fp16 VAE to bf16 with "fp16" (and "auto" where `auto`)."""

    def on(value: bool | Auto) -> bool:
        return auto if value == "auto" else bool(value)

    torch_engine = openvino_precision is None
    return Recipe(
        device=device,
        engine="torch" if torch_engine else "openvino",
        dtype=DTYPES.get(str(opts.precision)) if torch_engine else None,  # "auto", None: as loaded
        bf16_vae=torch_engine and (opts.precision == "fp16" or (auto and opts.precision == "auto")),
        openvino_precision=openvino_precision,
        channels_last=on(opts.channels_last),
        fuse_qkv=on(opts.fuse_qkv),
        compile=on(opts.compile),
        compile_mode=opts.compile_mode or ("reduce-overhead" if auto and graphs and on(opts.compile) else None),
        compile_backend=opts.compile_backend,
        tiny_vae=opts.tiny_vae,
        openvino_weights=opts.openvino_weights,
        embedding_cache_size=opts.embedding_cache_size,
        optimizations=opts,
    )


def _check_openvino_weights(weights: str | None, engine: str) -> None:
    if weights is None:
        return
    if weights not in WEIGHT_FORMATS:
        raise FastDiffError(f"openvino_weights must be None or one of {WEIGHT_FORMATS}, not {weights!r}")
    if engine != "openvino":
        raise FastDiffError(
            f"openvino_weights={weights!r} compresses the OpenVINO engine's UNet, and this recipe runs {engine}: "
            "use it on the CPU with OpenVINO installed (pip install openvino), without FASTDIFF_CPU_ENGINE=torch"
        )
    if not nncf_usable():
        raise FastDiffError(f"openvino_weights={weights!r} needs NNCF: pip install 'fastdiff[int8]'")
