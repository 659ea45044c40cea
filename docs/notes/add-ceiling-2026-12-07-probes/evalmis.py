"""Issue 30 probe: teacher@20, the ablation's ADD and distillation-only students (training seeds 0, 1) and the probe
students given as NAME=FOLDER, scored by `ablation.evaluate_model` on the 96 held-out prompts at the held-out noise
seed and +1, +2 (2 threads, nothing else running)."""
import json, sys, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, GUIDANCE, evaluate_model, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs
torch.set_num_threads(2)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
models = {"teacher@20": (_load(Path(TEACHER.repo_id)), 20, GUIDANCE)}
for s, root in ((0, "ablation"), (1, "ablation-s1")):
    for v in ("add", "distill"):
        models[f"{v}@1 s{s}"] = (_load(Path(f"/work/exp4/{root}/{v}-3600/pipeline")), 1, 0.0)
for a in sys.argv[1:]:
    name, folder = a.split("=")
    models[name] = (_load(Path(folder)), 1, 0.0)
out = {}
for name, (pipe, steps, g) in models.items():
    rows = []
    for k in range(3):
        r, _ = evaluate_model(pipe, specs, steps=steps, guidance=g, classifier=clf, real=real, repeats=1, seed=HELD_OUT_SEED + k)
        rows.append({c: round(r[c], 4) for c in ("all", "shape", "color", "frechet", "sharpness_edges", "sharpness_off_edges", "seconds_per_image")})
    out[name] = rows
    mean = {c: round(sum(x[c] for x in rows) / 3, 4) for c in rows[0]}
    print(f"{name:16s}", " | ".join(f"{x['all']:.3f}/{x['frechet']:.1f}/{x['sharpness_off_edges']:.4f}" for x in rows), "mean", mean, flush=True)
Path("/work/exp5/evalmis.json").write_text(json.dumps(out, indent=1))
