"""The static page of `fastdiff export web` in a real browser, and the pieces it is built from.

The sites for fastdiff-shapes and a tiny SDXL are served by Python's `http.server` on 127.0.0.1 and driven by
Debian's headless Chromium through Selenium (`apt-get install chromium chromium-driver`), as the demo's browser
test does; browser tests skip with the reason when either is missing, and the site build skips when the npm
registry cannot be reached. Tolerance (measured first): with the generator's noise loaded (`?noise=`), the page's
image (WASM) is within 1/255 of `FewStepGenerator`'s on every pixel (fastdiff-shapes at 1 and 4 steps: at most
1/255, mean 0.0003/255; the tiny SDXL: identical)."""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import FastDiffError
from fastdiff.distill.classifier import accuracy, images_to_tensor, shipped_classifier
from fastdiff.distill.shapes import parse_caption

from .test_demo_browser import CHROMEDRIVER, CHROMIUM, headless_chromium  # the same Chromium, driven the same way
from .test_export_onnx import MISSING, PROMPT, family_export, shapes_export, shapes_generator

SEED = 3  # of the injected noise
SITE = Path(__file__).resolve().parents[1] / "src" / "fastdiff" / "export" / "site"


def _missing_browser() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found (apt-get install -y chromium chromium-driver)"
    return None


needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install 'fastdiff[web]')"
)
needs_browser = pytest.mark.skipif(_missing_browser() is not None, reason=str(_missing_browser()))


# --- the page's files, without a browser -----------------------------------------------------------------------


def test_web_export_refuses_presets_the_page_cannot_step() -> None:
    from fastdiff.export import check_web

    check_web("sd-turbo", "EulerDiscreteScheduler", "euler-trailing", 1)
    with pytest.raises(FastDiffError, match="sdxl-turbo uses scheduler 'euler-ancestral-trailing'"):
        check_web("sdxl-turbo", "EulerAncestralDiscreteScheduler", "euler-ancestral-trailing", 1)
    with pytest.raises(FastDiffError, match="classifier-free guidance; `fastdiff export onnx` still exports it"):
        check_web("fastdiff-shapes-teacher", "EulerDiscreteScheduler", "euler-trailing", 2)


def test_the_cli_asks_for_a_preset_or_an_onnx_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fastdiff.cli import main

    assert main(["export", "web", "--out", str(tmp_path)]) == 2
    assert "needs --preset NAME or --onnx DIR" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_the_page_tokenizer_matches_transformers() -> None:
    from fastdiff.export.modules import tokenizer_spec
    from fastdiff.testing.tiny import tiny_tokenizer

    prompts = [PROMPT, "A  Small\tPURPLE triangle in the top left", "zebra-crossing!! it's 42", "café ☕ naïve", ""]
    prompts.append(" ".join(["a large red circle"] * 30))  # truncated at max_length
    tokenizers = [shapes_generator().pipeline.tokenizer, tiny_tokenizer(), tiny_tokenizer(pad_token="!")]
    cases = [{"spec": tokenizer_spec(t, "input_ids"), "prompts": prompts} for t in tokenizers]
    script = (
        f"import {{ Tokenizer }} from {json.dumps((SITE / 'tokenizer.js').as_uri())};"
        "let input = ''; process.stdin.on('data', (d) => (input += d)); process.stdin.on('end', () => {"
        "  const cases = JSON.parse(input);"
        "  console.log(JSON.stringify(cases.map((c) => c.prompts.map((p) => new Tokenizer(c.spec).encode(p)))));"
        "});"
    )
    run = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    for tokenizer, ids in zip(tokenizers, got, strict=True):
        length = tokenizer.model_max_length
        want = [tokenizer(p, padding="max_length", max_length=length, truncation=True).input_ids for p in prompts]
        assert ids == want


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_npm_fetch_checks_integrity_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastdiff.export import web

    tarball = _tarball({name: name.encode() for name in web.ORT_WEB_FILES})
    answers = {
        f"{web.REGISTRY}/onnxruntime-web/9.9.9": json.dumps(
            {"dist": {"tarball": "https://example.invalid/t.tgz", "integrity": web._integrity(tarball)}}
        ).encode(),
        "https://example.invalid/t.tgz": tarball,
    }
    fetched: list[str] = []
    monkeypatch.setattr(web, "_get", lambda url: fetched.append(url) or answers[url])
    files = web.ort_web_files(tmp_path / "ort", version="9.9.9", cache=tmp_path / "cache")
    assert [p.read_bytes() for p in files] == [n.encode() for n in web.ORT_WEB_FILES] and len(fetched) == 2
    web.ort_web_files(tmp_path / "again", version="9.9.9", cache=tmp_path / "cache")
    assert len(fetched) == 2  # from the cache, checked against the recorded integrity
    (tmp_path / "cache" / "onnxruntime-web-9.9.9.tgz").write_bytes(b"corrupt")
    web.fetch_package("onnxruntime-web", "9.9.9", cache=tmp_path / "cache")
    assert len(fetched) == 4  # a cache that fails its checksum is fetched again
    answers["https://example.invalid/t.tgz"] = b"tampered"
    with pytest.raises(FastDiffError, match="does not match the registry's"):
        web.fetch_package("onnxruntime-web", "9.9.9", cache=tmp_path / "other")


# --- the page in Chromium --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the server serves: the site for fastdiff-shapes in `shapes/`, built by the CLI from the ONNX
    export of test_export_onnx, with the generator's noise for SEED beside it (`sdxl_site` adds `sdxl/`)."""
    from fastdiff.cli import main
    from fastdiff.export import ORT_WEB_VERSION, RegistryUnreachable
    from fastdiff.export.web import fetch_package

    try:
        fetch_package("onnxruntime-web", ORT_WEB_VERSION)  # cached in the user cache dir after the first run
    except RegistryUnreachable as err:
        pytest.skip(f"onnxruntime-web cannot be fetched: {err}")
    root = tmp_path_factory.mktemp("sites")
    models = shapes_export(tmp_path_factory.getbasetemp())
    assert main(["export", "web", "--onnx", str(models), "--out", str(root / "shapes")]) == 0
    _write_noise(root / "shapes")
    return root


def _write_noise(site: Path) -> None:
    from fastdiff.export import torch_noise

    shape = json.loads((site / "models" / "manifest.json").read_text())["latent_shape"]
    torch_noise(shape, SEED).astype("<f4").tofile(site / "noise.bin")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page(sites: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The sites served on a free port of 127.0.0.1, and a headless Chromium."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(sites)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    driver = headless_chromium(tmp_path_factory.mktemp("profile"))
    try:
        yield driver, f"http://127.0.0.1:{server.server_port}"
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        thread.join()


def stats(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script("return window.fastdiffStats || {}"))


def wait_for(driver: Any, done: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    """Poll the page's stats until `done(stats)`; fail with the page's state after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = stats(driver)
        assert not now.get("error"), now["error"]
        if done(now):
            return now
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {stats(driver)}")


def drew(inputs: dict[str, Any]) -> Any:
    """A stats condition: the page has drawn exactly these inputs (and is not behind the controls)."""
    return lambda s: s.get("done") is not None and json.loads(s["done"]) == inputs


def canvas(driver: Any) -> np.ndarray[Any, Any]:
    url = driver.execute_script("return document.getElementById('image').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def set_control(driver: Any, name: str, value: object) -> None:
    script = (
        "const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'))"
    )
    driver.execute_script(script, name, str(value))


@needs_onnx
@needs_browser
def test_typing_regenerates_latest_wins_and_ends_on_the_python_image(page: tuple[Any, str]) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page
    driver.get(f"{url}/shapes/?noise=noise.bin&backend=wasm")
    wait_for(driver, lambda s: s.get("generations", 0) >= 1, "the first image")  # of the empty prompt
    # 4 steps while typing: a generation then outlasts a keystroke's round trip even on a fast machine
    set_control(driver, "steps", 4)
    box = driver.find_element(By.ID, "prompt")
    typing = time.monotonic()
    for key in PROMPT:  # key by key, as a person types: one WebDriver round trip each
        box.send_keys(key)
    typing = time.monotonic() - typing
    final = wait_for(driver, drew({"prompt": PROMPT, "seed": 0, "steps": "4"}), "the typed prompt's image")
    drawn = final["prompts"]
    print(f"{len(PROMPT)} keystrokes in {typing:.1f} s, {final['generations']} generations: {drawn}")
    assert 3 <= final["generations"] < len(PROMPT), drawn  # frames while typing, but no backlog
    assert all(PROMPT.startswith(p) for p in drawn) and drawn == sorted(drawn, key=len), drawn
    assert final["backend"] == "wasm" and "WASM" in driver.find_element(By.ID, "backend").text
    assert "ms for this image" in driver.find_element(By.ID, "time").text
    gen = shapes_generator()
    for steps in ("4", "1"):
        set_control(driver, "steps", steps)
        wait_for(driver, drew({"prompt": PROMPT, "seed": 0, "steps": steps}), f"{steps} steps")
        want = np.asarray(gen(PROMPT, steps=int(steps), seed=SEED).image).astype(int)
        diff = np.abs(canvas(driver).astype(int) - want)
        print(f"{steps} steps: page vs FewStepGenerator, max {diff.max()}/255, mean {diff.mean():.5f}/255")
        assert diff.max() <= 1, steps
        if steps == "4":  # and it reads as the prompt: the shipped classifier, as in the next test
            image = images_to_tensor(canvas(driver)[None])
            read = accuracy(shipped_classifier().float(), image, [parse_caption(PROMPT)])
            assert read["shape"] == read["color"] == read["background"] == 1.0, read
        if steps == "4" and (out := os.environ.get("FASTDIFF_BROWSER_SCREENSHOT")):
            driver.save_screenshot(out)  # docs/img/browser.png


@needs_onnx
@needs_browser
def test_with_its_own_noise_the_page_follows_the_prompt(page: tuple[Any, str]) -> None:
    driver, url = page
    driver.get(f"{url}/shapes/?backend=wasm&prompt={quote(PROMPT)}")
    wait_for(driver, lambda s: s.get("ready"), "the models")
    set_control(driver, "steps", 4)  # 1 step reads the colour back on about a third of the seeds only
    images, times = [], []
    for seed in range(8):
        set_control(driver, "seed", seed)
        now = wait_for(driver, drew({"prompt": PROMPT, "seed": seed, "steps": "4"}), f"seed {seed}")
        images.append(canvas(driver))
        times.append(now["lastMs"])
    with torch.no_grad():
        scores = accuracy(shipped_classifier().float(), images_to_tensor(np.stack(images)), [parse_caption(PROMPT)] * 8)
    print(f"page, own PRNG, 4 steps: {scores}; ms per image {sorted(times)}")
    # Chance: 1/3 for the shape, 1/8 for each colour.
    assert scores["shape"] >= 0.6 and scores["color"] >= 0.6 and scores["background"] >= 0.75, scores


@needs_onnx
@needs_browser
@pytest.mark.filterwarnings("ignore:.* was trained at:fastdiff.FastDiffWarning")  # a tiny SDXL at 64x64
def test_an_sdxl_page_gives_the_python_image(
    page: tuple[Any, str], sites: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two tokenizers and encoders, the pooled embedding and size conditioning, in the page (a tiny SDXL on Euler,
    the export test_export_onnx checks)."""
    from fastdiff.export import build_site

    family = family_export("sdxl", tmp_path_factory.getbasetemp())
    build_site(family["folder"], sites / "sdxl")
    _write_noise(sites / "sdxl")
    driver, url = page
    driver.get(f"{url}/sdxl/?noise=noise.bin&backend=wasm&prompt={quote(PROMPT)}")
    wait_for(driver, drew({"prompt": PROMPT, "seed": 0, "steps": "1"}), "the SDXL image")
    set_control(driver, "steps", 2)
    wait_for(driver, drew({"prompt": PROMPT, "seed": 0, "steps": "2"}), "2 steps")
    want = np.asarray(family["gen"](PROMPT, steps=2, seed=SEED, height=64, width=64).image).astype(int)
    diff = np.abs(canvas(driver).astype(int) - want)
    print(f"tiny SDXL, 2 steps: page vs FewStepGenerator, max {diff.max()}/255, mean {diff.mean():.5f}/255")
    assert diff.max() <= 1


def test_a_registry_refusal_is_not_taken_for_being_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error
    import urllib.request

    from fastdiff.export import RegistryUnreachable, web

    def refuse(url: str, timeout: float) -> None:
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)  # type: ignore[arg-type]

    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(FastDiffError, match="answered 404") as err:
        web._get("https://registry.npmjs.org/onnxruntime-web/0.0.0")
    assert not isinstance(err.value, RegistryUnreachable)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RegistryUnreachable, match="needs the npm registry once"):
        web._get("https://registry.npmjs.org/onnxruntime-web/0.0.0")
