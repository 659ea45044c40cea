"""The SDXL UNet in one CPU engine against torch fp32 eager, interleaved: which engine `"default"` should use.

    python benchmarks/cpu_unet_engines.py inductor --weights-dir /work/randweights --rounds 6
    python benchmarks/cpu_unet_engines.py openvino --weights-dir /work/randweights --rounds 6

One call of the real SDXL UNet config with random weights (memory-mapped from `--weights-dir`, the folder
`fastdiff bench --weights-dir` writes) at `--size`/8 latents. `inductor` is `torch.compile` with
`freezing=True` under bf16 autocast (the issue's recipe; its FX-graph cache is `TORCHINDUCTOR_CACHE_DIR`),
`openvino` is fastdiff's engine on a copy of the UNet (`use_openvino`, `--precision`; its IR cache is
`FASTDIFF_CACHE`). Each engine runs in a process of its own (two compiled copies beside the fp32 weights do not
fit 23 GiB); the eager fp32 UNet runs in every round beside it, so "vs eager" is a ratio inside one process.
Prints the first call (the compile, or the load of a cached one), the relative error against eager fp32 (L2
norm of the difference over that of the output), the calls, and the peak resident memory. Figures:
docs/notes/performance-history.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fastdiff.bench.architectures import architecture
from fastdiff.bench.random_weights import random_components
from fastdiff.bench.timing import PeakMemory
from fastdiff.optimize import own_copy


def _peak_gib() -> float:
    return PeakMemory(torch.device("cpu")).read() / 2**30  # never reset: the process's peak


def _engine_call(
    engine: str, unet: torch.nn.Module, inputs: dict[str, object], precision: str
) -> Callable[[], torch.Tensor]:
    if engine == "inductor":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(unet)

        def inductor_call() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(**inputs, return_dict=False)[0]

        return inductor_call
    from fastdiff.openvino_engine import use_openvino

    copy = own_copy(unet)
    use_openvino({"unet": copy}, precision=precision)

    def openvino_call() -> torch.Tensor:
        with torch.no_grad():
            return copy(**inputs, return_dict=False)[0]

    return openvino_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("inductor", "openvino"))
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256, help="image size; the latents are size/8")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", help="openvino only: bf16 or f32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    parts = random_components(
        architecture("stabilityai/sdxl-turbo"), device=cpu, dtype=torch.float32, folder=args.weights_dir
    )
    unet, side = parts["unet"], args.size // 8
    size = float(args.size)
    inputs: dict[str, object] = {
        "sample": torch.randn(1, 4, side, side),
        "timestep": torch.tensor(999),
        "encoder_hidden_states": torch.randn(1, 77, 2048),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, 1280),
            "time_ids": torch.tensor([[size, size, 0.0, 0.0, size, size]]),
        },
    }

    def eager() -> torch.Tensor:
        with torch.no_grad():
            return unet(**inputs, return_dict=False)[0]

    start = time.perf_counter()
    fast = _engine_call(args.engine, unet, inputs, args.precision)
    first = fast()
    print(f"{args.engine}: first call (compile) {time.perf_counter() - start:.1f} s, peak {_peak_gib():.1f} GiB")
    reference = eager()
    error = ((first.float() - reference).norm() / reference.norm()).item()
    print(f"relative error against fp32 eager: {error:.4f}")
    times: dict[str, list[float]] = {"eager": [], args.engine: []}
    calls = {"eager": eager, args.engine: fast}
    for round_ in range(args.rounds):  # alternate which runs first, so neither always follows the other
        for name in sorted(calls, reverse=bool(round_ % 2)):
            begin = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - begin)
    for name, values in times.items():
        print(f"{name}: {[round(v, 3) for v in values]} s, median {statistics.median(values):.3f} s")
    ratios = [e / f for e, f in zip(times["eager"], times[args.engine], strict=True)]
    print(
        f"{args.engine} vs eager: {statistics.median(ratios):.2f}x (median of per-round ratios), "
        f"peak {_peak_gib():.1f} GiB"
    )


if __name__ == "__main__":
    main()
