"""Issue 30 probe: the recipe's student stage from a saved teacher (as /work/exp10/stud.py) with one change, set by
environment variables, then scored on the 96 held-out prompts at ten noise seeds (as score.py).
`python stud2.py TEACHER_RUN OUT SEED` with TG=<target CFG> (trajectories stay at the run's CFG), STEPS=<student
steps>, ADV=<adversarial weight> (0: distillation-only twin), MULTI=<k> (the teacher's target: k DDIM steps from the
re-noised student output to 0 instead of one x̂0), LAMBDA=<distill weight>, HYBRID=<w> (add w x the path-end regression to the paper's target), RESUME=1 (continue from the latest checkpoint under OUT/add: with a constant LR after
warm-up, a 3600-step run continued to STEPS equals a STEPS run from scratch)."""
import dataclasses, json, os, statistics, sys, time, torch
from pathlib import Path
from fastdiff.distill import recipe as R, trainer as T
from fastdiff.distill.ablation import _load, _scores, real_images
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.shapes import make_shapes, caption
torch.set_num_threads(1)
run, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
clock = time.perf_counter()
data = make_shapes(4096, seed=seed)
refined = torch.load(f"/work/exp10/refined-s{seed}.pt")
pipe = _load(run / "teacher")
guidance = json.loads((run / "figures.json").read_text())["teacher_guidance"]
steps = int(os.environ.get("STEPS", R.step_counts(40.0)["student"]))
config = R.student_config(steps, guidance=guidance, seed=seed)
paths = R.training_trajectories(pipe, data.captions, config)
change = {}
if "TG" in os.environ: change["teacher_guidance_scale"] = float(os.environ["TG"])
if "ADV" in os.environ: change["adversarial_weight"] = float(os.environ["ADV"])
if "LAMBDA" in os.environ: change["distill_weight"] = float(os.environ["LAMBDA"])
if "LR" in os.environ: change["learning_rate"] = float(os.environ["LR"])
if os.environ.get("DECAY"):  # both optimizers: the trainer's warm-up, then cosine decay to a tenth at the last step
    import math
    _Lambda = torch.optim.lr_scheduler.LambdaLR
    def _decayed(opt, fn, _n=steps):
        return _Lambda(opt, lambda i: fn(i) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(i, _n) / _n))))
    torch.optim.lr_scheduler.LambdaLR = _decayed
config = dataclasses.replace(config, **change)
k = int(os.environ.get("MULTI", "1"))
if k > 1:
    one = T._teacher_x0
    def multi(run_, x_s, s, cond, scale):
        x = x_s
        for j in range(k):
            t = (s.float() * (k - j) / k).round().long().clamp(min=1)
            x0 = one(run_, x, t, cond, scale)
            if j == k - 1:
                return x0
            nxt = (s.float() * (k - j - 1) / k).round().long().clamp(min=1)
            a, sg = (v.view(-1, 1, 1, 1) for v in run_.schedule.alpha_sigma(t))
            a2, sg2 = (v.view(-1, 1, 1, 1) for v in run_.schedule.alpha_sigma(nxt))
            eps = (x.float() - a * x0) / sg
            x = (a2 * x0 + sg2 * eps).to(x_s.dtype)
    T._teacher_x0 = multi

w_path = float(os.environ.get("HYBRID", "0"))
if w_path > 0:  # the paper's target plus HYBRID x the path-end regression (the 20-step teacher sample of the input's path)
    def hybrid_step(run_, x0, cond, config_, path=None):
        schedule = run_.schedule
        index = torch.randint(len(config_.student_timesteps), (x0.shape[0],), generator=run_.generator)
        t = torch.tensor(config_.student_timesteps)[index].to(x0.device)
        x_t = path[torch.arange(x0.shape[0]), index]
        out_ = run_.student(x_t, t, return_dict=False, **cond.unet_kwargs())[0]
        alpha, sigma = schedule.alpha_sigma(t)
        student_x0 = T.predict_x0(out_.float(), x_t, alpha, sigma, prediction_type=config_.student_prediction)
        s = run_.randint(*config_.teacher_timestep_range, x0)
        x_s = schedule.noise(student_x0.detach(), run_.randn(x0), s)
        target = T._teacher_x0(run_, x_s.to(run_.teacher.dtype), s, cond, config_.teacher_guidance_scale)
        distill = T.distillation_loss(student_x0, target, weight=schedule.alpha_sigma(s)[0])
        distill = distill + w_path * T.distillation_loss(student_x0, path[:, -1], weight=torch.ones_like(alpha))
        t_hat, eps = run_.randint(*config_.disc_timestep_range, x0), run_.randn(x0)
        fake = T._features(run_, student_x0, t_hat, eps, cond)
        adversarial = T.hinge_g_loss(run_.heads(fake, cond.pooled, t_hat))
        loss = config_.distill_weight * distill + config_.adversarial_weight * adversarial
        logs = {"loss_g": loss.item(), "loss_distill": distill.item(), "loss_adv_g": adversarial.item()}
        return loss, student_x0.detach(), logs
    T.generator_step = hybrid_step
print("config", config, "multi", k, "hybrid", w_path, flush=True)
images_u8 = torch.tensor(data.images).permute(0, 3, 1, 2).contiguous()
result = T.train(pipe, images_u8, data.captions, out_dir=out / "add", config=config, trajectories=paths, real_latents=refined, resume=bool(os.environ.get("RESUME")))
student = R.student_pipeline(pipe, result.student.float(), prediction_type=config.student_prediction)
R.save_fp16(student, out / "student")
train_s = time.perf_counter() - clock
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
keys = ("all", "shape", "color", "background", "position", "frechet", "sharpness_edges", "sharpness_off_edges")
res = {"train_seconds": train_s, "env": {v: os.environ.get(v) for v in ("TG", "STEPS", "ADV", "MULTI", "LAMBDA", "LR", "DECAY", "RESUME", "HYBRID")}}
student = _load(out / "student")
for n in (1, 4):
    rows = []
    for j in range(10):
        imgs = generate(student, prompts, steps=n, guidance=0.0, seed=HELD_OUT_SEED + j)
        s = _scores(imgs, specs, classifier=clf, real=real)
        rows.append({c: s[c] for c in keys})
    res[f"student@{n}"] = {"rows": rows, "mean": {c: round(statistics.mean(r[c] for r in rows), 4) for c in keys}}
    print(f"@{n}", res[f"student@{n}"]["mean"], [round(r["all"], 3) for r in rows], flush=True)
(out / "score.json").write_text(json.dumps(res, indent=1))
