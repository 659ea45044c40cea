"""Issue 30 probe: the ablation's ADD student (3600 steps, the shipped recipe) whose discriminator's real data are
the decoder-refined latents of its training images (invert_train.py) instead of the encoder's latents. With
TEACHER_RUN=DIR (a teacher_inv.py output), from that teacher, on its sampling paths at its best CFG (this ran as a copy, invadd2.py, differing in those lines only).
Usage: [TEACHER_RUN=DIR] python invadd.py SEED OUT LATENTS.pt [key=value ...]"""
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
