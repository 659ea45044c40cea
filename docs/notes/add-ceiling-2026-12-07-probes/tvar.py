import time, statistics, torch
from fastdiff import FewStepGenerator
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.shapes import caption
prompts = [caption(s) for s in held_out_specs()][:48]
for preset, steps in (("fastdiff-shapes-teacher", 20), ("fastdiff-shapes", 1)):
    for level in ("default", "none"):
        gen = FewStepGenerator.from_preset(preset, device="cpu", optimize=level); gen.warmup()
        for rep in range(3):
            ts = []
            for i, p in enumerate(prompts):
                t = time.perf_counter(); gen(p, steps=steps, seed=i); ts.append(time.perf_counter() - t)
            print(preset, level, rep, "median ms", round(statistics.median(ts) * 1000, 1), "min", round(min(ts) * 1000, 1), flush=True)
