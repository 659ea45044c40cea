"""`train`: Adversarial Diffusion Distillation (Sauer et al. 2023, Algorithm 1) of a diffusers UNet teacher.

Only the trained parts go through `Accelerator.prepare` (as diffusers' distillation scripts do); the frozen ones are
cast and moved explicitly. All randomness comes from one CPU generator, so a checkpoint resumes bit for bit.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from ..errors import FastDiffError
from .conditioning import Conditioning, NoiseSchedule, encode_captions, encode_images
from .config import ADDConfig
from .discriminator import LADDDiscriminator, TeacherFeatures, default_layers, feature_channels
from .export import sample_grid
from .losses import distillation_loss, hinge_d_loss, hinge_g_loss, predict_x0, r1_penalty

__all__ = ["TrainResult", "train"]

FIELDS: tuple[str, ...] = ("step", "seconds", "lr", "loss_g", "loss_distill", "loss_adv_g")
FIELDS += ("loss_d", "loss_d_hinge", "r1", "d_real", "d_fake")
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    """The EMA student (unwrapped, on its device), the last step, the loss rows (main process only), the folder."""

    student: Any
    step: int
    log: list[dict[str, float]]
    out_dir: Path


@dataclass
class _Run:
    """What a step touches: the trained student and heads (prepared by accelerate), the frozen teacher, the RNG."""

    student: Any
    heads: Any  # LADDDiscriminator, possibly wrapped by accelerate
    ema: Any
    teacher: Any
    features: TeacherFeatures
    schedule: NoiseSchedule
    uncond: Conditioning | None  # the empty prompt's conditioning (1 row), for a guided teacher
    optimizers: list[Any]
    schedulers: list[Any]
    generator: torch.Generator

    def randn(self, like: torch.Tensor) -> torch.Tensor:
        """Gaussian noise shaped like `like`."""
        return torch.randn(like.shape, generator=self.generator).to(like.device, like.dtype)

    def randint(self, lo: int, hi: int, like: torch.Tensor) -> torch.Tensor:
        """(B,) integers uniform in [lo, hi], one per row of `like`."""
        return torch.randint(lo, hi + 1, (like.shape[0],), generator=self.generator).to(like.device)


def _accelerator(config: ADDConfig) -> Any:
    """A new `accelerate.Accelerator` with the config's mixed precision (it reads `accelerate launch`'s env)."""
    try:
        from accelerate import Accelerator
    except ImportError:
        raise FastDiffError("fastdiff.distill needs accelerate: pip install 'fastdiff[distill]'") from None
    try:
        return Accelerator(mixed_precision=config.mixed_precision)
    except ValueError as err:  # accelerate keeps one state per process
        raise FastDiffError(f"{err} Or pass accelerator= an existing Accelerator.") from None


def _freeze(module: Any, dtype: torch.dtype, device: torch.device) -> None:
    module.requires_grad_(False).eval().to(device)
    if module.dtype != dtype:  # diffusers logs a warning on every `.to(dtype)`, even a no-op one
        module.to(dtype=dtype)


def _setup(pipe: Any, config: ADDConfig, acc: Any, size: tuple[int, int]) -> _Run:
    """Student and heads built, optimizers made, everything trainable prepared; the frozen parts moved."""
    teacher = pipe.unet
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    if student.dtype != torch.float32:  # the trained weights stay float32; autocast does the rest
        student.to(dtype=torch.float32)
    _freeze(teacher, _DTYPES[config.mixed_precision], acc.device)
    for name in ("vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:  # the VAE stays float32: SDXL's overflows in fp16
            _freeze(getattr(pipe, name), torch.float32, acc.device)
    layers = config.disc_layers if config.disc_layers is not None else default_layers(teacher)
    empty = encode_captions(pipe, [""], height=size[0], width=size[1])  # its width is the heads' text input's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        channels = feature_channels(teacher, layers)
        heads = LADDDiscriminator(channels, text_dim=empty.pooled.shape[1], hidden=config.disc_hidden)
    opt_g = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    opt_d = torch.optim.AdamW(heads.parameters(), lr=config.disc_learning_rate, betas=(0.0, 0.99), weight_decay=0.0)
    warmup = max(config.warmup_steps, 1)
    sched_g, sched_d = (
        torch.optim.lr_scheduler.LambdaLR(o, lambda i: min(1.0, (i + 1) / warmup)) for o in (opt_g, opt_d)
    )
    student, heads, opt_g, opt_d, sched_g, sched_d = acc.prepare(student, heads, opt_g, opt_d, sched_g, sched_d)
    ema = copy.deepcopy(acc.unwrap_model(student)).requires_grad_(False).eval()
    schedule = NoiseSchedule(pipe.scheduler.config)
    uncond = empty.to_unet_dtype(teacher.dtype) if config.teacher_guidance_scale > 1.0 else None
    generator = torch.Generator().manual_seed(config.seed + 1000 * acc.process_index)
    features = TeacherFeatures(teacher, layers)
    return _Run(student, heads, ema, teacher, features, schedule, uncond, [opt_g, opt_d], [sched_g, sched_d], generator)


def _trained(run: _Run, acc: Any) -> dict[str, Any]:
    """The modules a checkpoint holds, unwrapped from accelerate's wrappers."""
    return {"student": acc.unwrap_model(run.student), "ema": run.ema, "heads": acc.unwrap_model(run.heads)}


def _save(run: _Run, acc: Any, out: Path, step: int, seconds: float) -> None:
    """A checkpoint of everything the next step reads, so that a run resumes bit for bit: the modules as
    safetensors and the other states (main process only), and each process's RNG."""
    scaler = getattr(acc, "scaler", None)
    states = {
        "step": step,
        "seconds": seconds,
        "optimizers": [o.state_dict() for o in run.optimizers],
        "schedulers": [s.state_dict() for s in run.schedulers],
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    folder = out / "checkpoints" / f"step-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    if acc.process_index == 0:
        for name, module in _trained(run, acc).items():
            save_model(module, str(folder / f"{name}.safetensors"))
        torch.save(states, folder / "trainer_state.pt")
    torch.save({"generator": run.generator.get_state()}, folder / f"rng-{acc.process_index}.pt")


def _latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step under `out`, or None."""
    complete = [f for f in sorted((out / "checkpoints").glob("step-*")) if (f / "trainer_state.pt").is_file()]
    return complete[-1] if complete else None


def _resume(run: _Run, acc: Any, folder: Path) -> tuple[int, float]:
    """Load a checkpoint into `run`; (step, training seconds) it was taken at. The states are loaded with
    `weights_only=True`: no pickle runs code."""
    for name, module in _trained(run, acc).items():
        load_model(module, folder / f"{name}.safetensors")
    run.generator.set_state(torch.load(folder / f"rng-{acc.process_index}.pt", weights_only=True)["generator"])
    states = torch.load(folder / "trainer_state.pt", weights_only=True)
    saved = [*states["optimizers"], *states["schedulers"]]
    for obj, state in zip([*run.optimizers, *run.schedulers], saved, strict=True):
        obj.load_state_dict(state)
    if states.get("scaler") is not None and getattr(acc, "scaler", None) is not None:
        acc.scaler.load_state_dict(states["scaler"])
    return int(states["step"]), float(states["seconds"])


class LossLog:
    """Loss rows, appended to `losses.csv` as they come; `write_json` dumps them all to `losses.json`. A resumed
    run keeps the rows up to its checkpoint. Only the main process writes (`write=False` elsewhere keeps no rows)."""

    def __init__(self, out_dir: Path, *, resume_step: int | None, write: bool) -> None:
        self.csv_path, self.write = out_dir / "losses.csv", write
        self.rows: list[dict[str, float]] = []
        if write and resume_step is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:  # rows after the checkpoint are re-run: drop them
                rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
            self.rows = [r for r in rows if r["step"] <= resume_step]
        if write:
            with self.csv_path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(self.rows)

    def append(self, row: dict[str, float]) -> None:
        """Add one row and append it to the CSV file."""
        if self.write:
            self.rows.append(row)
            with self.csv_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=FIELDS).writerow(row)

    def write_json(self) -> None:
        """Every row so far as a JSON list."""
        if self.write:
            (self.csv_path.parent / "losses.json").write_text(json.dumps(self.rows, indent=1))


def _teacher_x0(run: _Run, x_s: torch.Tensor, s: torch.Tensor, cond: Conditioning, scale: float) -> torch.Tensor:
    """The frozen teacher's one-step x̂0 at (x_s, s), with classifier-free guidance when `scale` > 1."""
    alpha, sigma = run.schedule.alpha_sigma(s)
    with torch.no_grad():
        if scale > 1.0 and run.uncond is not None:
            both = cond.with_uncond(run.uncond)
            out = run.teacher(torch.cat([x_s, x_s]), torch.cat([s, s]), return_dict=False, **both.unet_kwargs())[0]
            out_c, out_u = out.chunk(2)
            out = out_u + scale * (out_c - out_u)
        else:
            out = run.teacher(x_s, s, return_dict=False, **cond.unet_kwargs())[0]
    return predict_x0(out.float(), x_s, alpha, sigma, prediction_type=run.schedule.prediction_type)


def _teacher_target(
    run: _Run, x_s: torch.Tensor, s: torch.Tensor, cond: Conditioning, scale: float, steps: int
) -> torch.Tensor:
    """The distillation target from (x_s, s): the teacher's one-step x̂0 (ADD) when `steps` is 1; otherwise its DDIM
    sample (Song et al. 2021) over `steps` steps at s·(k − j)/k, each its guided x̂0 re-noised with its own ε. The
    student's output is still what gets re-noised, so this stays ADD's target, only nearer the teacher's sample."""
    x, t = x_s, s
    for j in range(1, steps):
        x0 = _teacher_x0(run, x, t, cond, scale)
        following = (s.float() * (steps - j) / steps).round().long().clamp(min=1)
        alpha, sigma = (v.view(-1, 1, 1, 1) for v in run.schedule.alpha_sigma(t))
        eps = (x.float() - alpha * x0) / sigma
        x, t = run.schedule.noise(x0, eps, following).to(x_s.dtype), following
    return _teacher_x0(run, x, t, cond, scale)


def _features(run: _Run, x0: torch.Tensor, t_hat: torch.Tensor, eps: torch.Tensor, cond: Conditioning) -> Any:
    """The frozen teacher's features of `x0` re-noised to t̂ (gradients reach `x0` when it requires them)."""
    x_t = run.schedule.noise(x0, eps, t_hat)
    return run.features(x_t.to(run.teacher.dtype), t_hat, **cond.unet_kwargs())


def generator_step(
    run: _Run, x0: torch.Tensor, cond: Conditioning, config: ADDConfig, path: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The student's loss λ·L_distill + L_adv,G on real latents `x0`, and x̂θ (detached) for the discriminator; with
    `path` (B, T + 1, 4, h, w), the teacher's latents at each student timestep and its sample, the student's inputs
    come from it (and, with `distill_target="trajectory"`, its target: the sample)."""
    schedule = run.schedule
    index = torch.randint(len(config.student_timesteps), (x0.shape[0],), generator=run.generator)
    t = torch.tensor(config.student_timesteps)[index].to(x0.device)  # (B,)
    if path is None:
        x_t = schedule.noise(x0, run.randn(x0), t, zero_terminal=True)  # (B, 4, h, w)
    else:  # the teacher's own sampling path through t: its end x0 is where it leads
        x_t = path[torch.arange(x0.shape[0]), index]
    out = run.student(x_t, t, return_dict=False, **cond.unet_kwargs())[0]
    alpha, sigma = schedule.alpha_sigma(t)
    kind = config.student_prediction or schedule.prediction_type
    student_x0 = predict_x0(out.float(), x_t, alpha, sigma, prediction_type=kind)

    if config.distill_target == "trajectory" and path is not None:  # no teacher call: its path was sampled once
        distill = distillation_loss(student_x0, path[:, -1], weight=torch.ones_like(alpha))
    else:
        s = run.randint(*config.teacher_timestep_range, x0)
        x_s = schedule.noise(student_x0.detach(), run.randn(x0), s)  # the student's sample, never the real one
        scale, k = config.teacher_guidance_scale, config.teacher_target_steps
        target = _teacher_target(run, x_s.to(run.teacher.dtype), s, cond, scale, k)
        distill = distillation_loss(student_x0, target, weight=schedule.alpha_sigma(s)[0])  # c(s) = α_s

    t_hat, eps = run.randint(*config.disc_timestep_range, x0), run.randn(x0)
    fake = _features(run, student_x0, t_hat, eps, cond)
    adversarial = hinge_g_loss(run.heads(fake, cond.pooled, t_hat))
    loss = config.distill_weight * distill + config.adversarial_weight * adversarial
    logs = {"loss_g": loss.item(), "loss_distill": distill.item(), "loss_adv_g": adversarial.item()}
    return loss, student_x0.detach(), logs


def discriminator_step(
    run: _Run, x0: torch.Tensor, cond: Conditioning, fake_x0: torch.Tensor, config: ADDConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss on real vs student latents, both re-noised to the same t̂, plus (γ/2)·R1 on the real features."""
    t_hat, eps = run.randint(*config.disc_timestep_range, x0), run.randn(x0)
    with torch.no_grad():
        fake = _features(run, fake_x0, t_hat, eps, cond)
        real = _features(run, x0, t_hat, eps, cond)
    real = [f.detach().requires_grad_() for f in real]  # R1 is a gradient wrt these inputs (not diffusers #6303's)
    real_scores = run.heads(real, cond.pooled, t_hat)
    fake_scores = run.heads(fake, cond.pooled, t_hat)
    hinge = hinge_d_loss(real_scores, fake_scores)
    r1 = r1_penalty(real_scores, real)
    loss = hinge + 0.5 * config.r1_gamma * r1
    logs = {"loss_d": loss.item(), "loss_d_hinge": hinge.item(), "r1": r1.item()}
    logs["d_real"] = torch.stack([s.mean() for s in real_scores]).mean().item()
    logs["d_fake"] = torch.stack([s.mean() for s in fake_scores]).mean().item()
    return loss, logs


def _update(acc: Any, loss: torch.Tensor, module: Any, optimizer: Any, scheduler: Any, max_norm: float) -> None:
    """Backward, clip, step the optimizer and its LR schedule, clear the gradients."""
    acc.backward(loss)
    acc.clip_grad_norm_(module.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _step(
    pipe: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    config: ADDConfig,
    run: _Run,
    acc: Any,
    trajectories: torch.Tensor | None,
    real_latents: torch.Tensor | None,
) -> dict[str, float]:
    """One student update, one EMA update, one discriminator update, on a random batch (with replacement)."""
    idx = torch.randint(images.shape[0], (config.batch_size,), generator=run.generator)
    path = None if trajectories is None else trajectories[idx].to(acc.device, torch.float32)
    if real_latents is None:  # the real data: always the discriminator's, also with `path`
        x = images[idx]
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # (B, 3, H, W) in [-1, 1]
        latents = encode_images(pipe.vae, x).float()
    else:
        latents = real_latents[idx].to(acc.device, torch.float32)
    height, width = images.shape[2], images.shape[3]
    cond = encode_captions(pipe, [captions[i] for i in idx.tolist()], height=height, width=width)
    cond = cond.to_unet_dtype(run.teacher.dtype)
    with acc.autocast():
        loss_g, fake_x0, logs = generator_step(run, latents, cond, config, path)
    _update(acc, loss_g, run.student, run.optimizers[0], run.schedulers[0], config.max_grad_norm)
    with torch.no_grad():
        for e, p in zip(run.ema.parameters(), acc.unwrap_model(run.student).parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - config.ema_decay)
    run.optimizers[1].zero_grad(set_to_none=True)  # the G loss also reached the heads' parameters: drop it
    with acc.autocast():
        loss_d, d_logs = discriminator_step(run, latents, cond, fake_x0, config)
    _update(acc, loss_d, run.heads, run.optimizers[1], run.schedulers[1], config.max_grad_norm)
    return logs | d_logs | {"lr": run.schedulers[0].get_last_lr()[0]}


def train(
    pipe: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    out_dir: str | Path,
    config: ADDConfig | None = None,
    resume: bool | str | Path = False,
    accelerator: Any = None,
    trajectories: torch.Tensor | None = None,
    real_latents: torch.Tensor | None = None,
) -> TrainResult:
    """Distil `pipe.unet` into a few-step student (the returned EMA) on `images` (N, 3, H, W; uint8, or float in
    [-1, 1]); `pipe`'s modules are frozen and moved to the accelerator's device in place. `resume`: True for the
    latest checkpoint under `out_dir`, or a checkpoint folder. `trajectories` (N, T + 1, 4, h, w), the teacher's
    sampling paths of the captions (`recipe.teacher_trajectories`), give the student's inputs (and, with
    `distill_target="trajectory"`, its targets); the discriminator's real data stays the images' latents (the
    teacher's samples as real data, LADD's choice, left more speckle at our scale:
    docs/notes/add-decoder-2026-12-07.md). `real_latents` (N, 4, h, w), where given, replace the images' latents as
    the real data (`recipe.refine_latents`)."""
    config = config or ADDConfig()
    if len(captions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
    if trajectories is not None and len(trajectories) != len(captions):
        raise ValueError(f"{len(trajectories)} trajectories but {len(captions)} captions")
    if real_latents is not None and len(real_latents) != len(captions):
        raise ValueError(f"{len(real_latents)} real latents but {len(captions)} captions")
    if config.distill_target == "trajectory" and trajectories is None:
        raise FastDiffError("distill_target='trajectory' needs train(trajectories=teacher_trajectories(...))")
    acc = accelerator or _accelerator(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _setup(pipe, config, acc, (images.shape[2], images.shape[3]))
    step, seconds = 0, 0.0
    folder = _latest_checkpoint(out) if resume is True else (Path(resume) if resume else None)
    if folder is not None:
        step, seconds = _resume(run, acc, folder)
    log = LossLog(out, resume_step=step if folder is not None else None, write=acc.is_main_process)
    start = time.monotonic() - seconds
    while step < config.max_steps:
        step += 1
        row = _step(pipe, images, captions, config, run, acc, trajectories, real_latents)
        seconds = time.monotonic() - start
        log.append({"step": float(step), "seconds": seconds, **row})
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            _save(run, acc, out, step, seconds)
        if config.sample_every and step % config.sample_every == 0 and acc.is_main_process and config.sample_prompts:
            (out / "samples").mkdir(exist_ok=True)
            grid = sample_grid(
                pipe, run.ema, config.sample_prompts, height=images.shape[2], width=images.shape[3],
                prediction_type=config.student_prediction,
            )  # fmt: skip
            grid.save(out / "samples" / f"step-{step:07d}.png")
        if _out_of_time(config, seconds, acc):
            break
    _save(run, acc, out, step, seconds)
    log.write_json()
    acc.wait_for_everyone()
    return TrainResult(run.ema, step, log.rows, out)


def _out_of_time(config: ADDConfig, seconds: float, acc: Any) -> bool:
    """True once the time budget is spent, decided alike on every process (by the slowest one's clock)."""
    if config.max_seconds is None:
        return False
    spent = torch.tensor([seconds], device=acc.device)
    if acc.num_processes > 1:
        spent = acc.reduce(spent, reduction="max")
    return bool(spent.item() >= config.max_seconds)
