"""Issue 30: teacher@20 and the ADD / distillation-only students of training seeds 0 and 1, scored by
`ablation.evaluate_model` on the 96 held-out prompts at the held-out noise seed and +1, +2 (2 threads)."""
import json, torch
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
out = {}
for name, (pipe, steps, g) in models.items():
    rows = []
    for k in range(3):
        r, _ = evaluate_model(pipe, specs, steps=steps, guidance=g, classifier=clf, real=real, repeats=1, seed=HELD_OUT_SEED + k)
        rows.append({c: round(r[c], 4) for c in ("all", "shape", "color", "frechet", "sharpness_edges", "sharpness_off_edges")})
    out[name] = rows
    mean = {c: round(sum(x[c] for x in rows) / 3, 4) for c in rows[0]}
    print(name, " | ".join(str(x["all"]) + "/" + str(x["frechet"]) + "/" + str(x["sharpness_off_edges"]) for x in rows), "mean", mean, flush=True)
Path("/work/exp4/seeds.json").write_text(json.dumps(out, indent=1))
