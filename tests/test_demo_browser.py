"""The live demo in a real browser: Debian's headless Chromium types a prompt key by key into the Gradio page.

Needs the `demo` extra, `selenium`, and `apt-get install chromium chromium-driver` (Playwright's own browser
download does not work in CI); each test skips with the reason when one is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import io
import os
import shutil
import socket
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fastdiff import FewStepGenerator
from fastdiff.testing.tiny import tiny_pipeline

CHROMIUM = os.environ.get("FASTDIFF_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FASTDIFF_CHROMEDRIVER", "/usr/bin/chromedriver")
SIZE = {"height": 128, "width": 128}
PROMPT = "a lighthouse at dawn, watercolor"
BROWSER_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
]


def _missing(*, browser: bool) -> str | None:
    """Why the tests cannot run here, or None: Gradio for the demo, Selenium and Chromium for the browser."""
    needed = [("gradio", "pip install 'fastdiff[demo]'")] + ([("selenium", "pip install selenium")] if browser else [])
    for module, hint in needed:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({hint})"
    for path in (CHROMIUM, CHROMEDRIVER) if browser else ():
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found (apt-get install -y chromium chromium-driver)"
    return None


def headless_chromium(profile: Path) -> Any:
    """Debian's Chromium, headless, with its own profile folder, driven by Selenium (20 s page-load limit)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
    for flag in [*BROWSER_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which(CHROMEDRIVER) or CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver


needs_browser = pytest.mark.skipif(_missing(browser=True) is not None, reason=str(_missing(browser=True)))
pytestmark = [
    pytest.mark.skipif(_missing(browser=False) is not None, reason=str(_missing(browser=False))),
    # The page runs below the tiny model's native 512 px for speed; the demo itself shows this warning.
    pytest.mark.filterwarnings("ignore:sdxl-turbo was trained at:fastdiff.FastDiffWarning"),
    # diffusers' schedulers call np.array() on torch tensors, which numpy 2.4 flags with torch 2.13.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    # Gradio makes a new asyncio loop for each lock it creates outside a running loop and never closes the one
    # it replaces (gradio.utils.safe_get_lock); the fixture collects them here so no later test inherits them.
    pytest.mark.filterwarnings("ignore:unclosed event loop:ResourceWarning"),
    pytest.mark.filterwarnings(r"ignore:unclosed <socket.socket .*family=(1|AddressFamily.AF_UNIX),:ResourceWarning"),
    # Gradio's queue calls pandas APIs that pandas 3 deprecates for pandas 4; seen once in a browser test.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pandas"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio"),
]


@pytest.fixture(scope="module")
def generator() -> FewStepGenerator:
    return FewStepGenerator.from_pipeline("sdxl-turbo", tiny_pipeline("sdxl"))  # one torch thread: see conftest


SKETCH = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def expected(generator: FewStepGenerator) -> dict[str, np.ndarray]:
    """The direct calls' images for the typed prompt, made before any session owns the generator."""
    text = generator(PROMPT, steps=1, seed=0, **SIZE).image
    img2img = generator(PROMPT, steps=1, seed=0, image=SKETCH, strength=0.5, **SIZE).image
    return {"text": np.asarray(text), "img2img": np.asarray(img2img)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def page(generator: FewStepGenerator, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """The demo served in this process on a free port, and a headless Chromium pointed at it."""
    from fastdiff.demo import WarningNotes, build_demo
    from fastdiff.serving import LiveSession

    notes = WarningNotes()
    port = free_port()
    with notes.capture(), LiveSession(generator, **SIZE) as session:
        demo = build_demo(session, notes=notes)
        demo.queue(default_concurrency_limit=1)
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        driver = headless_chromium(tmp_path / "profile")
        try:
            yield driver, f"http://127.0.0.1:{port}"
        finally:
            driver.quit()
            demo.close()


@pytest.fixture(autouse=True)
def _close_gradio_loops() -> Iterator[None]:
    """Close the event loop Gradio left set on this thread and collect the ones it dropped (see pytestmark)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the loop policy API is deprecated from 3.14 on
        policy = asyncio.get_event_loop_policy()
        with contextlib.suppress(RuntimeError):
            loop = policy.get_event_loop()
            if not loop.is_running():
                loop.close()
        policy.set_event_loop(None)
    gc.collect()


def shown_src(driver: Any) -> str | None:
    src = driver.execute_script("const img = document.querySelector('#output img'); return img && img.src;")
    return str(src) if src else None


def fetch(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def wait_for_image(driver: Any, want: np.ndarray, sources: list[str], deadline: float) -> str | None:
    """Poll the shown image until it is `want` (the src) or the deadline passes (None); records every src seen."""
    while time.monotonic() < deadline:
        src = shown_src(driver)
        if src and src not in sources:
            sources.append(src)
        if src and np.array_equal(fetch(src), want):
            return src
        time.sleep(0.1)
    return None


@needs_browser
def test_typing_in_the_browser_updates_the_image_and_ends_on_the_direct_image(
    expected: dict[str, np.ndarray], page: tuple[Any, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver, url = page
    deadline = time.monotonic() + 45  # the whole test, page load included, stays well under a minute
    driver.get(url)
    box = WebDriverWait(driver, 20).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea"))
    )
    sources: list[str] = []
    for key in PROMPT:  # key by key, as a person types (each send_keys is one round trip to the driver)
        box.send_keys(key)
        src = shown_src(driver)
        if src and src not in sources:
            sources.append(src)
    final = wait_for_image(driver, expected["text"], sources, deadline)
    status = driver.find_element(By.ID, "status").text
    driver.save_screenshot(str(tmp_path / "demo.png"))
    if out := os.environ.get("FASTDIFF_DEMO_SCREENSHOT"):
        driver.save_screenshot(out)
    assert final is not None, f"the page never showed the direct call's image for {PROMPT!r}; status: {status}"
    distinct = {fetch(src).tobytes() for src in sources}
    assert len(distinct) >= 2, "the image did not change while typing"
    assert "input → frame" in status and "trained at" in status  # latency shown; the size warning too

    SKETCH.save(tmp_path / "sketch.png")  # img2img: upload an input image, strength stays at its 0.5
    driver.find_element(By.CSS_SELECTOR, "#source input[type=file]").send_keys(str(tmp_path / "sketch.png"))
    assert wait_for_image(driver, expected["img2img"], sources, deadline) is not None, "no img2img frame"


def test_run_demo_binds_to_localhost_and_reports_a_bad_preset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gradio as gr

    from fastdiff.cli import main
    from fastdiff.demo import add_demo_arguments, run_demo
    from fastdiff.testing.tiny import save_tiny_pipeline

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: calls.append(kwargs))
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    folder = save_tiny_pipeline("sdxl", tmp_path / "tiny", fp16_variant=False)
    args = parser.parse_args(["--preset", "sdxl-turbo", "--source", str(folder), "--device", "cpu", "--port", "7999"])
    assert run_demo(args) == 0
    assert calls and calls[0]["server_name"] == "127.0.0.1" and calls[0]["server_port"] == 7999
    assert main(["demo", "--preset", "sdxl-turbbo"]) == 2  # `fastdiff demo`: one line on stderr, status 2
    assert "did you mean 'sdxl-turbo'" in capsys.readouterr().err


@pytest.mark.usefixtures("no_network")
def test_run_demo_defaults_to_the_shipped_student_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from fastdiff.demo import add_demo_arguments, run_demo

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: calls.append(kwargs))
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    args = parser.parse_args(["--device", "cpu"])
    assert args.preset == "fastdiff-shapes"
    assert run_demo(args) == 0 and calls


def test_a_family_without_img2img_offers_no_input_image() -> None:
    """FLUX.2 [klein] has no img2img pipeline: its page hides the input image and the strength."""
    from fastdiff.demo import build_demo
    from fastdiff.serving import LiveSession
    from fastdiff.testing import tiny_flux2_pipeline

    klein = FewStepGenerator.from_pipeline("flux2-klein-4b", tiny_flux2_pipeline())
    with LiveSession(klein, **SIZE) as session:
        blocks = build_demo(session).blocks.values()
    visible = {block.elem_id: block.visible for block in blocks if getattr(block, "elem_id", None)}
    assert (visible["source"], visible["strength"], visible["prompt"]) == (False, False, True)
