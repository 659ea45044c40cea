"""A CLIP tokenizer made in code, standing for the repos' own (whose vocabulary files are not shipped).

Every byte is a token, alone and as a word end, so any text tokenizes and every id stays below the real CLIP
vocabulary's size: a random-weight or tiny text encoder reads it as it would read the real tokenizer's ids.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer

__all__ = ["BOS", "EOS", "byte_level_tokenizer", "byte_vocab"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character table, the alphabet of CLIP's byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in printable)
    chars = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}
    return [chars[b] for b in range(256)]


@lru_cache(maxsize=1)
def byte_vocab() -> dict[str, int]:
    """Every byte alone and as a word end, then BOS, then EOS last (CLIP's pooling relies on EOS being highest)."""
    chars = _bytes_to_unicode()
    tokens = [*chars, *(c + "</w>" for c in chars), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def byte_level_tokenizer(*, pad_token: str = EOS) -> CLIPTokenizer:
    """A CLIP tokenizer with a byte-level vocabulary and no merges: one token per character, 77 at most."""
    return CLIPTokenizer(vocab=dict(byte_vocab()), merges=[], pad_token=pad_token, model_max_length=77)
