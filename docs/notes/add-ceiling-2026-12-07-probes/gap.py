"""Issue 30 probe: models on 96 of their own training captions (sample_specs(4096, seed=SEED)[:96]) vs held-out."""
import statistics, sys, torch
from pathlib import Path
from fastdiff.distill import recipe as R
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.shapes import caption, sample_specs
torch.set_num_threads(1)
seed = int(sys.argv[1])
clf = shipped_classifier().float()
train_specs = list(dict.fromkeys(sample_specs(4096, seed=seed)))[:96]
seen = set(sample_specs(4096, seed=seed))
held = held_out_specs()
print("held-out prompts in this seed's training set:", sum(s in seen for s in held))
for arg in sys.argv[2:]:
    folder, rest = arg.split("@"); n, g = rest.split(":")
    pipe = _load(Path(folder))
    for name, specs in (("train", train_specs), ("held", held)):
        real = real_images(specs); prompts = [caption(s) for s in specs]
        rows = [_scores(generate(pipe, prompts, steps=int(n), guidance=float(g), seed=HELD_OUT_SEED + j), specs, classifier=clf, real=real) for j in range(5)]
        print(arg, name, {c: round(statistics.mean(r[c] for r in rows), 3) for c in ("all", "shape", "color", "frechet")}, flush=True)
