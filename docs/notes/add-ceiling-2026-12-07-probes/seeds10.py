"""Issue 30 probe: teacher@20 (CFG 2), the shipped student @1/@4 and the ablation's distillation-only twin @1 on the
96 held-out prompts at 10 noise seeds (HELD_OUT_SEED + k), accuracy/Fréchet/speckle only (no timing)."""
import json, statistics, sys, torch
from pathlib import Path
from fastdiff.distill.ablation import GUIDANCE, _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs
from fastdiff.distill.shapes import caption
from fastdiff.distill.evaluation import generate
from fastdiff.presets import SHIPPED_MODELS
torch.set_num_threads(1)
K = int(sys.argv[1]) if len(sys.argv) > 1 else 10
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
teacher, student = _load(SHIPPED_MODELS / "fastdiff-shapes-teacher"), _load(SHIPPED_MODELS / "fastdiff-shapes")
twin = _load(Path("/work/exp8/ablnew/distill-3600/pipeline"))
models = [("teacher@20", teacher, 20, GUIDANCE), ("student@1", student, 1, 0.0), ("student@4", student, 4, 0.0),
          ("distill-only@1", twin, 1, 0.0)]
keys = ("all", "shape", "color", "background", "position", "frechet", "sharpness_edges", "sharpness_off_edges")
out = {}
for name, pipe, n, g in models:
    rows = []
    for k in range(K):
        imgs = generate(pipe, prompts, steps=n, guidance=g, seed=HELD_OUT_SEED + k)
        s = _scores(imgs, specs, classifier=clf, real=real)
        rows.append({c: s[c] for c in keys})
    out[name] = rows
    mean = {c: round(statistics.mean(r[c] for r in rows), 4) for c in keys}
    print(name, "mean", mean, "all per seed", [round(r["all"], 3) for r in rows], flush=True)
Path("/work/exp9/seeds10.json").write_text(json.dumps(out, indent=1))
