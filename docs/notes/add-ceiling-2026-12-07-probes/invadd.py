"""Issue 30 probe: the ablation's ADD student (3600 steps, the shipped recipe) whose discriminator's real data are
the decoder-refined latents of its training images (invert_train.py) instead of the encoder's latents. With
TEACHER_RUN=DIR (a teacher_inv.py output), from that teacher, on its sampling paths at its best CFG (this ran as a copy, invadd2.py, differing in those lines only).
With FRESH=1, the adversarial term (and the discriminator's fakes) come from a second student call at t = 999 on
fresh noise (this ran as a copy, fresh.py, differing in those lines only).
Usage: [TEACHER_RUN=DIR] [FRESH=1] python invadd.py SEED OUT LATENTS.pt [key=value ...]"""
import dataclasses, json, os, sys, time, torch
from pathlib import Path
from fastdiff.distill import trainer as T
from fastdiff.distill.ablation import _load, GUIDANCE, TEACHER, student_configs, RECIPE_STEPS
from fastdiff.distill.conditioning import encode_captions
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import save_fp16, student_pipeline, training_trajectories
torch.set_num_threads(1)
seed, out, INV = int(sys.argv[1]), Path(sys.argv[2]), torch.load(sys.argv[3])
changes = {k: eval(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])}
RUN = Path(os.environ["TEACHER_RUN"]) if "TEACHER_RUN" in os.environ else None
BEST = json.loads((RUN / "result.json").read_text())["best"] if RUN else GUIDANCE


def generator_step(run, x0, cond, config, path=None):  # trainer.generator_step, adversarial term on fresh noise
    from fastdiff.distill.losses import distillation_loss, hinge_g_loss, predict_x0
    schedule = run.schedule
    index = torch.randint(len(config.student_timesteps), (x0.shape[0],), generator=run.generator)
    t = torch.tensor(config.student_timesteps)[index].to(x0.device)
    x_t = path[torch.arange(x0.shape[0]), index]
    kind = config.student_prediction or schedule.prediction_type
    out = run.student(x_t, t, return_dict=False, **cond.unet_kwargs())[0]
    alpha, sigma = schedule.alpha_sigma(t)
    student_x0 = predict_x0(out.float(), x_t, alpha, sigma, prediction_type=kind)
    distill = distillation_loss(student_x0, path[:, -1], weight=torch.ones_like(alpha))
    t1 = torch.full_like(t, 999)
    x_f = schedule.noise(x0, run.randn(x0), t1, zero_terminal=True)  # pure noise at zero terminal SNR
    out_f = run.student(x_f, t1, return_dict=False, **cond.unet_kwargs())[0]
    a1, s1 = schedule.alpha_sigma(t1)
    fresh_x0 = predict_x0(out_f.float(), x_f, a1, s1, prediction_type=kind)
    t_hat, eps = run.randint(*config.disc_timestep_range, x0), run.randn(x0)
    fake = T._features(run, fresh_x0, t_hat, eps, cond)
    adversarial = hinge_g_loss(run.heads(fake, cond.pooled, t_hat))
    loss = config.distill_weight * distill + config.adversarial_weight * adversarial
    logs = {"loss_g": loss.item(), "loss_distill": distill.item(), "loss_adv_g": adversarial.item()}
    return loss, fresh_x0.detach(), logs


if os.environ.get("FRESH"):  # fresh.py's run: the adversarial term on fresh noise
    T.generator_step = generator_step


def _step(pipe, images, captions, config, run, acc, trajectories):  # trainer._step with latents = INV[idx]
    idx = torch.randint(images.shape[0], (config.batch_size,), generator=run.generator)
    x = images[idx]
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
    path = None if trajectories is None else trajectories[idx].to(acc.device, torch.float32)
    latents = INV[idx].float()
    cond = encode_captions(pipe, [captions[i] for i in idx.tolist()], height=x.shape[2], width=x.shape[3])
    cond = cond.to_unet_dtype(run.teacher.dtype)
    with acc.autocast():
        loss_g, fake_x0, logs = T.generator_step(run, latents, cond, config, path)
    T._update(acc, loss_g, run.student, run.optimizers[0], run.schedulers[0], config.max_grad_norm)
    with torch.no_grad():
        for e, p in zip(run.ema.parameters(), acc.unwrap_model(run.student).parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - config.ema_decay)
    run.optimizers[1].zero_grad(set_to_none=True)
    with acc.autocast():
        loss_d, d_logs = T.discriminator_step(run, latents, cond, fake_x0, config)
    T._update(acc, loss_d, run.heads, run.optimizers[1], run.schedulers[1], config.max_grad_norm)
    return logs | d_logs | {"lr": run.schedulers[0].get_last_lr()[0]}


T._step = _step
teacher = _load(RUN / "teacher" if RUN else Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=seed)
assert len(INV) == len(captions)
config = dataclasses.replace(student_configs(steps=RECIPE_STEPS, guidance=BEST, seed=seed)["add"], **changes)
print(config, flush=True)
start = time.perf_counter()
paths = torch.load(RUN / f"traj-s{seed}.pt" if RUN else f"/work/exp5/traj-s{seed}.pt")  # changes leave them alone
result = T.train(teacher, images, captions, out_dir=out / "train", config=config, trajectories=paths)
pipe = student_pipeline(teacher, result.student.float(), prediction_type=config.student_prediction)
save_fp16(pipe, out / "pipeline")
print("minutes", round((time.perf_counter() - start) / 60, 2), flush=True)
