"""`fastdiff demo`: a local Gradio page whose image follows the prompt as you type, served by one `LiveSession`.
Gradio drops the events that arrive while one runs (`trigger_mode="always_last"`) and the session drops states its
worker had no time for, so typing never builds a backlog."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from PIL import Image

from .cli_options import add_model_options, add_size_options, check_before_loading, load_options
from .errors import FastDiffError, routed_warnings

if TYPE_CHECKING:
    import gradio as gr

    from .serving import Frame, LiveSession, LiveStats

__all__ = ["WarningNotes", "add_demo_arguments", "build_demo", "main", "run_demo"]

DEFAULT_STRENGTH = 0.5  # the sdxl-turbo / sd-turbo model cards' img2img example
WAIT_S = 300.0  # a first call may compile or load; a frame later than this means something is stuck


class WarningNotes:
    """FastDiffWarnings caught while the demo runs, kept with their time so each frame shows its own."""

    def __init__(self, maxlen: int = 64) -> None:
        self._lock = threading.Lock()
        self._notes: deque[tuple[float, str]] = deque(maxlen=maxlen)

    @contextmanager
    def capture(self) -> Iterator[WarningNotes]:
        """Route FastDiffWarnings here instead of stderr (`errors.routed_warnings`): around the server's whole life,
        as `run_demo` does."""
        with routed_warnings(self.add):
            yield self

    def add(self, message: str) -> None:
        with self._lock:
            self._notes.append((time.perf_counter(), message))

    def since(self, start: float) -> list[str]:
        """The distinct messages noted at or after `start` (a `time.perf_counter()` value), oldest first."""
        with self._lock:
            return list(dict.fromkeys(message for t, message in self._notes if t >= start))


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fastdiff demo`."""
    add_model_options(parser)
    add_size_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")


def run_demo(args: argparse.Namespace) -> int:
    """Load the preset, open a live session and serve the page until interrupted; returns the exit status."""
    from importlib.util import find_spec

    check_before_loading(args)  # the weights and Gradio first: loading torch only to fail on either is slow
    if find_spec("gradio") is None:
        raise FastDiffError("fastdiff demo needs Gradio: pip install 'fastdiff[demo]'")
    from .generator import FewStepGenerator
    from .serving import LiveSession

    generator = FewStepGenerator.from_preset(args.preset, **load_options(args))
    notes = WarningNotes()
    with notes.capture(), LiveSession(generator, height=args.height, width=args.width) as session:
        demo = build_demo(session, notes=notes)
        demo.queue(default_concurrency_limit=1)
        print(f"fastdiff demo: {args.preset} on {generator.device}, http://{args.host}:{args.port}", flush=True)
        demo.launch(server_name=args.host, server_port=args.port, show_error=True, footer_links=[])
    return 0


def build_demo(session: LiveSession, *, notes: WarningNotes | None = None) -> gr.Blocks:
    """The page: prompt, steps, seed, strength and an input image; every change updates `session` and shows its
    newest frame with its latency."""
    import gradio as gr

    from .families import family

    preset = session.generator.preset
    lo, hi = min(preset.steps), max(preset.steps)
    img2img = family(preset.family).img2img is not None  # without an img2img pipeline, no input image to offer
    demo = gr.Blocks(title=f"fastdiff live · {preset.name}", analytics_enabled=False)
    with demo:
        gr.Markdown(f"### fastdiff live · {preset.name}\nType: the image follows. Stale inputs are skipped.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="start typing…", lines=2, elem_id="prompt")
                # A slider needs two ends: a preset distilled for one step count shows it, fixed.
                steps = gr.Slider(
                    lo, max(hi, lo + 1), value=session.state.steps or preset.default_steps, step=1,
                    label="Steps", interactive=hi > lo, elem_id="steps",
                )  # fmt: skip
                seed = gr.Slider(0, 9999, value=session.state.seed or 0, step=1, label="Seed", elem_id="seed")
                strength = gr.Slider(
                    0.05, 1.0, value=DEFAULT_STRENGTH, step=0.05, label="Strength (img2img)", elem_id="strength",
                    visible=img2img,
                )  # fmt: skip
                source = gr.Image(
                    label="Input image (optional)", type="pil", sources=["upload", "webcam", "clipboard"],
                    elem_id="source", visible=img2img,
                )  # fmt: skip
            with gr.Column():
                output = gr.Image(label="Image", type="pil", format="png", interactive=False, elem_id="output")
                status = gr.Markdown("waiting for a prompt", elem_id="status")

        def render(
            prompt: str | None, steps: float, seed: float, strength: float, image: Image.Image | None
        ) -> tuple[Any, str]:
            """Hand the inputs to the session, wait for the newest frame, describe it."""
            session.update(prompt=prompt or "", steps=int(steps), seed=int(seed), image=image, strength=strength)
            try:
                frame = session.wait(timeout=WAIT_S)
            except (FastDiffError, TimeoutError) as exc:  # keep the last image; say what is wrong under it
                return gr.skip(), f"⚠️ {exc}"
            cautions = [] if notes is None else notes.since(frame.state.submitted + frame.timings["queued"])
            return frame.image, describe(frame, session.stats, cautions)

        gr.on(
            triggers=[prompt.input, steps.change, seed.change, strength.change, source.change],
            fn=render,
            inputs=[prompt, steps, seed, strength, source],
            outputs=[output, status],
            trigger_mode="always_last",
            concurrency_limit=1,
            show_progress="hidden",
        )
    return demo


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


def describe(frame: Frame, stats: LiveStats, cautions: list[str]) -> str:
    """The line under the image: this frame's latency and cost, the session's percentiles and drop count."""
    t = frame.timings
    lines = [
        f"**{_ms(t['latency'])}** input → frame · generation {_ms(t['total'])} (encode {_ms(t['encode'])}, "
        f"denoise {_ms(t['denoise'])}, decode {_ms(t['decode'])}) · {frame.steps} step(s), seed {frame.seed}",
        f"p50 {_ms(stats.latency_p50)} · p95 {_ms(stats.latency_p95)} · {stats.generated} frames for "
        f"{stats.received} inputs ({stats.dropped} skipped)",
        *(f"⚠️ {message}" for message in cautions),
    ]
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m fastdiff.demo ...`: the same as `fastdiff demo`."""
    from .cli import main as fastdiff

    return fastdiff(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
