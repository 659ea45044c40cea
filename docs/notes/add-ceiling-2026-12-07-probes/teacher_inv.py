"""Issue 30 probe: the recipe's teacher stage (train_teacher, the recipe's 5400 steps, seed 0) on the training
drawings' latents refined for the shipped tiny decoder (invert_train.py), drawn by that decoder; teacher@20 at CFG
1/2/4 on the 96 held-out prompts at three noise seeds; then the teacher's sampling paths for the students at the
best CFG. Usage: python teacher_inv.py LATENTS.pt OUT"""
import json, sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, RECIPE_STEPS, real_images, _scores
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.data import shapes_images
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.recipe import build_pipeline, train_teacher, with_vae, save_fp16, step_counts, student_config, training_trajectories
from fastdiff.distill.shapes import make_shapes, caption
torch.set_num_threads(1)
latents, out = torch.load(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
data = make_shapes(4096, seed=0)
assert list(data.captions) == list(shapes_images(4096, seed=0)[1])
pipe = build_pipeline(0)
s = time.perf_counter()
train_teacher(pipe, latents, data.captions, step_counts(40.0)["teacher"], seed=0, log=out / "losses.csv")
res = {"minutes": (time.perf_counter() - s) / 60}
print(res, flush=True)
pipe = with_vae(pipe, _load(Path(TEACHER.repo_id)).vae)
save_fp16(pipe, out / "teacher")
pipe = _load(out / "teacher")
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(x) for x in specs]
for g in (1.0, 2.0, 3.0, 4.0):
    rows = [_scores(generate(pipe, prompts, steps=20, guidance=g, seed=HELD_OUT_SEED + k), specs, classifier=clf, real=real) for k in range(3)]
    res[f"cfg{g}"] = {c: round(sum(r[c] for r in rows) / 3, 4) for c in ("all", "shape", "color", "frechet", "sharpness_off_edges")}
    print(g, res[f"cfg{g}"], flush=True)
best = max((1.0, 2.0, 3.0, 4.0), key=lambda g: res[f"cfg{g}"]["all"])
res["best"] = best
(out / "result.json").write_text(json.dumps(res, indent=1))
config = student_config(RECIPE_STEPS, guidance=best, seed=0)
torch.save(training_trajectories(pipe, data.captions, config), out / "traj-s0.pt")
print("paths saved", best, flush=True)
