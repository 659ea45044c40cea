"""Issue 30 probe: students given as NAME=FOLDER, scored by `ablation.evaluate_model` on the 96 held-out prompts at
the held-out noise seed and +1, +2 (accuracy only is compared; times are not, other work ran beside). THREADS=N: torch threads (default 1)."""
import json, sys, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, evaluate_model, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs
torch.set_num_threads(int(__import__("os").environ.get("THREADS", 1)))
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
out = {}
for a in sys.argv[1:]:
    name, folder = a.split("=")
    steps = int(name.split("@")[1].split()[0]) if "@" in name else 1
    pipe, rows = _load(Path(folder)), []
    for k in range(3):
        r, _ = evaluate_model(pipe, specs, steps=steps, guidance=0.0, classifier=clf, real=real, repeats=1, seed=HELD_OUT_SEED + k)
        rows.append({c: round(r[c], 4) for c in ("all", "shape", "color", "background", "position", "frechet", "sharpness_edges", "sharpness_off_edges")})
    out[name] = rows
    mean = {c: round(sum(x[c] for x in rows) / 3, 4) for c in rows[0]}
    print(f"{name:16s}", " | ".join(f"{x['all']:.3f}/{x['frechet']:.1f}/{x['sharpness_off_edges']:.4f}" for x in rows), "mean", mean, flush=True)
    p = Path("evalp.json"); old = json.loads(p.read_text()) if p.is_file() else {}
    p.write_text(json.dumps(old | {name: rows}, indent=1))
