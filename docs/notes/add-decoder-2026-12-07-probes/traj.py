"""Issue 30 probe (with REAL_DISC=1: the discriminator on the drawn images' latents, as ADD, not on the samples): x0.py with LADD's synthetic data and the trajectory target (teacher's 20-step Euler CFG-2 samples)."""
import dataclasses, json, sys, time
from pathlib import Path
import torch
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import student_config, student_pipeline, save_fp16, teacher_trajectories
from fastdiff.distill.trainer import train
import os
import fastdiff.distill.trainer as T
from fastdiff.distill.conditioning import encode_images, encode_captions
if os.environ.get("REAL_DISC") == "1":
    def _step(pipe, images, captions, config, run, acc, trajectories):
        idx = torch.randint(images.shape[0], (config.batch_size,), generator=run.generator)
        x = images[idx]
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        path = trajectories[idx].to(acc.device, torch.float32)
        real = encode_images(pipe.vae, x).float()  # the drawn images' latents: the discriminator's real data
        cond = encode_captions(pipe, [captions[i] for i in idx.tolist()], height=x.shape[2], width=x.shape[3])
        cond = cond.to_unet_dtype(run.teacher.dtype)
        with acc.autocast():
            loss_g, fake_x0, logs = T.generator_step(run, path[:, -1], cond, config, path)
        T._update(acc, loss_g, run.student, run.optimizers[0], run.schedulers[0], config.max_grad_norm)
        with torch.no_grad():
            for e, p in zip(run.ema.parameters(), acc.unwrap_model(run.student).parameters(), strict=True):
                e.lerp_(p.detach(), 1.0 - config.ema_decay)
        run.optimizers[1].zero_grad(set_to_none=True)
        with acc.autocast():
            loss_d, d_logs = T.discriminator_step(run, real, cond, fake_x0, config)
        T._update(acc, loss_d, run.heads, run.optimizers[1], run.schedulers[1], config.max_grad_norm)
        return logs | d_logs | {"lr": run.schedulers[0].get_last_lr()[0]}
    T._step = _step
label, steps, change = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
out = Path("/work/exp/runs") / label
teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=0)
config = dataclasses.replace(student_config(max(steps, 1), guidance=2.0, seed=0), **change)
cache = Path("/work/exp3/traj.pt")
if cache.is_file():
    traj = torch.load(cache)
else:
    s = time.perf_counter()
    noise = torch.randn(4096, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traj = teacher_trajectories(teacher, captions, noise, steps=20, guidance=2.0, timesteps=config.student_timesteps)
    torch.save(traj, cache); print("trajectories min", round((time.perf_counter() - s) / 60, 2), flush=True)
if steps == 0: sys.exit()
start = time.perf_counter()
result = train(teacher, images, captions, out_dir=out / "train", config=config, trajectories=traj)
print("minutes", round((time.perf_counter() - start) / 60, 2), flush=True)
save_fp16(student_pipeline(teacher, result.student.float(), prediction_type="sample"), out / "pipeline")
