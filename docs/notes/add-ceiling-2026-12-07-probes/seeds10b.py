"""Issue 30 probe: the ADD / distillation-only pairs of training seeds 1 and 2 (the same teacher; each seed's own
drawings, refined latents and paths) @1 on the 96 held-out prompts at 10 noise seeds; no timing."""
import json, statistics, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, generate, held_out_specs
from fastdiff.distill.shapes import caption
torch.set_num_threads(1)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
keys = ("all", "shape", "color", "background", "position", "frechet", "sharpness_edges", "sharpness_off_edges")
out = {}
for name, folder in [("ADD s1", "pt1/add-3600"), ("distill s1", "pt1d/distill-3600"), ("ADD s2", "pt2/add-3600"),
                     ("distill s2", "pt2d/distill-3600")]:
    pipe, rows = _load(Path("/work/exp8") / folder / "pipeline"), []
    for k in range(10):
        s = _scores(generate(pipe, prompts, steps=1, guidance=0.0, seed=HELD_OUT_SEED + k), specs, classifier=clf, real=real)
        rows.append({c: s[c] for c in keys})
    out[name] = rows
    print(name, "mean", {c: round(statistics.mean(r[c] for r in rows), 4) for c in keys}, flush=True)
Path("/work/exp9/seeds10b.json").write_text(json.dumps(out, indent=1))
