"""Issue 30 probe: the ablation's distillation-only student (seed 0), as `python -m fastdiff.distill.ablation` trains it."""
import sys, torch
from pathlib import Path
from fastdiff.distill import ablation
from fastdiff.distill import recipe
torch.set_num_threads(1)
seed = int(sys.argv[1])
paths = torch.load(f"traj-s{seed}.pt")
ablation.training_trajectories = lambda *a, **k: paths  # the same paths prep.py saved (same call, same seed)
teacher = ablation._load(Path(ablation.TEACHER.repo_id))
ablation.train_students(teacher, Path(f"abl{seed}"), steps=ablation.RECIPE_STEPS, variants=sys.argv[2].split(","), seed=seed)
