"""What each CPU kernel of `optimize="default"` buys on SDXL's real UNet and VAE decoder (random weights).

    python benchmarks/cpu_kernels_ablation.py --size 256 --repeats 5

Adds the kernels one at a time to copies of the same modules and times them interleaved (median of `--repeats`
rounds after one warm-up round), so every row sees the same machine. The numbers in
docs/notes/performance-history.md ("What each optimization buys") come from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from fastdiff.bench.architectures import architecture
from fastdiff.bench.random_weights import _materialize, _parameters_on_meta
from fastdiff.cpu_kernels import (
    CachedKVLinear,
    OneDNNConv2d,
    OneDNNLinear,
    SubpixelUpsample2D,
    _cross_attention_projections,
)
from fastdiff.optimize import own_copy

Swap = dict[type, type]
STEPS: list[tuple[str, Swap]] = [
    ("stock (diffusers)", {}),
    ("+ oneDNN Linear", {nn.Linear: OneDNNLinear}),
    ("+ NHWC convs, packed when small", {nn.Linear: OneDNNLinear, nn.Conv2d: OneDNNConv2d}),
    ("+ sub-pixel upsampler", {nn.Linear: OneDNNLinear, nn.Conv2d: OneDNNConv2d, Upsample2D: SubpixelUpsample2D}),
]
KV_STEP = ("+ cross-attention K/V reused", {})


def swapped(module: nn.Module, swap: Swap, *, reuse_kv: bool = False) -> nn.Module:
    """A copy of `module` sharing its weights, with the classes in `swap` replaced (as `use_cpu_kernels` does)."""
    out = own_copy(module)
    kv = _cross_attention_projections(out)
    for sub in out.modules():
        new = swap.get(type(sub))
        if new is OneDNNLinear and reuse_kv and id(sub) in kv:
            new = CachedKVLinear
        if new is not None:
            sub.__class__ = new
    return out


def build(config: dict[str, object], cls: type) -> nn.Module:
    with _parameters_on_meta():
        module: nn.Module = cls.from_config(config)  # type: ignore[attr-defined]
    _materialize([module], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    return module.eval()


def timed(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, interleaved round by round after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latents are size/8)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    arch = architecture("stabilityai/sdxl-turbo")
    side = args.size // 8
    torch.manual_seed(0)
    latents = torch.randn(1, 4, side, side)
    text = torch.randn(1, 77, 2048)
    size = float(args.size)
    added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[size, size, 0.0, 0.0, size, size]])}
    unet = build(arch.unet, UNet2DConditionModel)
    unets = {name: swapped(unet, swap) for name, swap in STEPS}
    unets[KV_STEP[0]] = swapped(unet, STEPS[-1][1], reuse_kv=True)
    with torch.no_grad():
        t = torch.tensor([999])
        unet_calls = {
            name: (lambda m=m: m(latents, t, encoder_hidden_states=text, added_cond_kwargs=added))
            for name, m in unets.items()
        }
        unet_s = timed(unet_calls, args.repeats)
    del unets, unet, unet_calls
    vae = build(arch.vae, AutoencoderKL)
    vaes = {name: swapped(vae, swap) for name, swap in STEPS}
    with torch.no_grad():
        decode_s = timed({name: (lambda m=m: m.decode(latents)) for name, m in vaes.items()}, args.repeats)
    print(
        f"SDXL UNet (1 call) and VAE decode at {args.size}x{args.size}, fp32, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    print(f"{'kernels':40} {'UNet':>9} {'decode':>9}")
    for name in [*(n for n, _ in STEPS), KV_STEP[0]]:
        dec = f"{decode_s[name]:8.2f}s" if name in decode_s else f"{'-':>9}"
        print(f"{name:40} {unet_s[name]:8.2f}s {dec}")


if __name__ == "__main__":
    main()
