"""The recipe of the shipped `fastdiff-shapes` models, from scratch on the drawn `shapes` set (docs/distill.md).

`python -m fastdiff.distill.recipe --out DIR [--minutes M]` trains (a) a tiny `AutoencoderKL`, which sets the latent
space, (b) the `AutoencoderTiny` both models ship with (its decoder draws the images of those latents, its encoder
regresses them), then (c) refines each image's latent until that decoder redraws it, and trains (d) a tiny CLIP text
encoder and the teacher UNet (SD 1.x wiring) on the refined latents and (e) the ADD student on the teacher's sampling
paths, the refined latents its discriminator's real data. On one kind of CPU the same command gives the same
weights bit for bit; another kind's fp32 kernels round differently, and training makes other weights of the same
recipe (docs/distill.md). DIR gets `teacher/` and `student/` (fp16 diffusers folders), loss CSVs, a grid,
`figures.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .classifier import images_to_tensor
from .conditioning import NoiseSchedule, decode_latents, encode_captions, encode_images
from .config import ADDConfig
from .evaluation import eval_specs, generate, image_rows, prompt_accuracy
from .losses import predict_x0
from .shapes import VOCABULARY, caption, make_shapes
from .trainer import train

__all__ = [
    "SCHEDULER_CONFIG",
    "build_pipeline",
    "main",
    "refine_latents",
    "save_fp16",
    "student_config",
    "student_pipeline",
    "teacher_trajectories",
    "tokenizer",
    "training_trajectories",
    "with_vae",
]

_D: Any = diffusers  # its classes are untyped

# SD 1.5's scheduler/scheduler_config.json (PNDM over the scaled-linear DDPM betas).
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
MAX_TOKENS = 16  # the longest caption is 12 words, plus BOS and EOS
# Nominal seconds per step on one core, which split --minutes into step counts (fixed, so that a budget always
# means the same steps); the runs so far took 0.27, 0.17, 0.23 and 0.28 with the other core busy. Keep these values,
# or --minutes 40 no longer gives the shipped weights. The latents' refinement has fixed steps of its own (50).
STEP_SECONDS = {"vae": 0.28, "teacher": 0.20, "tiny_vae": 0.225, "student": 0.30}
# Each stage's steps as a share of --minutes at those costs: 2571, 10800, 8000 and 7200 steps at the shipped 40. The
# student's share grew from 0.15 (1200 steps) to 0.45 with the x̂0 student and to 0.90 with its 4-step target, the
# teacher's from 0.45 to 0.90 (its accuracy is the student's ceiling); the tiny autoencoder's was added after them.
SHARE = {"vae": 0.30, "teacher": 0.90, "tiny_vae": 0.75, "student": 0.90}
TRAJECTORY_STEPS = 20  # the teacher's Euler steps along the student's sampling paths (its preset's 20)
GUIDANCES = (1.0, 2.0, 4.0, 7.5)  # the teacher's CFG scale at 20 steps is the best of these on held-out prompts


def tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE merges build each word of the `shapes` grammar: one token per word."""
    words = sorted(VOCABULARY)
    merges: list[tuple[str, str]] = []
    tokens = [UNK]
    for word in words:  # merged right to left: only the last pair of a word ever ends in </w>, so none collide
        pieces = [*word[:-1], word[-1] + "</w>"]
        tokens += pieces
        while len(pieces) > 1:
            merges.append((pieces[-2], pieces[-1]))
            pieces = [*pieces[:-2], pieces[-2] + pieces[-1]]
            tokens.append(pieces[-1])
    vocab = {t: i for i, t in enumerate([*dict.fromkeys(tokens), BOS, EOS])}  # EOS last: CLIP pools the highest id
    merges = list(dict.fromkeys(merges))
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # pairs, as tokenizers takes them
        unk_token=UNK,
        pad_token=EOS,
        model_max_length=MAX_TOKENS,
    )


def build_pipeline(seed: int) -> Any:
    """The untrained pipeline: SD 1.x wiring at toy width (VAE factor 8, 4 latent channels, 64-d text)."""
    torch.manual_seed(seed)
    tok = tokenizer()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu", bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=64,
        )
    )  # fmt: skip
    vae = _D.AutoencoderKL(
        block_out_channels=(8, 16, 32, 64), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64,
    )  # fmt: skip
    unet = _D.UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8,
    )  # fmt: skip
    parts: dict[str, Any] = {"vae": vae, "text_encoder": text, "tokenizer": tok, "unet": unet}
    parts |= {"scheduler": _D.PNDMScheduler.from_config(SCHEDULER_CONFIG), "safety_checker": None}
    return _D.StableDiffusionPipeline(**parts, feature_extractor=None, requires_safety_checker=False)


def step_counts(minutes: float) -> dict[str, int]:
    """The steps of each stage in `--minutes M` (the student's: 7200 for the shipped 40)."""
    return {k: max(20, int(SHARE[k] * minutes * 60 / STEP_SECONDS[k])) for k in SHARE}


def _lr(step: int, steps: int, base: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def _loop(
    params: Sequence[torch.nn.Parameter], steps: int, lr: float, loss_fn: Callable[[], torch.Tensor], log: Path
) -> None:
    """`steps` AdamW updates of `params` on `loss_fn()`, each step's loss written to the CSV file `log`."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    with log.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(("step", "loss"))
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr(step, steps, lr)
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            rows.writerow((step, loss.item()))


def train_vae(vae: Any, images: torch.Tensor, steps: int, *, seed: int, log: Path) -> None:
    """L1 + L2 reconstruction + 1e-6·KL, batch 16; then the scale giving unit-variance latents. The posterior mean is
    decoded, not a sample: the diffusion models only ever see `latent_dist.mode()`, as `fastdiff.distill` encodes."""
    g = torch.Generator().manual_seed(seed)
    vae.train()

    def loss_fn() -> torch.Tensor:
        x = images[torch.randint(images.shape[0], (16,), generator=g)]
        post = vae.encode(x).latent_dist
        error = vae.decode(post.mode()).sample - x
        loss: torch.Tensor = error.abs().mean() + error.pow(2).mean() + 1e-6 * post.kl().mean()
        return loss

    _loop(list(vae.parameters()), steps, 2e-3, loss_fn, log)
    vae.eval()
    vae.register_to_config(scaling_factor=1.0)  # so that `_encode` gives the posterior means, whose std sets it
    vae.register_to_config(scaling_factor=float(1.0 / _encode(vae, images[:1024]).std()))


def _encode(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """The scaled latents (N, 4, 8, 8) the UNet sees of (N, 3, 64, 64) images, 256 at a time."""
    return torch.cat([encode_images(vae, images[i : i + 256]) for i in range(0, len(images), 256)])


def tiny_autoencoder(seed: int) -> Any:
    """The untrained `AutoencoderTiny` (TAESD's layout at 16 channels, decoder blocks 1/1/1/0: 65 k parameters, 29 k
    of them the decoder's) on the teacher's scaled latents: `scaling_factor` 1, so it reads and writes exactly what
    the UNet sees."""
    torch.manual_seed(seed)
    return _D.AutoencoderTiny(
        encoder_block_out_channels=(16,) * 4, num_encoder_blocks=(1, 1, 1, 1),
        decoder_block_out_channels=(16,) * 4, num_decoder_blocks=(1, 1, 1, 0), scaling_factor=1.0,
    )  # fmt: skip


def train_tiny_autoencoder(
    vae: Any, images: torch.Tensor, latents: torch.Tensor, steps: int, *, seed: int, log: Path
) -> None:
    """The decoder draws each image from its latent (and from that latent jittered by 0.1 of the latents' std, so
    that a sampler's near misses also decode cleanly), L1 + L2; the encoder regresses the latents (MSE); batch 32.
    Its target is the drawn image, not the KL decoder's: that decoder's blur and rings would be copied with it."""
    g = torch.Generator().manual_seed(seed)
    vae.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(images.shape[0], (32,), generator=g)
        x, z = images[idx], latents[idx]
        jitter = torch.where(torch.rand(32, 1, 1, 1, generator=g) < 0.5, 0.1 * latents.std(), 0.0)
        error = vae.decode(z + jitter * torch.randn(z.shape, generator=g)).sample - x
        loss: torch.Tensor = error.abs().mean() + error.pow(2).mean() + F.mse_loss(vae.encode(x).latents, z)
        return loss

    _loop(list(vae.parameters()), steps, 2e-3, loss_fn, log)
    vae.eval()


def refine_latents(
    vae: Any, images: torch.Tensor, *, steps: int = 50, lr: float = 0.05, anchor: float = 0.01, chunk: int = 512
) -> torch.Tensor:
    """Latents (N, C, h, w) that `vae`'s decoder redraws `images` (N, 3, H, W; uint8, or float in [-1, 1]) from:
    `steps` Adam steps on each latent from the encoder's, on the decode's L1 + L2 plus `anchor`·‖z − z_enc‖² (means);
    `vae` is frozen. An encoder is fitted to all images at once and misses each one a little (the amortisation gap,
    Cremer et al. 2018): here its latents lose small shapes that the decoder can draw
    (docs/notes/add-ceiling-2026-12-07.md)."""
    vae.requires_grad_(False)
    out = []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].contiguous()  # a permuted layout would change the convolutions' sums and the latents
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        with torch.no_grad():
            z_enc = encode_images(vae, x).float()
        z = z_enc.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            error = decode_latents(vae, z) - x
            loss = error.abs().mean() + error.pow(2).mean() + anchor * (z - z_enc).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        out.append(z.detach())
    return torch.cat(out)


def with_vae(pipe: Any, vae: Any) -> Any:
    """`pipe` (a `StableDiffusionPipeline`) with `vae` in place of its own."""
    return _D.StableDiffusionPipeline(**(pipe.components | {"vae": vae}), requires_safety_checker=False)


def train_teacher(
    pipe: Any, latents: torch.Tensor, captions: Sequence[str], steps: int, *, seed: int, log: Path
) -> None:
    """ε-prediction MSE over t ~ U[0, 999] (Ho et al. 2020), the text encoder trained jointly, 10 % empty captions."""
    g = torch.Generator().manual_seed(seed)
    schedule = NoiseSchedule(SCHEDULER_CONFIG)
    ids = torch.tensor(pipe.tokenizer(list(captions), padding="max_length", max_length=MAX_TOKENS).input_ids)
    empty = torch.tensor(pipe.tokenizer([""], padding="max_length", max_length=MAX_TOKENS).input_ids)
    pipe.unet.train(), pipe.text_encoder.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(latents.shape[0], (32,), generator=g)
        tokens = torch.where(torch.rand(32, 1, generator=g) < 0.1, empty, ids[idx])  # (B, L)
        x0, eps = latents[idx], torch.randn(latents[idx].shape, generator=g)  # (B, 4, 8, 8)
        t = torch.randint(0, 1000, (32,), generator=g)
        hidden = pipe.text_encoder(tokens)[0]  # (B, L, 64)
        out = pipe.unet(schedule.noise(x0, eps, t), t, encoder_hidden_states=hidden).sample
        return F.mse_loss(out, eps)

    params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
    _loop(params, steps, 5e-4, loss_fn, log)
    pipe.unet.eval(), pipe.text_encoder.eval()


def save_fp16(pipe: Any, folder: Path) -> int:
    """Write `pipe` as an fp16 diffusers folder (no variant suffix) and keep the fp16-rounded weights in memory."""
    pipe.to(torch.float16).save_pretrained(folder)
    pipe.to(torch.float32)  # what is evaluated and distilled from is exactly what ships
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def student_pipeline(pipe: Any, unet: Any, *, prediction_type: str | None = None) -> Any:
    """The teacher's VAE, text encoder and tokenizer with the student UNet and Euler trailing (SDXL-Turbo's recipe),
    reading the UNet's output as `prediction_type` (`ADDConfig.student_prediction`: None as the teacher, ε)."""
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer")}
    kind = {"prediction_type": prediction_type} if prediction_type else {}
    euler = _D.EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG, timestep_spacing="trailing", **kind)
    return _D.StableDiffusionPipeline(
        **parts, unet=unet, scheduler=euler, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


@torch.no_grad()
def teacher_trajectories(
    pipe: Any, captions: Sequence[str], noise: torch.Tensor, *, steps: int, guidance: float, timesteps: Sequence[int]
) -> torch.Tensor:
    """The ε-prediction teacher's samples of `captions` from `noise` (N, C, h, w) by `steps` Euler trailing steps
    with CFG `guidance`, as `student_pipeline(pipe, pipe.unet)` draws them (LADD's synthetic data): its latents at
    each of `timesteps` (on that grid), then the sample, (N, T + 1, C, h, w)."""
    schedule = NoiseSchedule(pipe.scheduler.config)
    grid = _D.EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    grid.set_timesteps(steps)
    path = [int(t) for t in grid.timesteps]
    if missing := set(timesteps) - set(path):
        raise ValueError(f"timesteps {sorted(missing)} are not on the {steps}-step trailing grid {path}")
    uncond, out = encode_captions(pipe, [""], height=64, width=64), []
    for i in range(0, len(captions), 256):
        cond = encode_captions(pipe, captions[i : i + 256], height=64, width=64).with_uncond(uncond)
        x = noise[i : i + 256] * float(schedule.alpha_sigma(torch.tensor(path[0]))[1])  # σ·ε: the sampler's start
        states = {}
        for t, following in zip(path, [*path[1:], None], strict=True):
            states[t], t_ = x, torch.full((x.shape[0],), t)
            eps_c, eps_u = pipe.unet(torch.cat([x, x]), torch.cat([t_, t_]), cond.hidden).sample.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
            x0 = predict_x0(eps, x, *schedule.alpha_sigma(t_), prediction_type="epsilon")
            if following is not None:  # Euler's step on an ε-prediction is DDIM's: x0 and ε kept, re-mixed
                a, s = (v.view(-1, 1, 1, 1) for v in schedule.alpha_sigma(torch.full_like(t_, following)))
                x = a * x0 + s * eps
        out.append(torch.stack([*(states[t] for t in timesteps), x0], dim=1))
    return torch.cat(out)


def training_trajectories(pipe: Any, captions: Sequence[str], config: ADDConfig) -> torch.Tensor:
    """The teacher's `TRAJECTORY_STEPS`-step sampling paths of `captions` at the student's timesteps and target
    guidance (`teacher_trajectories`), from noise of seed `config.seed + 1`: the student's inputs and targets."""
    noise = torch.randn(len(captions), 4, 8, 8, generator=torch.Generator().manual_seed(config.seed + 1))
    return teacher_trajectories(
        pipe, captions, noise, steps=TRAJECTORY_STEPS, guidance=config.teacher_guidance_scale,
        timesteps=config.student_timesteps,
    )  # fmt: skip


def _pick_guidance(pipe: Any) -> tuple[float, dict[str, dict[str, float]]]:
    """The teacher's CFG scale at 20 steps: the best all-four accuracy (then colour) on 24 held-out prompts."""
    specs = eval_specs(24, seed=1)
    scores = {str(g): prompt_accuracy(pipe, specs, steps=20, guidance=g) for g in GUIDANCES}
    best = max(GUIDANCES, key=lambda g: (scores[str(g)]["all"], scores[str(g)]["color"]))
    return best, scores


def student_config(steps: int, *, guidance: float, seed: int) -> ADDConfig:
    """The shipped student's ADD run: the paper's score distillation, λ = 2.5 on the summed squared error towards the
    teacher's sample (guided at `guidance`, 4 DDIM steps) from the student's output re-noised to s ~ U[20, 980], from
    inputs on the teacher's sampling paths; the adversarial term weighted 3 against the refined real latents; student
    LR 1e-4, discriminator LR 1e-3, EMA 0.99; the student predicts x̂0 and sees t = 999 (its one-step input) as often
    as the three other timesteps together (docs/notes/add-recipe-2026-12-06.md, add-decoder-2026-12-07.md and
    add-ceiling-2026-12-07.md have the runs behind each choice)."""
    return ADDConfig(
        max_steps=steps, batch_size=16, learning_rate=1e-4, disc_learning_rate=1e-3, warmup_steps=20,
        ema_decay=0.99, teacher_guidance_scale=guidance, seed=seed, student_prediction="sample",
        student_timesteps=(999, 999, 999, 749, 499, 249), distill_target="teacher", teacher_target_steps=4,
        adversarial_weight=3.0,
    )  # fmt: skip


def run(out: Path, *, minutes: float, seed: int = 0) -> dict[str, Any]:
    """The whole recipe, (a)-(e) of the module docstring; returns (and writes to `out/figures.json`) its figures."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    steps, clock, times = step_counts(minutes), time.perf_counter(), {}
    data = make_shapes(4096, seed=seed)
    images = images_to_tensor(data.images)  # (N, 3, 64, 64) in [-1, 1]
    pipe = build_pipeline(seed)
    train_vae(pipe.vae, images, steps["vae"], seed=seed, log=out / "vae_losses.csv")
    latents = _encode(pipe.vae, images)  # (N, 4, 8, 8)
    times["vae"] = time.perf_counter() - clock
    tiny = tiny_autoencoder(seed)
    train_tiny_autoencoder(tiny, images, latents, steps["tiny_vae"], seed=seed, log=out / "tiny_vae_losses.csv")
    tiny.to(torch.float16).to(torch.float32)  # the latents are refined for the decoder that ships (in fp16)
    times["tiny_vae"] = time.perf_counter() - clock - times["vae"]
    refined = refine_latents(tiny, images)
    times["refine"] = time.perf_counter() - clock - times["vae"] - times["tiny_vae"]
    pipe = with_vae(pipe, tiny)
    train_teacher(pipe, refined, data.captions, steps["teacher"], seed=seed, log=out / "teacher_losses.csv")
    sizes = {"teacher": save_fp16(pipe, out / "teacher")}
    guidance, guidance_scores = _pick_guidance(pipe)
    times["teacher"] = time.perf_counter() - clock - sum(times.values())
    config = student_config(steps["student"], guidance=guidance, seed=seed)
    images_u8 = torch.tensor(data.images).permute(0, 3, 1, 2).contiguous()
    paths = training_trajectories(pipe, data.captions, config)
    result = train(
        pipe, images_u8, data.captions, out_dir=out / "add", config=config, trajectories=paths, real_latents=refined
    )
    student = student_pipeline(pipe, result.student.float(), prediction_type=config.student_prediction)
    sizes["student"] = save_fp16(student, out / "student")
    times["student"] = time.perf_counter() - clock - sum(times.values())
    figures = {"steps": steps, "teacher_guidance": guidance, "guidance_search": guidance_scores}
    figures |= {"seconds": times, "bytes": sizes}
    specs = eval_specs()
    figures["accuracy"] = {
        "teacher@20": prompt_accuracy(pipe, specs, steps=20, guidance=guidance),
        "student@1": prompt_accuracy(student, specs, steps=1, guidance=0.0),
        "student@4": prompt_accuracy(student, specs, steps=4, guidance=0.0),
    }
    prompts = [caption(s) for s in specs[:12]]
    rows = [generate(pipe, prompts, steps=20, guidance=guidance), generate(student, prompts, steps=1, guidance=0.0)]
    image_rows(rows, out / "grid.png")
    times["total"] = time.perf_counter() - clock
    figures |= {"minutes": minutes, "seed": seed, "prompts_in_grid": prompts}
    (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fastdiff.distill.recipe --out DIR [--minutes M] [--seed S]`."""
    parser = argparse.ArgumentParser(prog="python -m fastdiff.distill.recipe", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--minutes", type=float, default=40.0, help="training budget, split by fixed step costs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = run(args.out, minutes=args.minutes, seed=args.seed)
    print(json.dumps({k: figures[k] for k in ("teacher_guidance", "accuracy", "seconds", "bytes")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
