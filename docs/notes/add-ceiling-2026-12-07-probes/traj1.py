"""The refined-latent teacher's sampling paths for training seed 1 (as teacher_inv.py writes seed 0's)."""
import json, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, RECIPE_STEPS
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import student_config, training_trajectories
torch.set_num_threads(2)
run = Path("/work/exp6/tinv"); best = json.loads((run / "result.json").read_text())["best"]
_, captions = shapes_images(4096, seed=1)
torch.save(training_trajectories(_load(run / "teacher"), captions, student_config(RECIPE_STEPS, guidance=best, seed=1)), run / "traj-s1.pt")
