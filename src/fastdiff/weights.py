"""Which weights a generator runs, told explicitly: where they were loaded from and every change made since.

`WeightsIdentity.version` counts this process's changes (what in-memory caches key on); `provenance` names the
source files and each change, so the same load gets the same name in any process (the OpenVINO disk cache). Without
provenance (a direct write announced by `gen.weights_changed()`, a `from_pipeline` without `cache_key=`) the disk
cache names each module by `weights_hash`, once per version. Nothing compares or samples weights per call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["WeightsIdentity", "file_identity", "folder_identity", "source_identity", "weights_hash"]

# What a diffusers folder's weights are read from (configs too: they decide shapes and the architecture).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".json")


@dataclass(frozen=True)
class WeightsIdentity:
    """`provenance`: the sources and each change since, None if one is unknown; `version`: changes since load."""

    provenance: tuple[str, ...] | None
    version: int = 0

    def changed(self, change: str | None) -> WeightsIdentity:
        """The identity after one more change: `change` describes it (a LoRA file and scale), None when unknown."""
        provenance = None if change is None or self.provenance is None else (*self.provenance, change)
        return WeightsIdentity(provenance, self.version + 1)

    def module_key(self, name: str) -> str | None:
        """The name of module `name`'s weights in a disk cache (None: unknown, hash them)."""
        if self.provenance is None:
            return None
        return hashlib.sha256("\n".join((name, *self.provenance)).encode()).hexdigest()


def file_identity(path: str | Path) -> str:
    """A file by its resolved path, size and modification time. In the Hugging Face cache the resolved path is the
    blob, named by its content hash; a local file rewritten in place gets a new modification time."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"


def folder_identity(folder: str | Path) -> str:
    """A diffusers folder (or a hub snapshot) by the `file_identity` of every weight and config file in it."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    return "\n".join(f"{p.relative_to(root)}={file_identity(p)}" for p in files)


def weights_hash(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of `module` (names, shapes, dtypes, bytes): the name of weights of
    unknown provenance (SDXL's UNet: ~10 s on 2 cores, once per weights version)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    named: Iterable[tuple[str, torch.Tensor]] = (*module.named_parameters(), *module.named_buffers())
    for name, tensor in named:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def source_identity(location: str | Path, cache_dir: str | Path | None) -> str | None:
    """A local folder's `folder_identity`; a hub repo as cached: its snapshot's commit and the `folder_identity` of
    what is downloaded of it, None when the cache has no snapshot of it (nothing is fetched)."""
    from huggingface_hub import snapshot_download

    if Path(location).is_dir():
        return folder_identity(location)
    repo_id = str(location)
    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache_dir))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError
        return None
    return f"{repo_id}@{snapshot.name}\n{folder_identity(snapshot)}"
