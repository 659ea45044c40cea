"""Issue 30 probe: DMD2's distribution matching (Yin et al. 2024, "Improved Distribution Matching Distillation")
as the score-distillation term, with or without ADD's adversarial term (the LADD heads on teacher features) and
ADD's regression term. A fake score UNet (initialised from the teacher, ε-prediction) is trained on the student's
x̂0 by the denoising loss, `dmd_ratio` updates per student update (two time-scale rule). Patches the trainer's
generator_step and _step; evaluates held-out @1/2/4 like x0.py.
Run: python dmd.py LABEL STEPS '{"dmd_weight": 1, "dmd_ratio": 2, ...config changes}'"""
import copy, dataclasses, json, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from fastdiff.distill import trainer as T
from fastdiff.distill.losses import distillation_loss, hinge_g_loss, predict_x0
from fastdiff.distill.ablation import _load, evaluate_model, real_images, TEACHER
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.data import shapes_images
from fastdiff.distill.evaluation import held_out_specs, HELD_OUT_SEED, image_rows
from fastdiff.distill.recipe import student_config, student_pipeline, save_fp16
from fastdiff.distill.trainer import train

label, steps, change = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
dmd = {k: change.pop(k) for k in list(change) if k.startswith("dmd_")}
W, RATIO, FLR = dmd.get("dmd_weight", 1.0), dmd.get("dmd_ratio", 2), dmd.get("dmd_fake_lr", 1e-4)
REAL_CFG, REG = dmd.get("dmd_real_cfg", 2.0), dmd.get("dmd_regression", 0.0)
for k, v in list(change.items()):
    if isinstance(v, list):
        change[k] = tuple(v)
torch.set_num_threads(1)
S = {}


def eps_x0(unet, x, t, cond, run, scale=1.0):
    alpha, sigma = run.schedule.alpha_sigma(t)
    if scale > 1.0:
        both = cond.with_uncond(run.uncond)
        out = unet(torch.cat([x, x]), torch.cat([t, t]), return_dict=False, **both.unet_kwargs())[0]
        c, u = out.chunk(2)
        out = u + scale * (c - u)
    else:
        out = unet(x, t, return_dict=False, **cond.unet_kwargs())[0]
    return predict_x0(out.float(), x, alpha, sigma, prediction_type="epsilon")


def generator_step(run, x0, cond, config, path=None):
    schedule = run.schedule
    index = torch.randint(len(config.student_timesteps), (x0.shape[0],), generator=run.generator)
    t = torch.tensor(config.student_timesteps)[index]
    x_t = schedule.noise(x0, run.randn(x0), t, zero_terminal=True)
    out = run.student(x_t, t, return_dict=False, **cond.unet_kwargs())[0]
    alpha, sigma = schedule.alpha_sigma(t)
    student_x0 = predict_x0(out.float(), x_t, alpha, sigma, prediction_type="sample")
    # distribution matching: the gradient (fake − real) x̂0 at a re-noised student sample, normalised per sample
    s, noise = run.randint(20, 980, x0), run.randn(x0)
    with torch.no_grad():
        x_s = schedule.noise(student_x0.detach(), noise, s)
        real = eps_x0(run.teacher, x_s, s, cond, run, REAL_CFG)
        fake = eps_x0(S["fake"], x_s, s, cond, run)
        p_real = student_x0.detach() - real
        grad = (fake - real) / p_real.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        grad = torch.nan_to_num(grad)
    dm = 0.5 * (student_x0 - (student_x0.detach() - grad)).pow(2).flatten(1).sum(1).mean()  # summed, as the regression
    loss = W * dm
    logs = {"loss_distill": dm.item()}
    if REG:
        s2 = run.randint(*config.teacher_timestep_range, x0)
        x_s2 = schedule.noise(student_x0.detach(), run.randn(x0), s2)
        target = T._teacher_x0(run, x_s2, s2, cond, config.teacher_guidance_scale)
        reg = distillation_loss(student_x0, target, weight=schedule.alpha_sigma(s2)[0])
        loss = loss + REG * reg
    if config.adversarial_weight:
        t_hat, e = run.randint(*config.disc_timestep_range, x0), run.randn(x0)
        adv = hinge_g_loss(run.heads(T._features(run, student_x0, t_hat, e, cond), cond.pooled, t_hat))
        loss = loss + config.adversarial_weight * adv
        logs["loss_adv_g"] = adv.item()
    else:
        logs["loss_adv_g"] = 0.0
    S["fake_x0"], S["cond"] = student_x0.detach(), cond
    logs["loss_g"] = loss.item()
    return loss, student_x0.detach(), logs


orig_step = T._step


def _step(pipe, images, captions, config, run, acc, trajectories):
    if "fake" not in S:
        S["fake"] = copy.deepcopy(run.teacher).float().train().requires_grad_(True)
        S["opt"] = torch.optim.AdamW(S["fake"].parameters(), lr=FLR, weight_decay=0.0)
        if run.uncond is None:
            raise SystemExit("needs teacher_guidance_scale > 1 for the real score's CFG")
    logs = orig_step(pipe, images, captions, config, run, acc, trajectories)
    x0, cond = S.pop("fake_x0"), S.pop("cond")
    fake_losses = []
    for _ in range(RATIO):  # the fake score tracks the student's current distribution
        t = run.randint(0, 999, x0)
        e = run.randn(x0)
        pred = S["fake"](run.schedule.noise(x0, e, t), t, return_dict=False, **cond.unet_kwargs())[0]
        loss = F.mse_loss(pred.float(), e)
        S["opt"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(S["fake"].parameters(), 1.0)
        S["opt"].step()
        fake_losses.append(loss.item())
    return logs | {"r1": sum(fake_losses) / len(fake_losses)}  # logged in the r1 column: the fake score's loss


T.generator_step, T._step = generator_step, _step

out = Path("/work/exp/runs") / label

teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=0)
config = dataclasses.replace(student_config(steps, guidance=2.0, seed=0), **change)
start = time.perf_counter()
result = train(teacher, images, captions, out_dir=out / "train", config=config)
minutes = (time.perf_counter() - start) / 60
pipe = student_pipeline(teacher, result.student.float(), prediction_type="sample")
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
