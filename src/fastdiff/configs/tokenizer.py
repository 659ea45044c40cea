"""Tokenizers made in code, standing for the repos' own (whose vocabulary files are not shipped).

CLIP's: every byte is a token, alone and as a word end, so any text tokenizes and every id stays below the real CLIP
vocabulary's size: a random-weight or tiny text encoder reads it as it would read the real tokenizer's ids. The
others' (T5, Gemma, Qwen): a word a token, about as many as their BPEs make, and Qwen3's chat template.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

__all__ = ["BOS", "EOS", "QWEN3_CHAT_TEMPLATE", "byte_level_tokenizer", "byte_vocab", "word_level_tokenizer"]

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


_CHAT = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")  # Qwen3's chat markers, one token each
# Qwen3's chat template, as `apply_chat_template(..., add_generation_prompt=True, enable_thinking=...)` renders user
# messages (the pipelines' only use: Z-Image thinks, FLUX.2's pipeline passes enable_thinking=False, which opens the
# answer with an empty thinking block).
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def word_level_tokenizer(*, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """One token per word or punctuation run (each unknown: ids 0-4 fit any vocabulary), pad "<pad>", EOS "</s>"."""
    special = ["<pad>", "</s>", "<unk>", *_CHAT]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(special)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=list(_CHAT),
        chat_template=QWEN3_CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )
