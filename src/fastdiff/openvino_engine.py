"""The CPU engine: a module's `forward` replaced by `OpenVINOForward`, which runs each call on an OpenVINO model
compiled for its shapes (`openvino_cache`) inside diffusers' own pipeline loop. Calls it cannot take (a LoRA scale,
an attention mask, bf16 tensors) run the torch forward; the generator calls `weights_changed` after weight edits.
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
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from .errors import warn
from .openvino_cache import Shared, compiled_model
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
T = TypeVar("T")


@contextmanager
def _set(var: ContextVar[Any], value: T) -> Iterator[T]:
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def torch_forwards() -> AbstractContextManager[bool]:
    """Wrapped modules run their torch forward inside this block (FlopCounterMode counts torch's ops only)."""
    return _set(_torch_only, True)


def expected_shapes() -> AbstractContextManager[bool]:
    """New shapes converted inside this block (a warm-up) do not warn."""
    return _set(_quiet, True)


@dataclass
class CompileLog:
    """What the engine made ready during one pipeline call: the seconds spent (converting, or compiling an IR the
    disk cache held) and the seconds spent converting, per module kind."""

    seconds: float = 0.0
    converted: dict[Kind, float] = field(default_factory=dict)

    def announce(self, size: str) -> None:
        """One `FastDiffWarning` for every module converted in the call (none for disk-cache reads or a warm-up)."""
        if not self.converted or _quiet.get():
            return
        names = [_NAMES[k] for k in self.converted]  # SDXL's two text encoders: named once
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        warn(
            f"OpenVINO converted the {listed} for {size} in {sum(self.converted.values()):.1f} s on this call (kept on "
            "disk: later loads read it). gen.warmup(height=..., width=..., batch=..., guidance_scale=..., "
            "img2img=...) at load time keeps this off a user's call."
        )


_log: ContextVar[CompileLog | None] = ContextVar("fastdiff_openvino_compile_log", default=None)


def compile_log() -> AbstractContextManager[CompileLog]:
    """Collect what the engine compiles inside this block (one pipeline call) instead of warning per module."""
    return _set(_log, CompileLog())


def _flatten(kind: Kind, arguments: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The call's tensors by name (dict entries as `name.key`) and its options; None when the engine cannot take
    the call (a non-tensor argument, a dtype numpy lacks)."""
    tensors: dict[str, torch.Tensor] = {}
    options: dict[str, Any] = {}
    arguments |= arguments.pop("kwargs", {})  # transformers' **kwargs
    for name, value in arguments.items():
        if name in _OPTIONS[kind]:
            options[name] = value
        elif value is None or (name == "output_attentions" and not value):
            continue
        elif kind == "unet" and name == "timestep" and isinstance(value, int | float):
            tensors[name] = torch.tensor(value)
        elif isinstance(value, torch.Tensor):
            tensors[name] = value
        elif name in _DICTS and isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            tensors |= {f"{name}.{key}": value[key] for key in sorted(value)}
        else:
            return None
    if any(t.dtype not in _DTYPES or t.device.type != "cpu" for t in tensors.values()):
        return None
    return {name: t.detach().contiguous() for name, t in tensors.items()}, options


def _split_batch(tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """One call per item of the first tensor's batch (a scalar timestep goes whole): one compiled model per image
    size serves every batch, and a CPU is compute-bound anyway (4 coalesced SDXL-Turbo calls measured 1.01x)."""
    first = next(iter(tensors.values()))
    batch = first.shape[0] if first.dim() else 1
    return [
        {n: t[i : i + 1] if t.dim() and t.shape[0] == batch else t for n, t in tensors.items()} for i in range(batch)
    ]


def _unflatten(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`_flatten`'s tensors as keyword arguments again (`name.key` into the dict `name`)."""
    kwargs: dict[str, Any] = {}
    for name, tensor in tensors.items():
        head, _, key = name.partition(".")
        (kwargs.setdefault(head, {}) if key else kwargs)[key or name] = tensor
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
        weights: str | None = None,
    ) -> None:
        self.module, self.kind, self.precision, self.weights = module, kind, precision, weights
        self.torch_forward = types.MethodType(type(module).forward, module)
        self._signature = inspect.signature(self.torch_forward)
        self._entries: dict[tuple[Any, ...], Shared] = {}
        self._output: tuple[type, list[str]] | None = None  # a text encoder's output class and fields
        self._lock = threading.Lock()
        self._weights_key = weights_key  # None: unknown provenance, named by a hash when first needed

    def weights_changed(self, weights_key: str | None) -> None:
        """The weights changed: every shape converts again, named `weights_key` on disk (None: by their hash)."""
        with self._lock:
            self._entries.clear()
            self._weights_key = weights_key

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A copy of the wrapped module (`own_copy`) is a torch module again: the recipe decides anew."""
        return types.MethodType(type(self.module).forward, memo.get(id(self.module), self.module))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flat = None if _torch_only.get() else _flatten(self.kind, self._signature.bind(*args, **kwargs).arguments)
        if flat is None:
            return self.torch_forward(*args, **kwargs)
        tensors, options = flat
        items = _split_batch(tensors)
        key = tuple((n, tuple(t.shape), t.dtype) for n, t in items[0].items())
        model = self._entries.get(key)
        if model is None:
            with self._lock:
                model = self._entries.get(key) or self._compile(key, items[0])
        results = [model.infer([t.numpy() for t in item.values()]) for item in items]
        outputs = results[0] if len(results) == 1 else [torch.cat(parts) for parts in zip(*results, strict=True)]
        return self._rebuild(outputs, options)

    def _compile(self, key: tuple[Any, ...], example: dict[str, torch.Tensor]) -> Shared:
        def traced(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self._traced_call(_unflatten(dict(zip(example, inputs, strict=True))))

        start = time.perf_counter()
        if self._weights_key is None:  # unknown provenance: named by their hash, once per change
            self._weights_key = weights_hash(self.module)
        model, converted = compiled_model(
            self.module, self._weights_key, traced, example, precision=self.precision, weights=self.weights
        )
        if self.kind == "text_encoder" and self._output is None:  # from the disk cache: learn the output fields
            with torch.no_grad():  # from one token, which costs next to nothing
                self._traced_call(_unflatten({n: t[:, :1] for n, t in example.items()}))
        self._entries[key] = model
        seconds, log = time.perf_counter() - start, _log.get() or CompileLog()
        log.seconds += seconds
        if converted:
            log.converted[self.kind] = log.converted.get(self.kind, 0.0) + seconds
        if _log.get() is None:  # outside a generation: said now
            log.announce(", ".join(f"{n} {tuple(t.shape)}" for n, t in example.items()))
        return model

    def _traced_call(self, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The torch forward with fixed options, its output flattened to a tuple (a text encoder's fields noted)."""
        with torch_forwards():
            if self.kind == "unet":
                return (self.torch_forward(**kwargs, return_dict=False)[0],)
            if self.kind == "decoder":
                return (self.torch_forward(**kwargs),)
            out = self.torch_forward(**kwargs, output_hidden_states=True, return_dict=True)
        keys = [k for k in out.keys() if k != "hidden_states"]  # noqa: SIM118 (ModelOutput)
        self._output = (type(out), keys)
        return (*(out[k] for k in keys), *out.hidden_states)

    def _rebuild(self, outputs: list[torch.Tensor], options: dict[str, Any]) -> Any:
        """What the torch forward would have returned for these options."""
        if self.kind == "decoder":
            return outputs[0]
        if self.kind == "unet":
            if options.get("return_dict", True) is False:
                return (outputs[0],)
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=outputs[0])
        assert self._output is not None  # noted when the first shape compiled
        cls, keys = self._output
        fields: dict[str, Any] = dict(zip(keys, outputs, strict=False))
        if options.get("output_hidden_states"):
            fields["hidden_states"] = tuple(outputs[len(keys) :])
        out = cls(**fields)
        return out.to_tuple() if options.get("return_dict") is False else out


def use_openvino(
    modules: dict[str, nn.Module],
    *,
    weights_keys: dict[str, str | None] | None = None,
    precision: str | None = None,
    unet_weights: str | None = None,
) -> None:
    """Run `modules`' UNet ("unet"), text encoders ("text_encoder*") and VAE decoder ("vae") through OpenVINO,
    each shape converted on its first call. `weights_keys`: each module's weights' name on disk (None or absent:
    their hash). `unet_weights`: the UNet's weight format (None, or one of `openvino_cache.WEIGHT_FORMATS`)."""
    for name, module in modules.items():
        kind: Kind | None = "unet" if name == "unet" else "text_encoder" if name.startswith("text_encoder") else None
        if name == "vae" and isinstance(module.decoder, nn.Module):
            kind, module = "decoder", module.decoder
        if kind is not None:
            weights = unet_weights if kind == "unet" else None
            key = (weights_keys or {}).get(name)
            forward = OpenVINOForward(module, kind, weights_key=key, precision=precision, weights=weights)
            object.__setattr__(module, "forward", forward)


def openvino_forwards(pipe: Any) -> dict[str, OpenVINOForward]:
    """The engine's wrapped modules of `pipe` by component name ("vae": its decoder); empty under torch."""
    modules = {name: getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")}
    modules["vae"] = getattr(getattr(pipe, "vae", None), "decoder", None)
    forwards = {name: getattr(module, "forward", None) for name, module in modules.items()}
    return {name: forward for name, forward in forwards.items() if isinstance(forward, OpenVINOForward)}
