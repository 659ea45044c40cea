"""`train`: Adversarial Diffusion Distillation (Sauer et al. 2023) of a diffusers UNet teacher, under accelerate.

Only the student, the discriminator heads, their optimizers and LR schedulers go through `Accelerator.prepare`
(as diffusers' own distillation scripts do), so `accelerate launch` spreads a run over GPUs; the frozen teacher
UNet, VAE and text encoder are cast to the mixed-precision dtype and moved explicitly.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import FastDiffError
from .checkpoint import LossLog, checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from .conditioning import NoiseSchedule, encode_captions, encode_images
from .config import ADDConfig
from .discriminator import LADDDiscriminator, TeacherFeatures, default_layers, feature_channels
from .export import sample_grid
from .steps import Batch, Models, discriminator_step, generator_step

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
    models: Models
    ema: Any
    optimizers: list[Any]
    schedulers: list[Any]
    generator: torch.Generator


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
    text_dim = encode_captions(pipe, [""], height=8, width=8).pooled.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        heads = LADDDiscriminator(feature_channels(teacher, layers), text_dim=text_dim, hidden=config.disc_hidden)
    opt_g = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    opt_d = torch.optim.AdamW(heads.parameters(), lr=config.disc_learning_rate, betas=(0.0, 0.99), weight_decay=0.0)
    warmup = max(config.warmup_steps, 1)
    sched_g, sched_d = (
        torch.optim.lr_scheduler.LambdaLR(o, lambda i: min(1.0, (i + 1) / warmup)) for o in (opt_g, opt_d)
    )
    student, heads, opt_g, opt_d, sched_g, sched_d = acc.prepare(student, heads, opt_g, opt_d, sched_g, sched_d)
    ema = copy.deepcopy(acc.unwrap_model(student)).requires_grad_(False).eval()
    schedule = NoiseSchedule(pipe.scheduler.config)
    guided = config.teacher_guidance_scale > 1.0
    uncond = encode_captions(pipe, [""], height=size[0], width=size[1]).to_unet_dtype(teacher.dtype) if guided else None
    models = Models(student, teacher, heads, TeacherFeatures(teacher, layers), schedule, uncond)
    generator = torch.Generator().manual_seed(config.seed + 1000 * acc.process_index)
    return _Run(models, ema, [opt_g, opt_d], [sched_g, sched_d], generator)


def _trained(run: _Run, acc: Any) -> dict[str, Any]:
    """The modules a checkpoint holds, unwrapped from accelerate's wrappers."""
    student, heads = acc.unwrap_model(run.models.student), acc.unwrap_model(run.models.heads)
    return {"student": student, "ema": run.ema, "heads": heads}


def _save(run: _Run, acc: Any, out: Path, step: int, seconds: float) -> None:
    """A checkpoint of everything the next step reads (see `checkpoint.py`)."""
    modules = _trained(run, acc)
    scaler = getattr(acc, "scaler", None)
    states = {
        "step": step,
        "seconds": seconds,
        "optimizers": [o.state_dict() for o in run.optimizers],
        "schedulers": [s.state_dict() for s in run.schedulers],
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    folder = checkpoint_dir(out, step)
    save_checkpoint(folder, modules=modules, states=states, generator=run.generator, process_index=acc.process_index)


def _resume(run: _Run, acc: Any, folder: Path) -> tuple[int, float]:
    """Load a checkpoint into `run`; (step, training seconds) it was taken at."""
    modules = _trained(run, acc)
    states = load_checkpoint(folder, modules=modules, generator=run.generator, process_index=acc.process_index)
    for obj, state in zip(
        [*run.optimizers, *run.schedulers], [*states["optimizers"], *states["schedulers"]], strict=True
    ):
        obj.load_state_dict(state)
    if states.get("scaler") is not None and getattr(acc, "scaler", None) is not None:
        acc.scaler.load_state_dict(states["scaler"])
    return int(states["step"]), float(states["seconds"])


def _batch(pipe: Any, images: torch.Tensor, captions: Sequence[str], config: ADDConfig, run: _Run) -> Batch:
    """A random batch (with replacement) of real latents and their captions' conditioning."""
    idx = torch.randint(images.shape[0], (config.batch_size,), generator=run.generator)
    x = images[idx]
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # (B, 3, H, W) in [-1, 1]
    latents = encode_images(pipe.vae, x).float()
    cond = encode_captions(pipe, [captions[i] for i in idx.tolist()], height=x.shape[2], width=x.shape[3])
    return Batch(latents, cond.to_unet_dtype(run.models.teacher.dtype), run.generator)


def _step(
    pipe: Any, images: torch.Tensor, captions: Sequence[str], config: ADDConfig, run: _Run, acc: Any
) -> dict[str, float]:
    """One student update, one EMA update, one discriminator update."""
    batch = _batch(pipe, images, captions, config, run)
    opt_g, opt_d = run.optimizers
    with acc.autocast():
        loss_g, fake_x0, logs = generator_step(run.models, batch, config)
    acc.backward(loss_g)
    acc.clip_grad_norm_(run.models.student.parameters(), config.max_grad_norm)
    opt_g.step()
    run.schedulers[0].step()
    opt_g.zero_grad(set_to_none=True)
    with torch.no_grad():
        for e, p in zip(run.ema.parameters(), acc.unwrap_model(run.models.student).parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - config.ema_decay)
    opt_d.zero_grad(set_to_none=True)  # the G loss also reached the heads' parameters: drop it
    with acc.autocast():
        loss_d, d_logs = discriminator_step(run.models, batch, fake_x0, config)
    acc.backward(loss_d)
    acc.clip_grad_norm_(run.models.heads.parameters(), config.max_grad_norm)
    opt_d.step()
    run.schedulers[1].step()
    opt_d.zero_grad(set_to_none=True)
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
) -> TrainResult:
    """Distil `pipe.unet` into a few-step student on `images` (N, 3, H, W; uint8, or float in [-1, 1]).

    `resume`: True for the latest checkpoint under `out_dir`, a checkpoint folder, or False for a fresh run.
    A checkpoint is written every `config.checkpoint_every` steps and always at the end; the returned student
    is the EMA. The teacher pipeline's modules are frozen and moved to the accelerator's device (in place).
    """
    config = config or ADDConfig()
    if len(captions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
    acc = accelerator or _accelerator(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _setup(pipe, config, acc, (images.shape[2], images.shape[3]))
    step, seconds = 0, 0.0
    folder = latest_checkpoint(out) if resume is True else (Path(resume) if resume else None)
    if folder is not None:
        step, seconds = _resume(run, acc, folder)
    log = LossLog(out, FIELDS, resume_step=step if folder is not None else None, write=acc.is_main_process)
    start = time.monotonic() - seconds
    while step < config.max_steps:
        step += 1
        row = _step(pipe, images, captions, config, run, acc)
        seconds = time.monotonic() - start
        log.append({"step": float(step), "seconds": seconds, **row})
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            _save(run, acc, out, step, seconds)
        if config.sample_every and step % config.sample_every == 0 and acc.is_main_process and config.sample_prompts:
            (out / "samples").mkdir(exist_ok=True)
            grid = sample_grid(pipe, run.ema, config.sample_prompts, height=images.shape[2], width=images.shape[3])
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
