"""onnxruntime-web's own JS and WASM files, taken from the npm registry at build time and cached.

The tarball named by the registry's metadata is checked against the metadata's `dist.integrity` (SHA-512) before
anything is read from it, and kept under the user cache dir with that checksum, so later builds need no network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import FastDiffError

__all__ = ["ORT_WEB_FILES", "ORT_WEB_VERSION", "RegistryUnreachable", "cache_dir", "fetch_package", "ort_web_files"]

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
            data: bytes = response.read()
            return data
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
    meta = json.loads(_get(f"{REGISTRY}/{name}/{version}"))
    dist = meta["dist"]
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
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name in ORT_WEB_FILES:
            try:
                member = archive.extractfile(f"package/dist/{name}")
            except KeyError:
                member = None
            if member is None:
                raise FastDiffError(f"onnxruntime-web@{version} has no dist/{name}")
            (dest / name).write_bytes(member.read())
            written.append(dest / name)
    notice = f"onnxruntime-web {version} (MIT licence, Microsoft), from the npm registry: {', '.join(ORT_WEB_FILES)}\n"
    (dest / "NOTICE.txt").write_text(notice)
    return written
