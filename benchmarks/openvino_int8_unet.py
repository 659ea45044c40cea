"""NNCF int8 weight compression of a converted UNet against OpenVINO's bf16/f32, speed and error, interleaved.

    pip install nncf
    python benchmarks/openvino_int8_unet.py ~/.cache/fastdiff/openvino/<key> --rounds 8

`<key>` is the folder of an SDXL UNet IR that fastdiff's OpenVINO engine saved (the largest `model.bin` there,
written by `fastdiff bench --weights random --height 256 --width 256 --scenarios fastdiff:default:sdxl-turbo@1`).
Each variant is compiled once in the levels' precision (on an f32 CPU that is the f32 compile, timed once); then
every round calls each once, so the machine's drift hits all alike. The error is relative to the f32 compile of
the same IR on the same inputs (L2 norm of the difference over that of the output). Figures, and why it is an
opt-in (`Optimizations.level("default", openvino_weights="int8")`), are in docs/notes/performance-history.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from fastdiff import Optimizations
from fastdiff.openvino_int8 import compress_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--modes", nargs="+", choices=("sym", "asym", "shipped"), default=["sym", "asym"],
        help="int8 variants (each compression holds the f32 weights a while: one at a time fits 23 GiB in f32)",
    )  # fmt: skip
    args = parser.parse_args()
    import nncf  # not a dependency of fastdiff: this script measures whether it should be one

    core = ov.Core()
    xml = str(args.folder / "model.xml")
    probe = core.read_model(xml)
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    for port in probe.inputs:
        name, shape = port.get_any_name(), port.get_partial_shape()
        if not shape.is_static:
            raise SystemExit(f"{name} has shape {shape}: save the IR with a fastdiff that compiles static shapes")
        dims = list(shape.to_shape())
        inputs[name] = np.full(dims, 999, np.float32) if name == "timestep" else rng.standard_normal(dims, np.float32)
    del probe

    def build(label: str, compress: Any = None, precision: str | None = None) -> tuple[str, Any]:
        model = core.read_model(xml)
        start = time.perf_counter()
        if compress is not None:
            model = compress(model)
        compressed = time.perf_counter()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": args.threads}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        request = core.compile_model(model, "CPU", config).create_infer_request()
        print(f"{label}: compress {compressed - start:.1f} s, compile {time.perf_counter() - compressed:.1f} s")
        request.infer(inputs)  # first call apart: it pages the weights in
        return label, request

    # The precision fastdiff's levels compile in here (bf16 where it beats f32, else f32), as the opt-in does
    level = Optimizations.level("default", engine="openvino").recipe_for("cpu").openvino_precision
    f32_label, reference_request = build("f32", precision="f32")
    reference = np.array(reference_request.infer(inputs, share_outputs=False)[0])
    base_label = f"{level} (the levels' precision here)"
    # On an f32 CPU the level's compile is the f32 one itself: timed as the base, not compiled twice (memory).
    variants = [(f32_label, reference_request) if level == "f32" else build(base_label, precision=level)]
    base_label = variants[0][0]
    modes = {  # "shipped": fastdiff's own `compress_weights` (INT8_ASYM with `KEPT_F32` left f32)
        "sym": lambda m: nncf.compress_weights(m, mode=nncf.CompressWeightsMode.INT8_SYM),
        "asym": lambda m: nncf.compress_weights(m, mode=nncf.CompressWeightsMode.INT8_ASYM),
        "shipped": compress_weights,
    }
    variants += [build(f"int8_{mode} weights, {level}", modes[mode], level) for mode in args.modes]
    requests = dict(variants)
    times: dict[str, list[float]] = {label: [] for label in requests}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for label, request in requests.items():
            start = time.perf_counter()
            outputs[label] = np.array(request.infer(inputs, share_outputs=False)[0])
            times[label].append(time.perf_counter() - start)
    base = float(np.median(times[base_label]))
    for label, values in times.items():
        error = np.linalg.norm(outputs[label] - reference) / np.linalg.norm(reference)
        median = float(np.median(values))
        print(f"{label}: median {median:.3f} s ({base / median:.2f}x {base_label}), relative error vs f32 {error:.4f}")


if __name__ == "__main__":
    main()
