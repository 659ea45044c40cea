"""A Hugging Face hub cache filled with tiny models under the real repo ids and file names of the presets.

The layout is the one `huggingface_hub` writes (and reads with `local_files_only=True`):

    models--{org}--{name}/refs/main                   the commit id (40 hex) that "main" points to
    models--{org}--{name}/blobs/{etag}                file contents: sha256 for LFS files, git blob sha1 otherwise
    models--{org}--{name}/snapshots/{commit}/{path}   relative symlinks to the blobs (copies where symlinks fail)
    models--{org}--{name}/trees/{commit}.json         the repo's file listing, written by `snapshot_download`

Pipeline repos get the listing, as after `DiffusionPipeline.from_pretrained` (diffusers reads it offline to pick
variant files); checkpoint repos do not, as after a lone `hf_hub_download`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import torch

from ..families import FAMILIES
from ..presets import Checkpoint, Family, Preset, get, is_shipped
from .repo_configs import SCHEDULER_CONFIGS
from .tiny import save_tiny_pipeline, tiny_autoencoder_tiny, tiny_lora, tiny_unet_checkpoint

__all__ = ["cached_repo_path", "make_hf_cache", "repo_seed"]

# What the Hub stores with git LFS (its default .gitattributes); their etag is the content's sha256.
_LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5")
_TINY_VAE_LATENT_CHANNELS = {"madebyollin/taef1": 16, "madebyollin/taesd3": 16}  # TAESD and TAESDXL have SD's 4


def repo_seed(*names: str) -> int:
    """A stable seed for a repo or file name, so the same name always gets the same weights."""
    return int.from_bytes(hashlib.sha256("/".join(names).encode()).digest()[:4], "big") % 2**31


def _commit(repo_id: str) -> str:
    return hashlib.sha1(f"fastdiff-tiny:{repo_id}".encode(), usedforsecurity=False).hexdigest()


def _repo_dir(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def cached_repo_path(cache_dir: str | Path, repo_id: str) -> Path:
    """The snapshot folder that `refs/main` of `repo_id` points to in `cache_dir`."""
    repo = _repo_dir(Path(cache_dir), repo_id)
    commit = (repo / "refs" / "main").read_text().strip()
    return repo / "snapshots" / commit


def make_hf_cache(cache_dir: str | Path, presets: Iterable[str | Preset], *, fp16_variant: bool = True) -> Path:
    """Lay out, in a hub cache, the pipeline repo and checkpoint file of each preset as tiny random models, and
    the tiny autoencoder repo of its family (optimize="max")."""
    cache_dir = Path(cache_dir)
    # Seeds come from the names: a repo gets the same weights in every cache and a checkpoint is its base repo's
    # UNet perturbed (float16, like the real files). Files already in the cache are left as they are.
    for preset in map(get, presets):
        if is_shipped(preset):  # its real files ship in the package: nothing to lay out
            continue
        if not (_repo_dir(cache_dir, preset.repo_id) / "refs" / "main").exists():
            files = _pipeline_files(preset.family, preset.repo_id, fp16_variant)
            _write_repo(cache_dir, preset.repo_id, files, listing=True)
        if preset.checkpoint is not None:
            ckpt = preset.checkpoint
            snapshot = _repo_dir(cache_dir, ckpt.repo_id) / "snapshots" / _commit(ckpt.repo_id)
            if not (snapshot / ckpt.filename).exists():
                data = _checkpoint_bytes(ckpt, preset.family, repo_seed(preset.repo_id))
                _write_repo(cache_dir, ckpt.repo_id, {ckpt.filename: data}, listing=False)
        tiny_repo = FAMILIES[preset.family].tiny_vae_repo
        if tiny_repo is not None and not (_repo_dir(cache_dir, tiny_repo) / "refs" / "main").exists():
            _write_repo(cache_dir, tiny_repo, _tiny_vae_files(tiny_repo), listing=True)
    return cache_dir


@lru_cache(maxsize=4)
def _tiny_vae_files(repo_id: str) -> dict[str, bytes]:
    """A tiny `AutoencoderTiny` laid out as TAESD's repo (config.json, diffusion_pytorch_model.safetensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        channels = _TINY_VAE_LATENT_CHANNELS.get(repo_id, 4)
        tiny_autoencoder_tiny(seed=repo_seed(repo_id), latent_channels=channels).save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


@lru_cache(maxsize=8)
def _pipeline_files(family: Family, repo_id: str, fp16_variant: bool) -> dict[str, bytes]:
    """The files of a tiny pipeline for `repo_id` with its real scheduler, built once per process."""
    with tempfile.TemporaryDirectory() as tmp:
        root = save_tiny_pipeline(
            family,
            Path(tmp),
            seed=repo_seed(repo_id),
            scheduler_config=SCHEDULER_CONFIGS.get(repo_id),  # None: the family's default, for user presets
            fp16_variant=fp16_variant,
        )
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@lru_cache(maxsize=32)
def _checkpoint_bytes(ckpt: Checkpoint, family: Family, base_seed: int) -> bytes:
    """A tiny UNet state dict (float16 like the real files; pickled for `.bin`) or LoRA under `ckpt.filename`."""
    seed = repo_seed(ckpt.repo_id, ckpt.filename)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(ckpt.filename).name
        if ckpt.kind == "lora":
            tiny_lora(family, path, seed=seed)
        else:
            dtype = torch.float16
            tiny_unet_checkpoint(family, path, seed=seed, base_seed=base_seed, pickle=ckpt.is_pickle, dtype=dtype)
        return path.read_bytes()


def _is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _listing_entry(path: str, data: bytes) -> dict[str, object]:
    """One file of `trees/{commit}.json`: for LFS files, git holds a pointer and the Hub reports its blob id."""
    if not _is_lfs(path):
        return {"size": len(data), "blob_id": _git_blob_id(data)}
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return {"size": len(data), "blob_id": _git_blob_id(pointer), "lfs_sha256": sha256, "lfs_size": len(data)}


def _write_repo(cache_dir: Path, repo_id: str, files: dict[str, bytes], *, listing: bool) -> None:
    """Add `files` to the snapshot of `repo_id` that `refs/main` points to."""
    repo, commit = _repo_dir(cache_dir, repo_id), _commit(repo_id)
    for rel, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(rel) else _git_blob_id(data)
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        _link(blob, repo / "snapshots" / commit / rel)
    if listing:
        tree = {"format_version": 1, "files": {rel: _listing_entry(rel, data) for rel, data in sorted(files.items())}}
        (repo / "trees").mkdir(exist_ok=True)
        (repo / "trees" / f"{commit}.json").write_text(json.dumps(tree, indent=1))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it


def _link(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.exists() or pointer.is_symlink():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks (Windows without developer mode): huggingface_hub then keeps plain copies
        pointer.write_bytes(blob.read_bytes())
