"""Issue 30 probe: train one student from the shipped teacher with a config change; evaluate held-out @1/2/4."""
import dataclasses, json, sys, time
from pathlib import Path
import torch
from fastdiff.distill.ablation import _load, evaluate_model, real_images, TEACHER
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.data import shapes_images
from fastdiff.distill.evaluation import held_out_specs, HELD_OUT_SEED, image_rows
from fastdiff.distill.recipe import student_config, student_pipeline, save_fp16
from fastdiff.distill.trainer import train

label, steps, change = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
for k, v in list(change.items()):
    if isinstance(v, list):
        change[k] = tuple(v)
torch.set_num_threads(1)
out = Path("/work/exp/runs") / label
teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=0)
config = dataclasses.replace(student_config(steps, guidance=2.0, seed=0), **change)
start = time.perf_counter()
result = train(teacher, images, captions, out_dir=out / "train", config=config)
minutes = (time.perf_counter() - start) / 60
pred = config.student_prediction or "epsilon"
pipe = student_pipeline(teacher, result.student.float(), prediction_type=pred)
save_fp16(pipe, out / "pipeline")
pipe.set_progress_bar_config(disable=True)
specs = held_out_specs()
real, clf = real_images(specs), shipped_classifier().float()
rows = []
for n in (1, 2, 4):
    scores, imgs = evaluate_model(pipe, specs, steps=n, guidance=0.0, classifier=clf, real=real, repeats=1, seed=HELD_OUT_SEED)
    rows.append(imgs[:12])
    rec = {"label": label, "steps": steps, "change": sys.argv[3], "at": n, "minutes": round(minutes, 2)} | {k: round(v, 4) for k, v in scores.items()}
    print("label", json.dumps(rec), flush=True)
    with open("/work/exp/results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
image_rows([real[:12], *rows], out / "grid.png")
