import time, cProfile, pstats, torch
from fastdiff import FewStepGenerator
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.shapes import caption
specs = held_out_specs()
prompts = [caption(s) for s in specs]
gen = FewStepGenerator.from_preset("fastdiff-shapes", device="cpu"); gen.warmup()
for p in prompts[:10]: gen(p, steps=1, seed=0)
t = time.perf_counter()
for i, p in enumerate(prompts): gen(p, steps=1, seed=i)
print("ms/call new prompts", (time.perf_counter() - t) / len(prompts) * 1000)
t = time.perf_counter()
for i, p in enumerate(prompts): gen(p, steps=1, seed=i)
print("ms/call cached prompts", (time.perf_counter() - t) / len(prompts) * 1000)
r = gen(prompts[0], steps=1, seed=0)
print({k: v for k, v in vars(r).items() if k != "images"})
pr = cProfile.Profile(); pr.enable()
for i, p in enumerate(prompts): gen(p, steps=1, seed=i)
pr.disable(); pstats.Stats(pr).sort_stats("cumulative").print_stats(45)
