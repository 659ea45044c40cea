"""The prompt file of `fastdiff batch`: one prompt a line (`.txt`) or one JSON object a line (`.jsonl`). Prompt *i*
is the *i*-th non-blank line, from 0; its seed is BASE + *i* unless its line names one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import FastDiffError, did_you_mean

__all__ = ["LINE_KEYS", "Job", "make_jobs", "prompts_sha256", "read_prompt_file"]

# What a .jsonl line may set, and the JSON type each value must have (null means "not set").
LINE_KEYS: dict[str, type] = {
    "prompt": str,
    "seed": int,
    "steps": int,
    "negative_prompt": str,
    "guidance_scale": float,
    "height": int,
    "width": int,
}


@dataclass(frozen=True)
class Job:
    """One image to make: its index in the prompt list, prompt, seed and the other arguments of its call."""

    index: int
    prompt: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)  # steps, negative_prompt, … as `gen(...)` takes them


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FastDiffError(f"prompt file {str(path)!r} does not exist; pass a .txt or .jsonl file") from None
    except UnicodeDecodeError as err:
        raise FastDiffError(f"prompt file {str(path)!r} is not UTF-8 text ({err}); save it as UTF-8") from None
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a prompt
        if line.strip():
            yield number, line.strip()


def _parse_json_line(where: str, line: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise FastDiffError(f"{where}: not JSON ({err.msg}); write one JSON object a line") from None
    if not isinstance(entry, dict):
        raise FastDiffError(f'{where}: expected a JSON object like {{"prompt": "a cat"}}, got {line[:40]!r}')
    for key, value in entry.items():
        if key not in LINE_KEYS:
            raise FastDiffError(f"{where}: unknown key {key!r}{did_you_mean(key, LINE_KEYS)}")
        kind = (int, float) if LINE_KEYS[key] is float else LINE_KEYS[key]  # JSON's 1 is a fine float
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise FastDiffError(f"{where}: {key!r} must be a {LINE_KEYS[key].__name__}, got {value!r}")
    if not isinstance(entry.get("prompt"), str):
        raise FastDiffError(f'{where}: every line needs a "prompt" string')
    return {key: value for key, value in entry.items() if value is not None}


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a prompt file: `{"prompt": ...}` plus what each `.jsonl` line sets, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise FastDiffError(f"prompt file {str(path)!r} must end in .txt (one prompt a line) or .jsonl")
    if suffix == ".txt":
        entries = [{"prompt": line} for _, line in _lines(path)]
    else:
        entries = [_parse_json_line(f"{path.name} line {number}", line) for number, line in _lines(path)]
    if not entries:
        raise FastDiffError(f"prompt file {str(path)!r} holds no prompt; write one prompt a line")
    return entries


def make_jobs(entries: list[dict[str, Any]], *, base_seed: int, defaults: Mapping[str, Any]) -> list[Job]:
    """One job per entry: seed `base_seed + i` unless the entry names one; `defaults` fill what it leaves unset."""
    given = {key: value for key, value in defaults.items() if value is not None}
    jobs = []
    for i, entry in enumerate(entries):
        options = given | {key: value for key, value in entry.items() if key not in ("prompt", "seed")}
        jobs.append(Job(i, entry["prompt"], entry.get("seed", base_seed + i), options))
    return jobs


def prompts_sha256(entries: list[dict[str, Any]]) -> str:
    """A hash of the parsed prompt list: the same whatever the file's blank lines, key order or spacing."""
    canonical = json.dumps(entries, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
