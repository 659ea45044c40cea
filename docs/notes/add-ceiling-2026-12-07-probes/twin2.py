"""Issue 30 probe: the ablation's students (variants VARIANTS, comma-separated) of training seed SEED with config
changes, e.g. "distill_target='teacher'", on the paths and refined latents prep.py saved.
Usage: python twin2.py SEED VARIANTS OUT [key=value ...]"""
import dataclasses, sys, torch
from pathlib import Path
from fastdiff.distill import ablation
torch.set_num_threads(1)
seed, variants, out = int(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3])
changes = {k: eval(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])}
paths = torch.load(f"traj-s{seed}.pt")
ablation.training_trajectories = lambda *a, **k: paths  # the same paths prep.py saved (same call, same seed)
configs = ablation.student_configs
ablation.student_configs = lambda **k: {n: dataclasses.replace(c, **changes) for n, c in configs(**k).items()}
out.mkdir(parents=True, exist_ok=True)
real = out / f"real-latents-s{seed}.pt"
if not real.exists():
    real.symlink_to(Path(f"real-latents-s{seed}.pt").resolve())
teacher = ablation._load(Path(ablation.TEACHER.repo_id))
print(ablation.student_configs(steps=ablation.RECIPE_STEPS, seed=seed), flush=True)
ablation.train_students(teacher, out, steps=ablation.RECIPE_STEPS, variants=variants, seed=seed)
