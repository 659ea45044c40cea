"""A static site that generates as you type, with no server: the page, the ONNX files and their manifest, and
onnxruntime-web's JS and WASM, all in one folder that any static file server can serve, offline.

Layout: `index.html`, `app.js`, `tokenizer.js`, `sampler.js`; `models/` (what `export_onnx` writes: the ONNX
files and `manifest.json`); `ort/` (onnxruntime-web). `build_site` makes it from an existing ONNX export,
`export_web` from a generator (export, then build).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FastDiffError
from ..schedulers import build_scheduler
from .modules import unet_batch
from .npm import ORT_WEB_VERSION, fetch_package, ort_web_files
from .onnx import MANIFEST, Dtype, export_onnx

__all__ = ["PAGE_FILES", "WebExport", "build_site", "check_web", "export_web", "torch_noise"]

PAGE_FILES = ("index.html", "app.js", "tokenizer.js", "sampler.js")
EULER = "EulerDiscreteScheduler"


@dataclass(frozen=True)
class WebExport:
    """What was built: the site folder, its manifest, and the onnxruntime-web version copied into it."""

    folder: Path
    manifest: dict[str, Any]
    ort_version: str

    def sizes(self) -> dict[str, int]:
        """Bytes of every file of the site, by path relative to the folder."""
        files = sorted(p for p in self.folder.rglob("*") if p.is_file())
        return {str(p.relative_to(self.folder)): p.stat().st_size for p in files}


def check_web(name: str, scheduler_class: str, recipe: str, batch: int) -> None:
    """The page steps Euler without classifier-free guidance (one UNet row): refuse anything else."""
    if scheduler_class != EULER or batch != 1:
        why = f"scheduler {recipe!r} ({scheduler_class})" if scheduler_class != EULER else "classifier-free guidance"
        raise FastDiffError(
            "web export supports Euler presets without guidance (euler-trailing, euler-trailing-x0: e.g. sd-turbo, "
            f"sdxl-lightning-4step, fastdiff-shapes): {name} uses {why}; `fastdiff export onnx` still exports it"
        )


def build_site(
    models: str | Path, out: str | Path, *, ort_version: str = ORT_WEB_VERSION, npm_cache: Path | None = None
) -> WebExport:
    """The site in `out` for the ONNX export in `models` (a folder `export_onnx` wrote; copied unless it is
    `out/models` already)."""
    source, folder = Path(models), Path(out)
    manifest = json.loads((source / MANIFEST).read_text())
    scheduler = manifest["scheduler"]
    check_web(manifest["preset"], scheduler["class"], scheduler["recipe"], manifest["unet_batch"])
    ort_web_files(folder / "ort", version=ort_version, cache=npm_cache)
    target = folder / "models"
    if source.resolve() != target.resolve():
        shutil.copytree(source, target, dirs_exist_ok=True)
    site = resources.files("fastdiff.export") / "site"
    for name in PAGE_FILES:
        (folder / name).write_bytes((site / name).read_bytes())
    return WebExport(folder, manifest, ort_version)


def export_web(
    generator: Any,
    out: str | Path,
    *,
    dtype: Dtype = "float16",
    height: int | None = None,
    width: int | None = None,
    ort_version: str = ORT_WEB_VERSION,
    npm_cache: Path | None = None,
) -> WebExport:
    """Export `generator` to `out/models` and build the site around it. float16 (the default) stores the
    weights in half precision, half the download; the page computes in float32 either way."""
    preset = generator.preset
    scheduler = type(build_scheduler(preset.scheduler, copy.deepcopy(generator.pipeline.scheduler))).__name__
    check_web(preset.name, scheduler, preset.scheduler, unet_batch(preset))  # before minutes of export
    folder = Path(out)
    fetch_package("onnxruntime-web", ort_version, cache=npm_cache)  # into the cache: an offline build fails fast
    export_onnx(generator, folder / "models", dtype=dtype, height=height, width=width)
    return build_site(folder / "models", folder, ort_version=ort_version, npm_cache=npm_cache)


def torch_noise(latent_shape: tuple[int, ...] | list[int], seed: int) -> np.ndarray[Any, Any]:
    """The initial noise `FewStepGenerator` draws for one image of `seed` (a CPU generator, float32), as the
    array the page loads with `?noise=FILE` (write it with `.astype('<f4').tofile(FILE)`)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(latent_shape), generator=generator, dtype=torch.float32).numpy()
