"""The output folder of a batch run: `run.json` (what the run is), `NNNNNN.png` and `manifest.jsonl` (what is done).

A killed run loses nothing: an image is written whole (temp file, fsync, rename), only then is its manifest line
appended and fsynced. On resume an image is done when its line exists and the file's sha256 matches it; a torn last
line, a line whose file is gone or changed, and stale temp files are cleared first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ...errors import FastDiffError

__all__ = ["MANIFEST", "RUN_FILE", "RunDir", "image_name", "write_atomic"]

RUN_FILE = "run.json"
MANIFEST = "manifest.jsonl"
_IMAGE = re.compile(r"\d{6,}\.png")
_TEMP = re.compile(r"\.(\d{6,}\.png|manifest\.jsonl|run\.json)\..+\.tmp")


def image_name(index: int) -> str:
    """The file name of prompt `index`'s image: 000042.png."""
    return f"{index:06d}.png"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` under `path` whole or not at all: temp file in the same folder, fsync, `os.replace`."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # not mkstemp: that one makes 0600 files
    try:
        with temp.open("xb") as file:  # "x": a new file (O_EXCL), with the umask's permissions
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    if found.get("prompts_sha256") != wanted["prompts_sha256"]:
        return [f"a different prompt list ({found.get('count', '?')} prompts then, {wanted['count']} now)"]
    old, new = found.get("settings", {}), wanted["settings"]
    return [
        f"--{key.replace('_', '-')} {_shown(old.get(key))} (now {_shown(new[key])})"
        for key in new
        if old.get(key) != new[key]
    ]


def _shown(value: object) -> str:
    return "unset" if value is None else repr(value)


@dataclass
class RunDir:
    """An open output folder: which prompts are done, and `record` to add one image and its manifest line."""

    root: Path
    done: dict[int, dict[str, Any]]
    _manifest: IO[str]

    @classmethod
    def open(cls, root: str | Path, *, header: dict[str, Any], force: bool = False) -> RunDir:
        """Create `root` for a run described by `header`, or resume it; refuse a folder made by another run."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if force:
            _clear(root, everything=True)
        _check_header(root, header)
        _clear(root, everything=False)
        done = _valid_entries(root, count=header["count"])
        return cls(root, done, (root / MANIFEST).open("a", encoding="utf-8"))

    def record(self, entry: dict[str, Any], png: bytes) -> None:
        """Put the image in place, then append its manifest line (with `file` and `sha256` added)."""
        name = image_name(entry["index"])
        write_atomic(self.root / name, png)
        entry = {**entry, "file": name, "sha256": hashlib.sha256(png).hexdigest()}
        self._manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._manifest.flush()
        os.fsync(self._manifest.fileno())
        self.done[entry["index"]] = entry

    def close(self) -> None:
        self._manifest.close()


def _check_header(root: Path, header: dict[str, Any]) -> None:
    path = root / RUN_FILE
    if not path.exists():
        if (root / MANIFEST).exists() or any(_IMAGE.fullmatch(p.name) for p in root.iterdir()):
            raise FastDiffError(f"{root} holds images but no {RUN_FILE}; use another --out, or --force to start over")
        write_atomic(path, (json.dumps(header, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise FastDiffError(f"{path} is not JSON; use another --out, or --force to start over") from None
    changed = _differences(found, header)
    if changed:
        raise FastDiffError(
            f"{root} was made by another run: it used {'; '.join(changed)}. Re-run that command to resume it, use "
            "another --out, or pass --force to delete its images and start over"
        )


def _valid_entries(root: Path, *, count: int) -> dict[int, dict[str, Any]]:
    """Entries whose image is in place with the recorded hash (the last one per index); rewrites the manifest
    without the others, so that it never lists an index twice or an image that is not there."""
    path = root / MANIFEST
    *lines, tail = path.read_bytes().split(b"\n") if path.exists() else [b""]  # tail: a torn last append, or b""
    entries = []
    for number, raw in enumerate(lines, start=1):
        try:
            entries.append(json.loads(raw))
        except ValueError:
            raise FastDiffError(
                f"{path} line {number} is not JSON; delete that line (its image is then made again), or pass "
                "--force to start over"
            ) from None
    done: dict[int, dict[str, Any]] = {}
    for entry in entries:
        index = entry.get("index")
        if not (isinstance(index, int) and 0 <= index < count and entry.get("file") == image_name(index)):
            continue
        image = root / image_name(index)
        if image.exists() and hashlib.sha256(image.read_bytes()).hexdigest() == entry.get("sha256"):
            done[index] = entry
    if tail or len(done) != len(entries):
        kept = "".join(json.dumps(done[i], ensure_ascii=False) + "\n" for i in sorted(done))
        write_atomic(path, kept.encode("utf-8"))
    return done


def _clear(root: Path, *, everything: bool) -> None:
    """Remove stale temp files; with `everything` also the header, manifest and images of a run."""
    for path in root.iterdir():
        ours = path.name in (RUN_FILE, MANIFEST) or _IMAGE.fullmatch(path.name)
        if _TEMP.fullmatch(path.name) or (everything and ours):
            path.unlink()
