"""Issue 30 probe: the recipe's ADD student (3600 steps) with one change to its config, as the ablation trains it.
Usage: python mis.py SEED OUT key=value ...  (values eval'd)."""
import dataclasses, sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, student_configs, RECIPE_STEPS
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import save_fp16, student_pipeline, training_trajectories
from fastdiff.distill.trainer import train
torch.set_num_threads(1)
seed, out = int(sys.argv[1]), Path(sys.argv[2])
changes = {k: eval(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=seed)
config = dataclasses.replace(student_configs(steps=RECIPE_STEPS, seed=seed)["add"], **changes)
print(config, flush=True)
start = time.perf_counter()
paths = training_trajectories(teacher, captions, config)
result = train(teacher, images, captions, out_dir=out / "train", config=config, trajectories=paths)
pipe = student_pipeline(teacher, result.student.float(), prediction_type=config.student_prediction)
save_fp16(pipe, out / "pipeline")
print("minutes", round((time.perf_counter() - start) / 60, 2), flush=True)
