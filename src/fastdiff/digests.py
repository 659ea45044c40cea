"""Digests of a module's weights: which weights are these, in any process (the OpenVINO disk cache's key)?
A weight that lies unwritten in a memory-mapped file is named by the file instead of hashed."""

from __future__ import annotations

import hashlib
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from .mapped import FileMappings
from .stamps import fingerprints, version

__all__ = ["weights_digest"]

_lock = threading.Lock()
# What was digested, by the tensors' addresses: their weak references, write counters, fingerprints, digest.
_digests: dict[tuple[object, ...], tuple[list[weakref.ref[Tensor]], list[tuple[int, bytes | None]], str]] = {}


def _tensor_digest(t: torch.Tensor, files: FileMappings, unwritten: bool) -> bytes:
    h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype};".encode())
    identity = files.identity(t, unwritten=unwritten)
    if identity is not None:
        h.update(identity.encode())
    else:
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.digest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, shape, dtype, bytes): equal weights give equal digests in
    any process. A weight that lies unwritten in a mapped file (`from_pretrained` of safetensors) is named by
    its file and offset instead of its bytes (`FileMappings.identity`: hashing SDXL's 13.9 GB took 10 s on 2
    cores and read every page from disk): the same file gives the same digest in any process, a copy of it
    another. Remembered for as long as the very same tensors live (weak references: the digest of module
    copies sharing them is not computed again, and a freed tensor's address reused by another never matches)."""
    named = [*module.named_parameters(), *module.named_buffers()]
    ident = (type(module).__qualname__, *((n, t.data_ptr(), t.shape, t.dtype) for n, t in named))
    tensors = [t for _, t in named]
    files = FileMappings()
    written = list(zip(map(version, tensors), fingerprints(tensors, files), strict=True))  # or through `.data`
    with _lock:
        known = _digests.get(ident)
    if known is not None and all(ref() is not None for ref in known[0]) and known[1] == written:
        return known[2]
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:  # hashlib releases the GIL
        clean = [fingerprint is None for _, fingerprint in written]  # pages known unwritten: not read again
        parts = list(pool.map(lambda t, c: _tensor_digest(t, files, c), tensors, clean))
    h = hashlib.sha256(type(module).__qualname__.encode())
    for (name, _), part in zip(named, parts, strict=True):
        h.update(name.encode() + part)
    digest = h.hexdigest()
    with _lock:
        for key in [k for k, (refs, _, _) in _digests.items() if any(ref() is None for ref in refs)]:
            del _digests[key]
        _digests[ident] = ([weakref.ref(t) for _, t in named], written, digest)
    return digest
