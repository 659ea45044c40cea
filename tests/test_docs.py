"""The docs stay true to the code: generated tables cover every preset; code blocks compile and call real APIs."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from fastdiff import FastDiffWarning, FewStepGenerator, presets

DOCS = Path(__file__).resolve().parent.parent / "docs"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted([*DOCS.glob("*.md"), *DOCS.glob("notes/*.md")])  # notes: the dated lab history (performance)

# Calls in the docs whose keyword arguments must exist in the real signature.
SIGNATURES = {
    "from_preset": FewStepGenerator.from_preset,
    "from_pipeline": FewStepGenerator.from_pipeline,
    "gen": FewStepGenerator.__call__,
}


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastdiff_docs_hook", DOCS / "hooks" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def _row(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))


def test_presets_table_lists_every_preset_and_flags_non_commercial() -> None:
    table = _hook().presets_table()
    for preset in presets.all_presets():
        row = _row(table, preset.name)
        if presets.is_shipped(preset):  # named inside the package, never by the path of the machine that built it
            assert f"fastdiff/distill/models/{preset.name}" in row and "huggingface.co" not in row, row
            assert preset.repo_id not in row
        else:
            assert f"https://huggingface.co/{preset.repo_id}" in row
        assert ("non-commercial" in row) == (not preset.commercial_use), row
    for name in ("sd-turbo", "sdxl-turbo", "dmd2-sdxl-1step", "dmd2-sdxl-4step"):
        assert "non-commercial" in _row(table, name)
    assert "non-commercial" not in _row(table, "sdxl-lightning-4step")


def test_generated_tables_cover_every_recipe_and_img2img_step_count() -> None:
    hook = _hook()
    from fastdiff.schedulers import RECIPES

    recipes = hook.recipes_table()
    assert all(f"| `{name}` |" in recipes for name in RECIPES)
    img2img = hook.img2img_table()
    assert all(f"| steps={n} |" in img2img for n in presets.get("sdxl-turbo").steps)


def test_quickstart_has_python_blocks() -> None:
    assert len(_blocks(DOCS / "quickstart.md")) >= 5


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_python_blocks_compile(page: Path) -> None:
    for i, block in enumerate(_blocks(page)):
        compile(block, f"{page.name}[block {i}]", "exec")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_documented_calls_use_real_arguments_and_presets(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    defined = set(re.findall(r'name="([\w.-]+)"', text))  # presets the page itself creates
    known = set(presets.names()) | defined
    for block in _blocks(page):
        for node in ast.walk(ast.parse(block)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func not in SIGNATURES:
                continue
            params = inspect.signature(SIGNATURES[func]).parameters
            for kw in node.keywords:
                assert kw.arg in params, f"{page.name}: {func}(…, {kw.arg}=…) is not a parameter"
            first = node.args[0] if node.args else None
            if func != "gen" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                assert first.value in known, f"{page.name}: unknown preset {first.value!r}"
    for name in re.findall(r"(?:--preset|fastdiff download) ([\w.-]+)", text):
        if name != "NAME":
            assert name in known, f"{page.name}: unknown preset {name!r} in a command"


# Blocks that cannot run here, found by a phrase of theirs (not their position: the docs change), with why.
CANNOT_RUN = {
    "your-org/your-sdxl-finetune": "a placeholder repo id for the reader's own fine-tune",
    "h1t/TCD-SDXL-LoRA": "a LoRA repo the test hub cache does not hold",
    "teacher_pipe": "trains for 2000 steps from the reader's own teacher pipeline",
    'source="/models/': "the reader's own local folders and files",
    'to("cuda")': "loads with diffusers straight onto a CUDA device",
    "enable_model_cpu_offload": "offloads to an accelerator this machine does not have",
    "my_style.safetensors": "the reader's own LoRA and UNet files",
    "ipywidgets": "a Jupyter cell: widgets and the notebook's running event loop",
}
SIZE = 64  # every preset run at 64x64: the tiny models at 1024² take seconds a call on 2 cores


@pytest.fixture
def offline_docs(hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The docs' code as a reader runs it on this machine, without network or GPU: every preset's tiny weights
    under the real repo ids in the hub cache, loaded on the CPU in float32 at 64x64, in a folder of its own."""
    import huggingface_hub.constants

    from fastdiff import schedulers

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))  # diffusers' own loads too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load = FewStepGenerator.from_preset.__func__  # type: ignore[attr-defined]

    def offline(cls: type[FewStepGenerator], preset: str | presets.Preset, **options: Any) -> FewStepGenerator:
        options.update(device="cpu", dtype=None, cache_dir=hub_cache, local_files_only=True)
        return load(cls, presets.replace(presets.get(preset), height=SIZE, width=SIZE), **options)

    monkeypatch.setattr(FewStepGenerator, "from_preset", classmethod(offline))
    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))  # what a page registers stays on the page
    monkeypatch.setattr(schedulers, "RECIPES", dict(schedulers.RECIPES))
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (SIZE, SIZE), (90, 120, 200)).save(tmp_path / "sketch.png")  # quickstart's img2img input
    with warnings.catch_warnings():
        # explicit 512x512 calls (warm-ups) on presets whose size is set to 64 here
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        yield


RUN_PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.usefixtures("offline_docs")
@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_python_blocks_run(page: Path) -> None:
    """Each page's blocks in order, in one namespace (a later block uses an earlier one's `gen`), unless listed."""
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for i, block in enumerate(_blocks(page)):
        if any(phrase in block for phrase in CANNOT_RUN):
            continue
        exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        ran += 1
    if not ran:
        pytest.skip("no python block to run: none on the page, or each in CANNOT_RUN")
