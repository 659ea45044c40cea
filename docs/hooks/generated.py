"""MkDocs hook: pages built from the code, so that the docs never restate (and never contradict) the tables in it.

- `<!-- fastdiff:presets -->` becomes the preset table of `fastdiff.presets.all_presets()`;
- `<!-- fastdiff:recipes -->` becomes the scheduler recipes of `fastdiff.schedulers.RECIPES` (first docstring line);
- `<!-- fastdiff:img2img -->` becomes the timesteps that img2img runs for some (steps, strength) pairs.

Pages written by others later (benchmarks.md, performance.md and its notes/performance-history.md, realtime.md)
join the nav only when they exist.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from diffusers import EulerDiscreteScheduler

from fastdiff import presets
from fastdiff.presets import Preset
from fastdiff.schedulers import RECIPES, build_scheduler, img2img_schedule

HUB = "https://huggingface.co"
OPTIONAL_PAGES = {
    "benchmarks.md": "Benchmarks",
    "performance.md": "Performance",
    "notes/performance-history.md": "Performance history",  # the dated lab notes behind performance.md
    "realtime.md": "Real-time",
    "serving.md": "Serving",
    "distill.md": "Distillation",
    "notes/add-recipe-2026-12-06.md": "ADD recipe runs",  # the runs behind distill.md's held-out figures
}
OPTIONAL_BEFORE = "API"  # optional pages go just before this nav entry


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _repo_link(repo_id: str) -> str:
    return f"[{repo_id}]({HUB}/{repo_id})"


def _pipeline_cell(preset: Preset) -> str:
    if presets.is_shipped(preset):  # an absolute path on the machine that built the docs: name it in the package
        return f"shipped: `fastdiff/distill/models/{preset.name}`"
    return _repo_link(preset.repo_id)


def _checkpoint_cell(preset: Preset) -> str:
    ckpt = preset.checkpoint
    if ckpt is None:
        return "—"
    kind = "UNet" if ckpt.kind == "unet" else "LoRA, fused"
    pickle = ", needs `allow_pickle`" if ckpt.is_pickle else ""
    return f"{_repo_link(ckpt.repo_id)}<br>`{ckpt.filename}` ({kind}{pickle})"


def _recipe_cell(preset: Preset) -> str:
    cell = f"`{preset.scheduler}`"
    if preset.timesteps is not None:
        cell += f", timesteps {', '.join(str(t) for t in preset.timesteps)}"
    if preset.eta is not None:
        cell += f", eta {preset.eta:g}"
    return cell


def _steps_cell(preset: Preset) -> str:
    label = preset.steps_label()
    return label if len(preset.steps) == 1 else f"{label} (default {preset.default_steps})"


def presets_table() -> str:
    """The markdown table of every registered preset, one row each, in table order."""
    header = ["preset", "family", "pipeline repo", "checkpoint", "steps", "guidance", "native size", "scheduler"]
    header.append("licence")
    rows = []
    for p in presets.all_presets():
        licence = p.license if p.commercial_use else f"{p.license}, **non-commercial**"
        rows.append(
            [
                f"`{p.name}`",
                p.family,
                _pipeline_cell(p),
                _checkpoint_cell(p),
                _steps_cell(p),
                f"{p.guidance_scale:g}",
                f"{p.width}×{p.height}",
                _recipe_cell(p),
                licence,
            ]
        )
    return _table(header, rows)


def recipes_table() -> str:
    """The scheduler recipes a preset can name, each with the first line of its docstring."""
    rows = []
    for name, recipe in RECIPES.items():
        doc = (recipe.__doc__ or "").strip().splitlines()
        rows.append([f"`{name}`", doc[0] if doc else ""])
    return _table(["recipe", "what it builds"], rows)


def img2img_table(preset_name: str = "sdxl-turbo", strengths: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0)) -> str:
    """The UNet timesteps img2img runs for each (steps, strength) of a preset, as `FewStepGenerator` maps them."""
    preset = presets.get(preset_name)
    rows = []
    with warnings.catch_warnings():  # numpy 2 deprecation noise from inside diffusers' schedulers
        warnings.simplefilter("ignore", DeprecationWarning)
        # The SD/SDXL training schedule; the preset's recipe sets the spacing, as on the repo's own config.
        base = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
        scheduler = build_scheduler(preset.scheduler, base)
        for steps in preset.steps:
            cells = [f"steps={steps}"]
            for strength in strengths:
                n, used, _ = img2img_schedule(steps, strength, preset.timesteps)
                scheduler.set_timesteps(n)  # type: ignore[attr-defined]
                run = scheduler.timesteps[n - min(int(n * used), n) :]  # type: ignore[attr-defined]
                cells.append(", ".join(str(int(t)) for t in run))
            rows.append(cells)
    return _table([f"`{preset.name}`", *(f"strength={s:g}" for s in strengths)], rows)


MARKERS = {
    "<!-- fastdiff:presets -->": presets_table,
    "<!-- fastdiff:recipes -->": recipes_table,
    "<!-- fastdiff:img2img -->": img2img_table,
}


def on_config(config: Any) -> Any:
    """Add each optional page to the nav (before API) only if its file exists, so `--strict` never trips on it."""
    docs_dir = Path(config["docs_dir"])
    nav: list[Any] = config["nav"] or []
    titles = [next(iter(entry)) if isinstance(entry, dict) else None for entry in nav]
    at = titles.index(OPTIONAL_BEFORE) if OPTIONAL_BEFORE in titles else len(nav)
    listed = {str(v) for entry in nav if isinstance(entry, dict) for v in entry.values()}
    extra = [
        {title: page} for page, title in OPTIONAL_PAGES.items() if (docs_dir / page).is_file() and page not in listed
    ]
    config["nav"] = nav[:at] + extra + nav[at:]
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker with its generated table."""
    for marker, build in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown
