"""A static site that generates as you type, with no server: the page, `models/` (what `export_onnx` writes) and
`ort/` (onnxruntime-web's JS and WASM, from the npm registry: checked against its SHA-512 and cached), in one folder.

`build_site` makes it from an existing ONNX export, `export_web` from a generator (export, then build).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FastDiffError
from .modules import scheduler_spec, unet_batch
from .onnx import MANIFEST, Dtype, export_onnx

__all__ = [
    "ORT_WEB_VERSION",
    "RegistryUnreachable",
    "WebExport",
    "build_site",
    "check_web",
    "export_web",
    "torch_noise",
]

PAGE_FILES = ("index.html", "app.js", "tokenizer.js", "sampler.js")
EULER = "EulerDiscreteScheduler"
REGISTRY = "https://registry.npmjs.org"
ORT_WEB_VERSION = "1.30.0"  # pinned: the page is tested against this version
# The default bundle (WebGPU through JSEP, and WASM) and the one WASM binary it loads.
ORT_WEB_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
TIMEOUT_S = 60


class RegistryUnreachable(FastDiffError):
    """The npm registry could not be reached (offline, proxy, timeout), as opposed to a bad answer from it."""


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/fastdiff/npm` (default `~/.cache/fastdiff/npm`)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fastdiff" / "npm"


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as err:  # the registry answered, and said no: not a network problem
        raise FastDiffError(f"the npm registry answered {err.code} for {url}") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise RegistryUnreachable(f"could not fetch {url} ({err}); the web export needs the npm registry once") from err


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_package(name: str, version: str, *, cache: Path | None = None) -> bytes:
    """The package's tarball, from the cache when its recorded checksum still matches, else from the registry."""
    folder = cache or cache_dir()
    tarball, checksum = folder / f"{name}-{version}.tgz", folder / f"{name}-{version}.tgz.integrity"
    if tarball.is_file() and checksum.is_file():
        data = tarball.read_bytes()
        if _integrity(data) == checksum.read_text().strip():
            return data
    dist = json.loads(_get(f"{REGISTRY}/{name}/{version}"))["dist"]
    data = _get(dist["tarball"])
    if _integrity(data) != dist["integrity"]:
        raise FastDiffError(f"{name}@{version}: the tarball does not match the registry's {dist['integrity']}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(tarball)  # atomic: a build killed mid-write leaves no half tarball behind
    checksum.write_text(dist["integrity"] + "\n")
    return data


def ort_web_files(dest: Path, *, version: str = ORT_WEB_VERSION, cache: Path | None = None) -> list[Path]:
    """Copy the onnxruntime-web files the page loads into `dest`; returns their paths."""
    data = fetch_package("onnxruntime-web", version, cache=cache)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name in ORT_WEB_FILES:
            path = f"package/dist/{name}"
            member = archive.extractfile(path) if path in archive.getnames() else None
            if member is None:
                raise FastDiffError(f"onnxruntime-web@{version} has no dist/{name}")
            (dest / name).write_bytes(member.read())
    notice = f"onnxruntime-web {version} (MIT licence, Microsoft), from the npm registry: {', '.join(ORT_WEB_FILES)}\n"
    (dest / "NOTICE.txt").write_text(notice)
    return [dest / name for name in ORT_WEB_FILES]


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
    scheduler = scheduler_spec(generator.pipeline, preset)["class"]
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
