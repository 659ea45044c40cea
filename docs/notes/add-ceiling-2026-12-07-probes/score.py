"""Issue 30 probe: models of a run on the 96 held-out prompts at K noise seeds (HELD_OUT_SEED + k); accuracy,
Fréchet and speckle, as seeds10r.py. `python score.py K OUT.json NAME=FOLDER@STEPS:CFG ...` (CFG "run": the
guidance the run picked for that teacher, from RUN/figures.json)."""
import json, statistics, sys, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.shapes import caption

torch.set_num_threads(1)
K, dest = int(sys.argv[1]), Path(sys.argv[2])
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
keys = ("all", "shape", "color", "background", "position", "frechet", "sharpness_edges", "sharpness_off_edges")
out = json.loads(dest.read_text()) if dest.exists() else {}
for arg in sys.argv[3:]:
    name, rest = arg.split("=", 1)
    folder, rest = rest.split("@")
    n, g = rest.split(":")
    pipe = _load(Path(folder))
    rows = []
    for k in range(K):
        imgs = generate(pipe, prompts, steps=int(n), guidance=float(g), seed=HELD_OUT_SEED + k)
        s = _scores(imgs, specs, classifier=clf, real=real)
        rows.append({c: s[c] for c in keys})
    out[name] = {"folder": folder, "steps": int(n), "cfg": float(g), "rows": rows}
    mean = {c: round(statistics.mean(r[c] for r in rows), 4) for c in keys}
    print(name, "mean", mean, "all per seed", [round(r["all"], 3) for r in rows], flush=True)
    dest.write_text(json.dumps(out, indent=1))
