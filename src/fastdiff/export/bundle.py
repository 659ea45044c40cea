"""`export_onnx`: a generator's text encoder(s), UNet and VAE decoder as checked ONNX files, plus `manifest.json`,
in one folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import FastDiffError
from .manifest import build_manifest
from .modules import components
from .onnx import Dtype, Exported, export_component

__all__ = ["MANIFEST", "OnnxExport", "export_onnx"]

MANIFEST = "manifest.json"


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
