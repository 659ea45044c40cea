"""Issue 30: the library's student stage (recipe.student_config, teacher_target_steps=4) for N steps from the 10,800-step
seed-0 teacher, its loss rows compared with the probe run's (stud2.py MULTI=4) to the last digit.
`python libcheck.py N PROBE_RUN_DIR`"""
import csv, dataclasses, json, sys, torch
from pathlib import Path
from fastdiff.distill import recipe as R
from fastdiff.distill.ablation import _load
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.trainer import train
torch.set_num_threads(1)
n, probe = int(sys.argv[1]), Path(sys.argv[2])
data = make_shapes(4096, seed=0)
refined = torch.load("/work/exp10/refined-s0.pt")
pipe = _load(Path("/work/exp10/long10800/teacher"))
config = R.student_config(R.step_counts(40.0)["student"], guidance=2.0, seed=0)
print(config, flush=True)
paths = R.training_trajectories(pipe, data.captions, config)
images_u8 = torch.tensor(data.images).permute(0, 3, 1, 2).contiguous()
train(pipe, images_u8, data.captions, out_dir="lib", config=dataclasses.replace(config, max_steps=n), trajectories=paths, real_latents=refined)
read = lambda f: [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(f))]
mine, theirs = read("lib/losses.csv"), read(probe / "add/losses.csv")[:n]
print("equal rows:", sum(a == b for a, b in zip(mine, theirs)), "of", n, flush=True)
