"""Issue 30 probe: ADD with a pixel-space discriminator (PatchGAN on VAE-decoded x̂0 vs VAE-round-tripped real images),
beside or instead of the latent LADD heads. Patches the trainer's two step functions; evaluates held-out @1/2/4."""
import dataclasses, json, sys, time
from pathlib import Path
import torch
from torch import nn
from fastdiff.distill import trainer as T
from fastdiff.distill.discriminator import DiscriminatorHead
from fastdiff.distill.losses import hinge_d_loss, hinge_g_loss, r1_penalty
from fastdiff.distill.ablation import _load, evaluate_model, real_images, TEACHER
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.data import shapes_images
from fastdiff.distill.evaluation import held_out_specs, HELD_OUT_SEED, image_rows
from fastdiff.distill.recipe import student_config, student_pipeline, save_fp16
from fastdiff.distill.trainer import train

label, steps, change = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
px = {k: change.pop(k) for k in list(change) if k.startswith("px_")}
PW, PLR, PGAMMA, PCH = px.get("px_weight", 1.0), px.get("px_lr", 1e-4), px.get("px_gamma", 1e-3), px.get("px_ch", 32)
for k, v in list(change.items()):
    if isinstance(v, list):
        change[k] = tuple(v)
torch.set_num_threads(1)


class PixelD(nn.Module):
    def __init__(self, text_dim, ch):
        super().__init__()
        g = lambda c: nn.GroupNorm(8, c)
        self.a = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.LeakyReLU(0.2),
                               nn.Conv2d(ch, 2 * ch, 4, 2, 1), g(2 * ch), nn.LeakyReLU(0.2),
                               nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1), g(4 * ch), nn.LeakyReLU(0.2))  # 16x16
        self.b = nn.Sequential(nn.Conv2d(4 * ch, 4 * ch, 4, 2, 1), g(4 * ch), nn.LeakyReLU(0.2))  # 8x8
        self.heads = nn.ModuleList([DiscriminatorHead(4 * ch, text_dim), DiscriminatorHead(4 * ch, text_dim)])

    def forward(self, x, pooled):
        a = self.a(x)
        b = self.b(a)
        return [self.heads[0](a, pooled), self.heads[1](b, pooled)]


S = {}


def decode(run_vae, x0):
    return run_vae.decode(x0 / run_vae.config.scaling_factor, return_dict=False)[0]


orig_g, orig_d = T.generator_step, T.discriminator_step


def generator_step(run, x0, cond, config, path=None):
    loss, fake, logs = orig_g(run, x0, cond, config, path)
    # the student's x̂0 again with grad: orig_g returns it detached, so recompute the pixel term from its graph
    student_x0 = S.pop("student_x0")
    pix = decode(S["vae"], student_x0)
    adv = hinge_g_loss(S["D"](pix, cond.pooled))
    S["fake_pix"] = pix.detach()
    logs["loss_px_g"] = adv.item()
    return loss + PW * adv, fake, logs


def discriminator_step(run, x0, cond, fake_x0, config):
    loss, logs = orig_d(run, x0, cond, fake_x0, config)
    with torch.no_grad():
        real = decode(S["vae"], x0)
    real = real.detach().requires_grad_()
    rs, fs = S["D"](real, cond.pooled), S["D"](S.pop("fake_pix"), cond.pooled)
    h = hinge_d_loss(rs, fs)
    dl = h + 0.5 * PGAMMA * r1_penalty(rs, [real]) if PGAMMA else h
    S["opt"].zero_grad(set_to_none=True)
    dl.backward()
    torch.nn.utils.clip_grad_norm_(S["D"].parameters(), 1.0)
    S["opt"].step()
    S["opt"].zero_grad(set_to_none=True)
    logs["loss_px_d"] = h.item()
    return loss, logs


# capture the student's x̂0 with its graph: wrap predict_x0 as generator_step calls it
orig_predict = T.predict_x0


def predict_x0(*a, **k):
    out = orig_predict(*a, **k)
    if out.requires_grad:
        S["student_x0"] = out
    return out


T.predict_x0 = predict_x0
T.generator_step, T.discriminator_step = generator_step, discriminator_step

out = Path("/work/exp/runs") / label
teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=0)
config = dataclasses.replace(student_config(steps, guidance=2.0, seed=0), **change)
S["vae"] = teacher.vae
from fastdiff.distill.conditioning import encode_captions
text_dim = encode_captions(teacher, [""], height=8, width=8).pooled.shape[1]
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(1234)
    S["D"] = PixelD(text_dim, PCH)
S["opt"] = torch.optim.AdamW(S["D"].parameters(), lr=PLR, betas=(0.0, 0.99), weight_decay=0.0)
T.FIELDS = T.FIELDS + ("loss_px_g", "loss_px_d")
start = time.perf_counter()
result = train(teacher, images, captions, out_dir=out / "train", config=config)
minutes = (time.perf_counter() - start) / 60
pred = config.student_prediction or "epsilon"
pipe = student_pipeline(teacher, result.student.float(), prediction_type=pred)
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
