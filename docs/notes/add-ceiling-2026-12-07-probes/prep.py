"""Issue 30 probe prep: the ablation's real data (refined latents) and the teacher's paths for training seed SEED."""
import sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, student_configs, RECIPE_STEPS, refined_latents
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import training_trajectories
torch.set_num_threads(1)
seed = int(sys.argv[1])
teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=seed)
t = time.perf_counter()
refined_latents(teacher, images, Path(f"real-latents-s{seed}.pt"))
print("refined", (time.perf_counter() - t) / 60, flush=True)
config = student_configs(steps=RECIPE_STEPS, seed=seed)["add"]
torch.save(training_trajectories(teacher, captions, config), f"traj-s{seed}.pt")
print("paths", (time.perf_counter() - t) / 60, flush=True)
