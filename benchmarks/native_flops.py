"""GFLOPs per stage of the default scenarios at their native sizes, counted on the meta device (no weights, no
memory, no compute): `python benchmarks/native_flops.py`. Prints a Markdown table (used in docs/benchmarks.md).

UNet calls per image: SD 1.5's PNDM runs steps + 1 calls, each on a batch of 2 under CFG (and encodes the prompt
twice); the few-step presets run one call per step on a batch of 1, and SDXL's empty negative prompt is zeros.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fastdiff.bench.architectures import ARCHITECTURES
from fastdiff.presets import SD15_REPO, SDXL_BASE_REPO, SDXL_TURBO_REPO


def gflops(fn: Callable[[], object]) -> float:
    """GFLOPs of what `fn()` runs, as `torch.utils.flop_counter` counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops()) / 1e9


def stages(repo: str, latent: int, unet_calls: int, *, cfg: bool) -> tuple[float, float, float]:
    """(encode, denoise, decode) GFLOPs of one image of `repo`'s architecture at `latent`² latents."""
    arch, batch = ARCHITECTURES[repo], 2 if cfg else 1
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(arch.config("unet"))  # type: ignore[no-untyped-call]
        vae = AutoencoderKL.from_config(arch.config("vae"))  # type: ignore[no-untyped-call]
        encoders: list[torch.nn.Module] = [CLIPTextModel(CLIPTextConfig(**arch.config("text_encoder")))]
        if "text_encoder_2" in arch.modules:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**arch.config("text_encoder_2"))))
        ids = torch.zeros(1, 77, dtype=torch.long)
        encode = batch * sum(gflops(functools.partial(e, ids, output_hidden_states=True)) for e in encoders)
        sample = torch.randn(batch, 4, latent, latent)
        context = torch.randn(batch, 77, arch.config("unet")["cross_attention_dim"])
        extra: dict[str, dict[str, torch.Tensor]] = {}
        if len(encoders) > 1:
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 1280), "time_ids": torch.randn(batch, 6)}
        denoise = unet_calls * gflops(lambda: unet(sample, torch.tensor(999.0), context, **extra))
        decode = gflops(lambda: vae.decode(torch.randn(1, 4, latent, latent)))
    return encode, denoise, decode


def main() -> None:
    rows = {
        "sd15@20 (512²)": stages(SD15_REPO, 64, 21, cfg=True),
        "sdxl-turbo@1 (512²)": stages(SDXL_TURBO_REPO, 64, 1, cfg=False),
        "sdxl-turbo@4 (512²)": stages(SDXL_TURBO_REPO, 64, 4, cfg=False),
        "sdxl-lightning@1 (1024²)": stages(SDXL_BASE_REPO, 128, 1, cfg=False),
        "sdxl-lightning@4 (1024²)": stages(SDXL_BASE_REPO, 128, 4, cfg=False),
    }
    base = sum(rows["sd15@20 (512²)"])
    print("| scenario (native size) | encode | denoise | decode | total GFLOP | sd15@20 / scenario |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (e, d, c) in rows.items():
        print(f"| {name} | {e:,.0f} | {d:,.0f} | {c:,.0f} | {e + d + c:,.0f} | {base / (e + d + c):.1f}× |")


if __name__ == "__main__":
    main()
