"""The docs stay true to the code: generated tables cover every preset; code blocks compile and call real APIs."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from fastdiff import FewStepGenerator, presets

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
