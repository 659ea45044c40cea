"""`export_onnx`: a generator's text encoder(s), UNet and VAE decoder as ONNX files at static shapes, each checked
against its torch module with onnxruntime (CPU) on the example inputs, plus `manifest.json`, in one folder.

The exporter is torch's maintained one (`torch.onnx.export(dynamo=True)`: torch.export, then onnxscript), at
opset 18. `dtype="float16"` stores the large float weights in half precision with a Cast to float32 after each
(half the download; the graph still computes in float32, so the same file runs on WASM and WebGPU), and is
checked against the torch module with the same weights rounded to half.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._quiet import onnx_exporter
from ..errors import FastDiffError
from .manifest import build_manifest
from .modules import Component, components

__all__ = ["TOLERANCE", "Exported", "OnnxExport", "check_onnx", "export_component", "export_onnx", "half_rounded"]

OPSET = 18
Dtype = Literal["float32", "float16"]
# Largest |onnxruntime - torch| over the output, relative to the output's own scale (max(1, max |torch|)). Measured
# on the tiny models and fastdiff-shapes: ≤ 3e-6, in float32 and for float16 storage (checked against the torch
# module with the same weights rounded to half); the float16 bound leaves room for weights the exporter folds
# together before they are rounded.
TOLERANCE: dict[str, float] = {"float32": 1e-4, "float16": 1e-3}
HALF_MIN_ELEMENTS = 1024  # smaller tensors (biases, norms) stay float32: they weigh little and keep precision
HALF_MAX = 65504.0  # the largest float16; a tensor beyond it (or not finite) stays float32
EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to `NAME.onnx.data` (protobuf caps one file at 2 GB)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Exported:
    """One exported file: where it is, its input and output names, its size and the error measured against torch."""

    name: str
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    bytes: int
    max_error: float
    external_data: str | None = None


def _halvable(array: np.ndarray[Any, Any]) -> bool:
    return bool(array.size >= HALF_MIN_ELEMENTS and np.isfinite(array).all() and np.abs(array).max() <= HALF_MAX)


def _store_half(model: Any) -> None:
    """Replace each large float32 initializer by a float16 one followed by a Cast back to float32."""
    import onnx_ir as ir

    graph = model.graph
    first = graph.node(0)
    for name, value in list(graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or tensor.dtype != ir.DataType.FLOAT:
            continue
        array = tensor.numpy()
        if not _halvable(array):
            continue
        graph.initializers.pop(name)
        half = ir.Value(name=f"{name}_fp16", const_value=ir.tensor(array.astype(np.float16)))
        graph.register_initializer(half)
        cast = ir.node("Cast", [half], {"to": ir.DataType.FLOAT}, name=f"{name}_cast")
        value.replace_all_uses_with(cast.outputs[0])
        value.name, cast.outputs[0].name = f"{name}_unused", name
        graph.insert_before(first, cast)


def _save(model: Any, path: Path) -> str | None:
    """Write the model without the exporter's per-node stack traces and module paths (half of a small model's
    file, of no use to a runtime); its weights go to an external data file beside it when they are large."""
    import onnx_ir as ir

    for node in model.graph.all_nodes():
        node.metadata_props.clear()
        node.doc_string = None
        for value in node.outputs:
            value.metadata_props.clear()
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    external = f"{path.name}.data" if size > EXTERNAL_DATA_BYTES else None
    ir.save(model, str(path), external_data=external)
    return external


def export_component(component: Component, folder: Path, *, dtype: Dtype = "float32") -> Exported:
    """Export one component to `folder/NAME.onnx` and check it with onnxruntime; raises when it is off."""
    if dtype not in TOLERANCE:
        raise FastDiffError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    path = folder / f"{component.name}.onnx"
    names = tuple(component.inputs)
    with onnx_exporter(), torch.no_grad():
        program: Any = torch.onnx.export(
            component.module,
            tuple(component.inputs.values()),
            input_names=list(names),
            output_names=list(component.outputs),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if dtype == "float16":
        _store_half(program.model)
    external = _save(program.model, path)
    reference = half_rounded(component.module) if dtype == "float16" else component.module
    error = check_onnx(path, reference, component.inputs, tolerance=TOLERANCE[dtype])
    size = path.stat().st_size + (path.with_name(external).stat().st_size if external else 0)
    return Exported(component.name, path, names, component.outputs, size, error, external)


def half_rounded(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` whose weights are rounded to float16 where the file stores them so."""
    rounded = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in [*rounded.parameters(), *rounded.buffers()]:
            if tensor.is_floating_point() and _halvable(tensor.detach().numpy()):
                tensor.copy_(tensor.half().float())
    return rounded


def check_onnx(path: Path, module: torch.nn.Module, inputs: dict[str, torch.Tensor], *, tolerance: float) -> float:
    """The largest relative error of onnxruntime's outputs against `module`'s on `inputs`; raises above `tolerance`."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        out = module(*inputs.values())
    want = [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
    worst = 0.0
    for name, a, b in zip([o.name for o in session.get_outputs()], got, want, strict=True):
        if a.shape != b.shape:
            raise FastDiffError(f"{path.name}: output {name} has shape {a.shape}, torch gives {b.shape}")
        error = float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))
        if not error <= tolerance:  # also catches NaN
            raise FastDiffError(f"{path.name}: output {name} is off torch by {error:.2e} (tolerance {tolerance:.0e})")
        worst = max(worst, error)
    return worst


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote: the folder, the manifest (as written) and each file with its measured error."""

    folder: Path
    manifest: dict[str, Any]
    models: tuple[Exported, ...]
    seconds: float

    def summary(self) -> str:
        """One line per file: name, size, error against torch."""
        rows = [f"{m.path.name:<20} {m.bytes / 1e6:8.2f} MB  error vs torch {m.max_error:.1e}" for m in self.models]
        return "\n".join(rows)


def _check_exportable(generator: Any) -> None:
    """Export traces the float32 CPU modules as loaded: refuse a generator whose modules were cast or compiled."""
    recipe = generator.recipe
    if generator.device.type != "cpu" or generator.dtype != torch.float32 or recipe.changes_modules:
        raise FastDiffError(
            f"ONNX export needs a float32 CPU generator with unchanged modules, got {generator!r} with {recipe}; "
            "load it with FewStepGenerator.from_preset(name, device='cpu', dtype='float32', optimize='none')"
        )


def export_onnx(
    generator: Any,
    out: str | Path,
    *,
    dtype: Dtype = "float32",
    height: int | None = None,
    width: int | None = None,
    tiny_vae: Any = None,
) -> OnnxExport:
    """Export `generator`'s modules to `out` at `height` × `width` (default: the preset's size), each checked
    against torch with onnxruntime; `tiny_vae` (an `AutoencoderTiny`) replaces the VAE decoder."""
    _check_exportable(generator)
    preset, pipe = generator.preset, generator.pipeline
    height, width = height or preset.height, width or preset.width
    decoder = pipe.vae if tiny_vae is None else tiny_vae
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    parts = components(pipe, preset, height=height, width=width, decoder=decoder)
    models = tuple(export_component(c, folder, dtype=dtype) for c in parts)
    manifest = build_manifest(pipe, preset, height=height, width=width, models=models, decoder=decoder, dtype=dtype)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return OnnxExport(folder, manifest, models, time.perf_counter() - start)
