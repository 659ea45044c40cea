"""Issue 30 probe: students @2/@4 with fresh noise at each step (LCMScheduler: x̂0, then re-noised with new noise,
at the trailing timesteps) vs Euler trailing (deterministic); held-out, 10 noise seeds."""
import statistics, sys, torch, diffusers, numpy as np
from pathlib import Path
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier, images_to_tensor
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs
from fastdiff.distill.shapes import caption
torch.set_num_threads(1)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
GRID = {2: [999, 499], 4: [999, 749, 499, 249]}
for folder in sys.argv[1:]:
    pipe = _load(Path(folder))
    lcm = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler = lcm
    for n in (2, 4):
        rows = []
        for j in range(10):
            out = pipe(prompts, timesteps=GRID[n], guidance_scale=0.0, generator=torch.Generator().manual_seed(HELD_OUT_SEED + j), output_type="np")
            imgs = images_to_tensor((out.images * 255).round().astype(np.uint8))
            rows.append(_scores(imgs, specs, classifier=clf, real=real))
        print(folder, "fresh-noise", n, {c: round(statistics.mean(r[c] for r in rows), 4) for c in ("all", "shape", "color", "frechet", "sharpness_off_edges")}, [round(r["all"],3) for r in rows], flush=True)
