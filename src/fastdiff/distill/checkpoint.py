"""Checkpoints that resume bit for bit, and the loss log (CSV as it runs, JSON at the end).

A checkpoint holds everything the next step reads: the trained modules (safetensors), the optimizer, LR-scheduler
and grad-scaler states and each process's training RNG (loaded with `weights_only=True`: no pickle runs code).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

__all__ = ["LossLog", "checkpoint_dir", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_PREFIX = "step-"


def save_checkpoint(
    folder: Path,
    *,
    modules: dict[str, nn.Module],
    states: dict[str, Any],
    generator: torch.Generator,
    process_index: int = 0,
) -> Path:
    """Write `modules` (main process only), `states` (state dicts, numbers) and this process's RNG to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if process_index == 0:
        for name, module in modules.items():
            save_model(module, str(folder / f"{name}.safetensors"))
        torch.save(states, folder / "trainer_state.pt")
    torch.save({"generator": generator.get_state()}, folder / f"rng-{process_index}.pt")
    return folder


def load_checkpoint(
    folder: Path, *, modules: dict[str, nn.Module], generator: torch.Generator, process_index: int = 0
) -> dict[str, Any]:
    """Load `modules` and this process's RNG from `folder` in place; return the saved `states`."""
    for name, module in modules.items():
        load_model(module, folder / f"{name}.safetensors")
    generator.set_state(torch.load(folder / f"rng-{process_index}.pt", weights_only=True)["generator"])
    states: dict[str, Any] = torch.load(folder / "trainer_state.pt", weights_only=True)
    return states


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return out_dir / "checkpoints" / f"{_PREFIX}{step:07d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint with the highest step under `out_dir`, or None."""
    found = sorted((out_dir / "checkpoints").glob(f"{_PREFIX}*"))
    complete = [f for f in found if (f / "trainer_state.pt").is_file()]
    return complete[-1] if complete else None


class LossLog:
    """Loss rows, appended to `losses.csv` as they come; `write_json` dumps them all to `losses.json`. A resumed
    run keeps the rows up to its checkpoint. Only the main process writes (`write=False` elsewhere keeps no rows)."""

    def __init__(self, out_dir: Path, fields: Sequence[str], *, resume_step: int | None, write: bool = True) -> None:
        self.csv_path, self.json_path = out_dir / "losses.csv", out_dir / "losses.json"
        self.fields, self.write = list(fields), write
        self.rows: list[dict[str, float]] = []
        if write and resume_step is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:  # rows after the checkpoint are re-run: drop them
                rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
            self.rows = [r for r in rows if r["step"] <= resume_step]
        if write:
            with self.csv_path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
            self._write_csv(self.rows)

    def _write_csv(self, rows: list[dict[str, float]]) -> None:
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerows(rows)

    def append(self, row: dict[str, float]) -> None:
        """Add one row and append it to the CSV file."""
        if self.write:
            self.rows.append(row)
            self._write_csv([row])

    def write_json(self) -> Path:
        """Every row so far as a JSON list."""
        if self.write:
            self.json_path.write_text(json.dumps(self.rows, indent=1))
        return self.json_path
