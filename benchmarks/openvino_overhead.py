"""The OpenVINO engine's per-call overhead over its compiled model's raw `infer`, on SDXL's real UNet (random weights).

    python benchmarks/openvino_overhead.py --size 256

What diffusers calls is the wrapped UNet (`OpenVINOForward`: bind the arguments, flatten them to the compiled
model's inputs, split a batch, rebuild diffusers' output). Its overhead is measured without the inference itself:
the compiled model's `infer` is replaced by one that returns the outputs of a real call at once, so the timed call
is exactly the wrapper's own work on SDXL's real input and output tensors. The real `infer` is timed too, for scale.
Timings: `torch.utils.benchmark.Timer.blocked_autorange` (median over blocks), one thread.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch.utils import benchmark

from fastdiff.bench.architectures import architecture
from fastdiff.bench.random_weights import _materialize, _parameters_on_meta
from fastdiff.openvino_engine import OpenVINOForward, expected_shapes, use_openvino


class _Answered:
    """A compiled model whose `infer` returns the given outputs at once."""

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        self.outputs = outputs

    def infer(self, inputs: list[Any]) -> list[torch.Tensor]:
        return self.outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default="stabilityai/sdxl-turbo", help="whose UNet architecture")
    parser.add_argument("--size", type=int, default=256, help="image size (latents are size/8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="the least time each measurement runs")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    args = parser.parse_args()

    arch = architecture(args.repo)
    with _parameters_on_meta():
        unet = UNet2DConditionModel.from_config(arch.config("unet"))  # type: ignore[no-untyped-call]
    _materialize([unet], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    use_openvino({"unet": unet}, weights_keys={"unet": f"random:{args.repo}:seed=0"}, precision=args.precision)
    side = args.size // 8
    sample = torch.randn(1, unet.config.in_channels, side, side)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    call: dict[str, Any] = {"encoder_hidden_states": text, "return_dict": False}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeddings and the size/crop ids
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        call["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
    timestep = torch.tensor(999)

    forward = unet.forward
    assert isinstance(forward, OpenVINOForward)
    with torch.no_grad(), expected_shapes():
        unet(sample, timestep, **call)  # converts (or loads the cached IR) and compiles
    ((key, compiled),) = forward._entries.items()
    names = [port.get_any_name() for port in compiled.model.inputs]
    flat = {"sample": sample, "timestep": timestep, "encoder_hidden_states": text}
    flat |= {f"added_cond_kwargs.{k}": v for k, v in call.get("added_cond_kwargs", {}).items()}
    arrays = [flat[name].numpy() for name in names]
    outputs = compiled.infer(arrays)

    torch.set_num_threads(1)
    raw = benchmark.Timer("compiled.infer(arrays)", globals={"compiled": compiled, "arrays": arrays})
    raw_s = raw.blocked_autorange(min_run_time=args.seconds).median
    forward._entries[key] = _Answered(outputs)  # type: ignore[assignment]
    wrapped = benchmark.Timer(
        "unet(sample, timestep, **call)", globals={"unet": unet, "sample": sample, "timestep": timestep, "call": call}
    )
    with torch.no_grad():
        overhead = wrapped.blocked_autorange(min_run_time=args.seconds)
    print(f"{args.repo} UNet at {args.size}² ({side}² latents), OpenVINO {args.precision}")
    print(f"raw infer: {raw_s * 1e3:.1f} ms per call")
    print(f"wrapper overhead: median {overhead.median * 1e3:.3f} ms, IQR {overhead.iqr * 1e3:.3f} ms per call")


if __name__ == "__main__":
    main()
