"""Issue 30 probe: a teacher through the student's sampler (Euler trailing) at few steps, CFG g, held-out, 10 seeds."""
import json, statistics, sys, torch
from pathlib import Path
from fastdiff.distill import recipe as R
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.shapes import caption
torch.set_num_threads(1)
pipe = _load(Path(sys.argv[1])); g = float(sys.argv[2])
euler = R.student_pipeline(pipe, pipe.unet)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
for n in [int(a) for a in sys.argv[3:]]:
    rows = []
    for j in range(10):
        s = _scores(generate(euler, prompts, steps=n, guidance=g, seed=HELD_OUT_SEED + j), specs, classifier=clf, real=real)
        rows.append(s)
    print(sys.argv[1], f"euler@{n}", {c: round(statistics.mean(r[c] for r in rows), 4) for c in ("all", "shape", "color", "frechet", "sharpness_off_edges")}, flush=True)
