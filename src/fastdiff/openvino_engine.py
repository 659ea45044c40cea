"""The CPU engine: fastdiff's module copies run through OpenVINO, inside diffusers' own pipeline loop.

`use_openvino(modules)` keeps each torch module object (the pipeline reads `unet.config`, `.dtype`, `.device`,
`unet.add_embedding.linear_1.in_features`, …) and replaces only its `forward` with `OpenVINOForward`: the call's
tensors go to an OpenVINO model compiled for exactly their shapes (static shapes: converted, compiled and cached
on disk once per shape by `openvino_cache`), and come back as what diffusers expects of that module. Converted:
the UNet, the text encoder(s) and the VAE's decoder (the tiny decoder too); the VAE encoder (img2img) stays torch.
A call with an argument the engine does not take (a LoRA scale in `cross_attention_kwargs`, an attention mask,
bf16 tensors) runs the torch forward instead, so a wrapped module is correct on every path; so does every call
inside `torch_forwards()` (FLOP counting). A batch runs item by item through the model compiled for one item
(`_split_batch`), so a new batch size converts nothing; many threads may call at once.

The precision is `precision` ("f32", "bf16": the `Recipe`'s `openvino_precision`, from `Optimizations.precision`),
or with None OpenVINO's own default for the CPU (bf16 wherever avx512_bf16 is present, f32 elsewhere: the peer row's).
A module's weights are read when a shape converts. Weight changes are explicit (`weights.WeightsIdentity`): the
generator calls `weights_changed` on every wrapped module after a change, which drops the compiled models; nothing
checks the weights per call.
"""

from __future__ import annotations

import inspect
import threading
import time
import types
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .errors import warn
from .openvino_cache import compiled_model
from .openvino_int8 import latent_redraws
from .subpixel import use_subpixel_upsampling
from .weights import weights_hash

__all__ = [
    "CompileLog",
    "OpenVINOForward",
    "compile_log",
    "expected_shapes",
    "openvino_forwards",
    "torch_forwards",
    "use_openvino",
]

Kind = Literal["unet", "text_encoder", "decoder"]
_OPTIONS: dict[Kind, tuple[str, ...]] = {
    "unet": ("return_dict",),
    "text_encoder": ("return_dict", "output_hidden_states"),
    "decoder": (),
}
_DICTS = ("added_cond_kwargs",)  # SDXL's text_embeds and time_ids
_DTYPES = (torch.float32, torch.int64, torch.int32)
_quiet: ContextVar[bool] = ContextVar("fastdiff_openvino_quiet", default=False)
_torch_only: ContextVar[bool] = ContextVar("fastdiff_openvino_torch_only", default=False)
_NAMES: dict[Kind, str] = {"text_encoder": "text encoder", "unet": "UNet", "decoder": "VAE decoder"}
_WARMUP_HINT = "gen.warmup(height=..., width=..., batch=..., guidance_scale=..., img2img=...) at load time"


@contextmanager
def _on(flag: ContextVar[bool]) -> Iterator[None]:
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def torch_forwards() -> AbstractContextManager[None]:
    """Wrapped modules run their torch forward inside this block (FlopCounterMode counts torch's ops only)."""
    return _on(_torch_only)


def expected_shapes() -> AbstractContextManager[None]:
    """New shapes converted inside this block (a warm-up) do not warn."""
    return _on(_quiet)


@dataclass
class CompileLog:
    """What the engine made ready during one pipeline call: the seconds it spent (converting, or compiling a model
    the disk cache held) and the modules it converted."""

    seconds: float = 0.0
    converted: list[Kind] = field(default_factory=list)
    converting_seconds: float = 0.0

    def add(self, kind: Kind, seconds: float, *, converted: bool) -> None:
        self.seconds += seconds
        if converted:
            self.converted.append(kind)
            self.converting_seconds += seconds

    def announce(self, size: str) -> None:
        """One `FastDiffWarning` for every module converted in the call (none for disk-cache reads or a warm-up)."""
        if not self.converted or _quiet.get():
            return
        names = list(dict.fromkeys(_NAMES[k] for k in self.converted))  # SDXL's two text encoders: named once
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        warn(
            f"OpenVINO converted the {listed} for {size} in {self.converting_seconds:.1f} s on this call (kept on "
            f"disk: later loads read it). {_WARMUP_HINT} keeps this off a user's call."
        )


_log: ContextVar[CompileLog | None] = ContextVar("fastdiff_openvino_compile_log", default=None)


@contextmanager
def compile_log() -> Iterator[CompileLog]:
    """Collect what the engine compiles inside this block (one pipeline call) instead of warning per module."""
    log = CompileLog()
    token = _log.set(log)
    try:
        yield log
    finally:
        _log.reset(token)


@dataclass
class _Entry:
    model: Any
    structure: dict[str, Any] = field(default_factory=dict)  # what the traced call returned, to rebuild it


def _flatten(kind: Kind, arguments: dict[str, Any]) -> tuple[list[str], list[torch.Tensor], dict[str, Any]] | None:
    """The call's tensors by name (dict entries as `name.key`) and its options; None when the engine cannot take
    the call (a non-tensor argument, a dtype numpy lacks)."""
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    options: dict[str, Any] = {}
    items = list(arguments.items())
    while items:
        name, value = items.pop(0)
        if name == "kwargs" and isinstance(value, dict):  # transformers' **kwargs
            items.extend(value.items())
        elif name in _OPTIONS[kind]:
            options[name] = value
        elif value is None or (name == "output_attentions" and not value):
            continue
        elif kind == "unet" and name == "timestep" and isinstance(value, int | float):
            names.append(name)
            tensors.append(torch.tensor(value))
        elif isinstance(value, torch.Tensor):
            names.append(name)
            tensors.append(value)
        elif name in _DICTS and isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            for key in sorted(value):
                names.append(f"{name}.{key}")
                tensors.append(value[key])
        else:
            return None
    if any(t.dtype not in _DTYPES or t.device.type != "cpu" for t in tensors):
        return None
    return names, [t.detach().contiguous() for t in tensors], options


def _split_batch(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The call as one call per batch item: the tensors whose first dimension is the batch (that of the first
    tensor: the sample, the token ids or the latents) are sliced, the others (a scalar timestep) go whole.

    One compiled model per image size then serves every batch (CFG's two predictions, coalesced calls) without
    a conversion per batch size: a CPU is compute-bound, so a batch of N costs N calls' time either way (the real
    SDXL-Turbo measured 1.01x with 4 coalesced callers, docs/serving.md)."""
    batch = tensors[0].shape[0] if tensors[0].dim() else 1
    if batch == 1:
        return [tensors]
    return [[t[i : i + 1] if t.dim() and t.shape[0] == batch else t for t in tensors] for i in range(batch)]


def _unflatten(names: list[str], tensors: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for name, tensor in zip(names, tensors, strict=True):
        head, _, key = name.partition(".")
        if key:
            kwargs.setdefault(head, {})[key] = tensor
        else:
            kwargs[name] = tensor
    return kwargs


class OpenVINOForward:
    """A module's `forward` computed by OpenVINO, one compiled model per input signature (names, shapes, dtypes)."""

    def __init__(
        self,
        module: nn.Module,
        kind: Kind,
        *,
        weights_key: str | None,
        precision: str | None,
        use_cache: bool,
        weights: str | None = None,
    ) -> None:
        self.module, self.kind, self.precision, self.use_cache = module, kind, precision, use_cache
        self.weights = weights  # None (f32 in the IR), "int8" or "int8-full" (openvino_cache.WEIGHT_FORMATS)
        self.torch_forward = types.MethodType(type(module).forward, module)
        self._signature = inspect.signature(self.torch_forward)
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()
        self._weights_key = weights_key  # None: unknown provenance, named by a hash when first needed

    def weights_changed(self, weights_key: str | None) -> None:
        """The module's weights changed (`gen.load_lora`, `gen.weights_changed()`): every shape converts again,
        from the new weights, named `weights_key` on disk (None: by their hash)."""
        with self._lock:
            self._entries.clear()
            self._weights_key = weights_key

    def _key_of_weights(self) -> str:
        """The weights' name on disk; with unknown provenance their hash, computed once per change."""
        if self._weights_key is None:
            self._weights_key = weights_hash(self.module)
        return self._weights_key

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A copy of the wrapped module (`own_copy`) is a torch module again: the recipe decides anew."""
        copied = memo.get(id(self.module), self.module)
        return types.MethodType(type(self.module).forward, copied)

    @property
    def shapes(self) -> list[tuple[Any, ...]]:
        """The input signatures compiled so far."""
        return list(self._entries)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _torch_only.get():
            return self.torch_forward(*args, **kwargs)
        flat = _flatten(self.kind, self._signature.bind(*args, **kwargs).arguments)
        if flat is None:
            return self.torch_forward(*args, **kwargs)
        names, tensors, options = flat
        items = _split_batch(tensors)
        key = tuple((n, tuple(t.shape), t.dtype) for n, t in zip(names, items[0], strict=True))
        entry = self._entries.get(key)
        if entry is None:
            with self._lock:
                entry = self._entries.get(key) or self._compile(key, names, items[0])
        results = [entry.model.infer([t.numpy() for t in item]) for item in items]
        outputs = results[0] if len(results) == 1 else [torch.cat(parts) for parts in zip(*results, strict=True)]
        return self._rebuild(outputs, entry.structure, options)

    def _compile(self, key: tuple[Any, ...], names: list[str], tensors: list[torch.Tensor]) -> _Entry:
        entry = _Entry(model=None)

        def traced(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self._traced_call(_unflatten(names, inputs), entry.structure)

        start = time.perf_counter()
        calibration = latent_redraws(names, tensors) if self.weights == "int8-full" else ()
        entry.model, converted = compiled_model(
            self.module, self._key_of_weights(), traced, tensors, names,
            precision=self.precision, use_cache=self.use_cache, weights=self.weights, calibration=calibration,
        )  # fmt: skip
        if self.kind == "text_encoder" and not entry.structure:  # from the disk cache: learn the output fields
            with torch.no_grad():  # from one token, which costs next to nothing
                self._traced_call(_unflatten(names, tuple(t[:, :1] for t in tensors)), entry.structure)
        self._entries[key] = entry
        log = _log.get()
        alone = log is None  # a call outside a generation (gen.encode, a pipeline of its own): said at once
        log = log or CompileLog()
        log.add(self.kind, time.perf_counter() - start, converted=converted)
        if alone:
            log.announce(", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, tensors, strict=True)))
        return entry

    def _traced_call(self, kwargs: dict[str, Any], structure: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The torch forward with fixed options, its output flattened to a tuple (its structure noted)."""
        with torch_forwards():
            if self.kind == "unet":
                return (self.torch_forward(**kwargs, return_dict=False)[0],)
            if self.kind == "decoder":
                return (self.torch_forward(**kwargs),)
            out = self.torch_forward(**kwargs, output_hidden_states=True, return_dict=True)
        keys = [k for k in out.keys() if k != "hidden_states"]  # noqa: SIM118 (ModelOutput)
        structure.update(cls=type(out), keys=keys)
        return (*(out[k] for k in keys), *out.hidden_states)

    def _rebuild(self, outputs: list[torch.Tensor], structure: dict[str, Any], options: dict[str, Any]) -> Any:
        """What the torch forward would have returned for these options."""
        if self.kind == "decoder":
            return outputs[0]
        if self.kind == "unet":
            if options.get("return_dict", True) is False:
                return (outputs[0],)
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=outputs[0])
        keys: list[str] = structure["keys"]
        fields: dict[str, Any] = dict(zip(keys, outputs, strict=False))
        if options.get("output_hidden_states"):
            fields["hidden_states"] = tuple(outputs[len(keys) :])
        out = structure["cls"](**fields)
        return out.to_tuple() if options.get("return_dict") is False else out


def _wrap(module: nn.Module, kind: Kind, weights_key: str | None, **options: Any) -> None:
    object.__setattr__(module, "forward", OpenVINOForward(module, kind, weights_key=weights_key, **options))


def use_openvino(
    modules: dict[str, nn.Module],
    *,
    weights_keys: dict[str, str | None],
    precision: str | None = None,
    use_cache: bool = True,
    subpixel: bool = False,
    unet_weights: str | None = None,
) -> None:
    """Run the UNet (`"unet"`), the text encoders (`"text_encoder*"`) and the VAE decoder (`"vae"`: its
    `.decoder`) of `modules` through OpenVINO, each shape converted on its first call. Others are left alone.
    `weights_keys`: each module's weights named for the disk cache (`WeightsIdentity.module_key`; None or absent:
    unknown, named by their hash). `subpixel`: the decoder's upsamplers are converted as sub-pixel convolutions
    (`subpixel.SubpixelUpsample2D`: the same sums with 16 taps per input pixel instead of 36); the UNet's are left
    as they are, so its compiled model stays the one plain OpenVINO (the bench's peer) compiles, and is shared with
    it. `unet_weights="int8"`: the UNet's weights compressed to int8 by NNCF, `"int8-full"`: its weights and
    activations quantized to int8, calibrated on its first call's inputs (`fastdiff[int8]`, `openvino_int8`; each
    its own cache key)."""
    options: dict[str, Any] = {"precision": precision, "use_cache": use_cache}
    for name, module in modules.items():
        key = weights_keys.get(name)
        if name == "unet":
            _wrap(module, "unet", key, weights=unet_weights, **options)
        elif name.startswith("text_encoder"):
            _wrap(module, "text_encoder", key, **options)
        elif name == "vae" and isinstance(module.decoder, nn.Module):
            if subpixel:
                use_subpixel_upsampling(module.decoder)
            _wrap(module.decoder, "decoder", key, **options)


def openvino_forwards(pipe: Any) -> dict[str, OpenVINOForward]:
    """The engine's wrapped modules of `pipe` by component name ("vae": its decoder); empty under torch."""
    found: dict[str, OpenVINOForward] = {}
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, name, None)
        module = getattr(module, "decoder", None) if name == "vae" else module
        forward = getattr(module, "forward", None)
        if isinstance(forward, OpenVINOForward):
            found[name] = forward
    return found
