"""Issue 30 probe: the recipe's student stage (e) from a saved teacher on a recipe run's refined latents
(refined-sSEED.pt, from longt.py). `python stud.py TEACHER_RUN OUT [SEED]` (TEACHER_RUN/teacher,
TEACHER_RUN/figures.json; SEED the recipe's seed, 0 by default)."""
import json, sys, time, torch
from pathlib import Path
from fastdiff.distill import recipe as R
from fastdiff.distill.ablation import _load
from fastdiff.distill.evaluation import eval_specs, prompt_accuracy
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.trainer import train
torch.set_num_threads(1)
run, out = Path(sys.argv[1]), Path(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
clock = time.perf_counter()
data = make_shapes(4096, seed=seed)
refined = torch.load(f"/work/exp10/refined-s{seed}.pt")
pipe = _load(run / "teacher")
guidance = json.loads((run / "figures.json").read_text())["teacher_guidance"]
config = R.student_config(R.step_counts(40.0)["student"], guidance=guidance, seed=seed)
images_u8 = torch.tensor(data.images).permute(0, 3, 1, 2).contiguous()
paths = R.training_trajectories(pipe, data.captions, config)
result = train(pipe, images_u8, data.captions, out_dir=out / "add", config=config, trajectories=paths, real_latents=refined)
student = R.student_pipeline(pipe, result.student.float(), prediction_type=config.student_prediction)
R.save_fp16(student, out / "student")
specs = eval_specs()
acc = {"student@1": prompt_accuracy(student, specs, steps=1, guidance=0.0),
       "student@4": prompt_accuracy(student, specs, steps=4, guidance=0.0)}
(out / "figures.json").write_text(json.dumps({"accuracy": acc, "seconds": time.perf_counter() - clock}, indent=1))
print(json.dumps(acc))
