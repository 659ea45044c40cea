"""What a load does to a pipeline: `Optimizations` is what a user asks, a `Recipe` what was decided for a device.

`optimize=` is a level ("none", "default", "max") or an `Optimizations` (`Optimizations.level(name, **overrides)`
builds one). Each device decides its recipe in one plain function (`_cpu`, `_cuda`, `_other`), once per load;
`optimize.apply_optimizations` then does exactly what the `Recipe` says on whatever device the pipeline is (so the
CUDA recipe can run, and be tested, on CPU tensors). "none" is bit-parity with diffusers. "default" takes every
speedup whose image stays within a tested tolerance of "none": the prompt-embedding cache everywhere; on the CPU
the OpenVINO engine (a dependency of fastdiff; bf16 where the CPU computes it faster than fp32, f32 elsewhere),
plain torch where OpenVINO cannot be imported; on CUDA channels_last, fused QKV, a bf16 VAE instead of the fp32
upcast and torch.compile with CUDA graphs. "max" also swaps the VAE for the tiny autoencoder (TAESD/TAESDXL).
Measured gains and costs: docs/performance.md (every run: docs/notes/performance-history.md).
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
from .openvino_cache import check_weight_format, nncf_usable, openvino_usable

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

# the fields a recipe takes as they were asked: nothing about them depends on the device
_AS_ASKED = ("compile_mode", "compile_backend", "tiny_vae", "openvino_weights", "embedding_cache_size")
# The levels, as the fields they set; every other field keeps its default (off).
_LEVELS: dict[str, dict[str, Any]] = {
    "none": {},
    "default": {
        "precision": "auto",
        # CPU: OpenVINO where installed (2.0-2.3x plain diffusers, docs/notes/performance-history.md)
        "engine": "auto",
        "compile": "auto",  # CPU: inductor took 65 s to compile the SDXL decoder on 2 cores and gained 7 %
        "channels_last": "auto",
        "fuse_qkv": "auto",
    },
}
_LEVELS["max"] = {**_LEVELS["default"], "tiny_vae": "auto"}


@dataclass(frozen=True)
class Optimizations:
    """What a user asks `from_preset`/`from_pipeline` to do to a pipeline at load time; every field defaults to
    off (the "none" level). `Optimizations.level(name, **overrides)` builds a level with some fields changed.

    "auto" means: where it was measured to pay, which the load decides for its device (`recipe_for(device)`
    shows the decision; the generator keeps it as `gen.recipe`).
    `precision`: what the optimized modules compute in: "fp32", "bf16", "fp16" (or a torch dtype, or "float16",
    ...), "auto" (fastdiff's measured choice for the device: the OpenVINO engine in bf16 where this CPU computes
    it faster than fp32, `cpu_bf16_pays`, else f32; the torch engine in the dtype the weights were loaded in, and
    on CUDA an fp16 VAE in bf16), or None (as loaded: torch computes in the loaded dtype, with diffusers' fp32
    upcast of an fp16 VAE, and OpenVINO in f32, the dtype it converts the weights from). An explicit dtype casts
    the torch engine's modules (with "fp16" an fp16 VAE computes in bf16, which has fp32's range: no overflow,
    no fp32 upcast; diffusers #4325), or is OpenVINO's precision ("fp32", "bf16"; fp16 needs `engine="torch"`;
    OpenVINO's own default, the bench's peer row, is "bf16" wherever the CPU has avx512_bf16, even where slower,
    `cpu_has_native_bf16`, else "fp32").
    `engine`: "torch", or "openvino" (CPU only: the UNet, text encoders and VAE decoder compiled by OpenVINO at
    static shapes, cached on disk; `openvino_engine`), "auto": OpenVINO on the CPU when it can be imported, else
    torch (the environment variable `FASTDIFF_CPU_ENGINE=torch` makes "auto" torch).
    `compile`: torch.compile the UNet and the VAE decoder ("auto": on CUDA), `compile_mode` None there means
    "reduce-overhead" (CUDA graphs); each new shape compiles on its first call, so call `gen.warmup(...)` first.
    `channels_last`, `fuse_qkv`: NHWC weights and one QKV projection ("auto": on CUDA; on the CPU the OpenVINO
    engine picks its own layouts, and diffusers' fused QKV measured slower there and keeps a copy).
    `tiny_vae`: None, "auto" (the family's TAESD, cache first), a hub id, a local folder or an `AutoencoderTiny`.
    `openvino_weights`: None (the UNet's weights as they are), "int8": compressed by NNCF, weights only, or
    "int8-full": weights and activations quantized by NNCF, the UNet computing in int8 (calibrated on its
    first call's inputs); `pip install 'fastdiff[int8]'`, opt-ins with their own tolerances and speeds
    (docs/performance.md, `openvino_int8`); they need the OpenVINO engine.
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
        fields = {**_LEVELS[name], **_renamed(overrides)}
        try:
            return cls(**fields)
        except TypeError as err:
            raise FastDiffError(f"{err}; see the fields of fastdiff.Optimizations") from None

    @classmethod
    def preset(cls, level: str, **overrides: Any) -> Optimizations:
        """Deprecated: `Optimizations.level` (model presets are `fastdiff.presets`)."""
        warnings.warn(
            "Optimizations.preset is now Optimizations.level (a preset is a model: fastdiff.presets)",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.level(level, **overrides)

    def recipe_for(self, device: str | torch.device) -> Recipe:
        """What these optimizations do on `device` ("cpu", "cuda", ...): every "auto" decided."""
        return decide_recipe(self, torch.device(device))


def _renamed(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the precision fields of fastdiff before `precision` mapped onto it (with a
    DeprecationWarning), or refused where no one value of `precision` means the same."""
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
                "compute_dtype='auto' is gone: precision='bf16' computes the torch engine in bf16 (where "
                "fastdiff.devices.cpu_bf16_pays() is True this CPU gains), precision='auto' is the levels' choice"
            )
        if "precision" in out:
            raise FastDiffError(f"{old}= is the old name of precision=: pass precision= alone")
        if old == "openvino_precision" and value is None:
            raise FastDiffError(
                "openvino_precision=None (OpenVINO's own default) is now precision='bf16' where the CPU has "
                "avx512_bf16 (fastdiff.devices.cpu_has_native_bf16()), precision='fp32' elsewhere"
            )
        if value is not None:  # compute_dtype=None was the default: nothing to map
            out["precision"] = value
        fix = f"pass precision={value!r}" if value is not None else "leave it out (the default)"
        warnings.warn(f"{old}= is now precision= (one for every engine): {fix}", DeprecationWarning, stacklevel=3)
    return out


@dataclass(frozen=True)
class Recipe:
    """What one load does, decided from an `Optimizations` for one device type (`device`) and applied as it says
    on any device. `gen.recipe` shows it; `optimize=` takes one as decided (the CUDA recipe on CPU tensors).

    `dtype`: what the torch modules are cast to (None: as loaded). `bf16_vae`: an fp16 VAE computes in bf16.
    `openvino_precision`: OpenVINO's precision hint ("f32", "bf16"; None under torch). The other fields are
    the `Optimizations`' with "auto" decided; `optimizations` the settings it was decided from.
    """

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
    if isinstance(optimize, Recipe):
        return optimize
    if isinstance(optimize, str):
        optimize = Optimizations.level(optimize)
    if not isinstance(optimize, Optimizations):
        raise FastDiffError(f"optimize must be 'none', 'default', 'max' or an Optimizations, not {optimize!r}")
    if device.type == "cpu":
        return _cpu(optimize, unet=family is None or family.denoiser == "unet")
    if device.type == "cuda":
        return _cuda(optimize)
    return _other(optimize, device.type)


def _cpu(opts: Optimizations, *, unet: bool) -> Recipe:
    """The CPU: OpenVINO ("auto") in bf16 where this CPU computes it faster than fp32, else f32; the torch
    engine in the loaded dtype unless a precision is named; layouts and torch.compile only when asked.
    A transformer family (FLUX) runs torch: the OpenVINO engine converts UNets only, for now."""
    if not unet and opts.engine == "openvino":
        raise FastDiffError("the OpenVINO engine converts UNets only, not transformers: pass engine='torch'")
    engine = _cpu_engine(opts.engine) if unet else "torch"
    _check_openvino_weights(opts.openvino_weights, engine)
    if engine == "torch":
        return _recipe(opts, "cpu", auto=False, bf16_vae=opts.precision == "fp16")
    if opts.precision == "fp16":
        raise FastDiffError("the OpenVINO engine computes in 'fp32' or 'bf16': pass engine='torch' for fp16")
    hint = "bf16" if opts.precision == "bf16" or (opts.precision == "auto" and cpu_bf16_pays()) else "f32"
    return _recipe(opts, "cpu", auto=False, engine="openvino", openvino_precision=hint)


def _cuda(opts: Optimizations) -> Recipe:
    """CUDA: channels_last, fused QKV and torch.compile with CUDA graphs where "auto"; an fp16 VAE in bf16 (fp32's
    range: no overflow, no fp32 upcast; diffusers #4325) under "auto" and "fp16"."""
    _torch_only(opts, "cuda")
    recipe = _recipe(opts, "cuda", auto=True, bf16_vae=opts.precision in ("auto", "fp16"))
    mode = opts.compile_mode or ("reduce-overhead" if recipe.compile else None)
    return dataclasses.replace(recipe, compile_mode=mode)


def _other(opts: Optimizations, device: str) -> Recipe:
    """MPS: torch in the loaded dtype unless a precision is named; every switch only when asked."""
    _torch_only(opts, device)
    return _recipe(opts, device, auto=False, bf16_vae=opts.precision == "fp16")


def _recipe(
    opts: Optimizations,
    device: str,
    *,
    auto: bool,
    bf16_vae: bool = False,
    engine: Literal["torch", "openvino"] = "torch",
    openvino_precision: str | None = None,
) -> Recipe:
    """The recipe of `opts` on `device`, each "auto" switch decided as `auto`; the torch engine casts its modules
    to a named precision (OpenVINO's modules stay as loaded: it takes the precision as its hint)."""

    def on(value: bool | Auto) -> bool:
        return auto if value == "auto" else bool(value)

    return Recipe(
        device=device,
        engine=engine,
        dtype=DTYPES.get(str(opts.precision)) if engine == "torch" else None,  # "auto", None: as loaded
        bf16_vae=bf16_vae,
        openvino_precision=openvino_precision,
        channels_last=on(opts.channels_last),
        fuse_qkv=on(opts.fuse_qkv),
        compile=on(opts.compile),
        optimizations=opts,
        **{name: getattr(opts, name) for name in _AS_ASKED},
    )


def _cpu_engine(engine: Engine) -> Literal["torch", "openvino"]:
    if engine == "openvino" and not openvino_usable():
        raise FastDiffError("engine='openvino' needs OpenVINO: pip install openvino")
    if engine != "auto":
        return engine
    wanted = os.environ.get("FASTDIFF_CPU_ENGINE", "auto")  # "torch" keeps the torch engine process-wide
    if wanted not in ("auto", "torch"):
        raise FastDiffError(f"FASTDIFF_CPU_ENGINE must be 'auto' or 'torch', not {wanted!r}")
    return "openvino" if wanted == "auto" and openvino_usable() else "torch"


def _torch_only(opts: Optimizations, device: str) -> None:
    if opts.engine == "openvino":
        raise FastDiffError(f"engine='openvino' needs OpenVINO: it runs on the CPU, not {device}")
    _check_openvino_weights(opts.openvino_weights, "torch")


def _check_openvino_weights(weights: str | None, engine: str) -> None:
    if weights is None:
        return
    check_weight_format(weights)
    if engine != "openvino":
        raise FastDiffError(
            f"openvino_weights={weights!r} compresses the OpenVINO engine's UNet, and this recipe runs {engine}: "
            "use it on the CPU with OpenVINO installed (pip install openvino), without FASTDIFF_CPU_ENGINE=torch"
        )
    if not nncf_usable():
        raise FastDiffError(f"openvino_weights={weights!r} needs NNCF: pip install 'fastdiff[int8]'")
