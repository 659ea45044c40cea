"""Issue 30 probe: the recipe with an EMA of the teacher's weights tracked beside its training (the raw teacher is
the recipe's own, unchanged), then the student distilled from `--student-from` (raw | ema999 | ema9995).

python ema.py --out DIR --seed S [--reuse RUN] --student-from X
--reuse RUN: stages (a)-(b) are not trained again: RUN/teacher/vae is the fp16 tiny autoencoder of the same seed
(what the recipe's teacher ships), and the refined latents are recomputed from it (deterministic on one CPU).
"""
import argparse, json, time
from pathlib import Path

import torch
import diffusers

from fastdiff.distill import recipe as R
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.evaluation import eval_specs, prompt_accuracy
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.trainer import train

p = argparse.ArgumentParser()
p.add_argument("--out", type=Path, required=True)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--reuse", type=Path)
p.add_argument("--student-from", default="ema999")
a = p.parse_args()
torch.set_num_threads(1)
out = a.out
out.mkdir(parents=True, exist_ok=True)
steps, clock, times = R.step_counts(40.0), time.perf_counter(), {}
data = make_shapes(4096, seed=a.seed)
images = images_to_tensor(data.images)
pipe = R.build_pipeline(a.seed)
if a.reuse is None:
    R.train_vae(pipe.vae, images, steps["vae"], seed=a.seed, log=out / "vae_losses.csv")
    latents = R._encode(pipe.vae, images)
    tiny = R.tiny_autoencoder(a.seed)
    R.train_tiny_autoencoder(tiny, images, latents, steps["tiny_vae"], seed=a.seed, log=out / "tiny_vae_losses.csv")
    tiny.to(torch.float16).to(torch.float32)
else:
    tiny = diffusers.AutoencoderTiny.from_pretrained(a.reuse / "teacher" / "vae").float().eval()
times["ae"] = time.perf_counter() - clock
refined = R.refine_latents(tiny, images)
times["refine"] = time.perf_counter() - clock - times["ae"]
pipe = R.with_vae(pipe, tiny)

# The EMA shadows: updated at the start of each loss_fn call (the weights after the previous step) and once after.
params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
decays = {"ema999": 0.999, "ema9995": 0.9995}
shadows = {k: [q.detach().clone() for q in params] for k in decays}
orig_loop = R._loop


def ema_update():
    with torch.no_grad():
        for k, d in decays.items():
            torch._foreach_lerp_(shadows[k], [q.detach() for q in params], 1 - d)


def loop(ps, n, lr, loss_fn, log):
    def wrapped():
        ema_update()
        return loss_fn()
    orig_loop(ps, n, lr, wrapped, log)
    ema_update()


R._loop = loop
R.train_teacher(pipe, refined, data.captions, steps["teacher"], seed=a.seed, log=out / "teacher_losses.csv")
R._loop = orig_loop
raw = [q.detach().clone() for q in params]
times["teacher_train"] = time.perf_counter() - clock - sum(times.values())


def set_weights(ws):
    with torch.no_grad():
        for q, w in zip(params, ws, strict=True):
            q.copy_(w)


figures = {"steps": steps, "student_from": a.student_from, "guidance": {}}
for name, ws in [("raw", raw), *shadows.items()]:
    set_weights(ws)
    R.save_fp16(pipe, out / f"teacher-{name}")
    g, scores = R._pick_guidance(pipe)
    figures["guidance"][name] = {"pick": g, "scores": scores}
    print(name, "CFG", g, {k: round(v["all"], 3) for k, v in scores.items()}, flush=True)
chosen = {"raw": raw, **shadows}[a.student_from]
set_weights(chosen)
R.save_fp16(pipe, out / "teacher")
guidance = figures["guidance"][a.student_from]["pick"]
times["teacher"] = time.perf_counter() - clock - sum(times.values())
config = R.student_config(steps["student"], guidance=guidance, seed=a.seed)
images_u8 = torch.tensor(data.images).permute(0, 3, 1, 2).contiguous()
paths = R.training_trajectories(pipe, data.captions, config)
result = train(pipe, images_u8, data.captions, out_dir=out / "add", config=config, trajectories=paths, real_latents=refined)
student = R.student_pipeline(pipe, result.student.float(), prediction_type=config.student_prediction)
R.save_fp16(student, out / "student")
times["student"] = time.perf_counter() - clock - sum(times.values())
specs = eval_specs()
figures["teacher_guidance"] = guidance
figures["accuracy"] = {
    "teacher@20": prompt_accuracy(pipe, specs, steps=20, guidance=guidance),
    "student@1": prompt_accuracy(student, specs, steps=1, guidance=0.0),
    "student@4": prompt_accuracy(student, specs, steps=4, guidance=0.0),
}
times["total"] = time.perf_counter() - clock
figures["seconds"] = times
(out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
print(json.dumps(figures["accuracy"], indent=1))
