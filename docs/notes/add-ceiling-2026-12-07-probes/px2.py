"""Issue 30 probe: ADD's own discriminator kind, in pixel space: a PatchGAN (projection heads at 16x16 and 8x8) on
the tiny decoder's image of the student's x0 against the DRAWN images (not their VAE round trips), optionally
matching-aware (real images under another row's caption scored as fakes), beside the latent LADD heads.
Usage: python px2.py SEED OUT WEIGHT MISMATCH(0/1) [key=value ...]"""
import dataclasses, sys, time, torch
from pathlib import Path
from torch import nn
from fastdiff.distill import trainer as T
from fastdiff.distill.discriminator import DiscriminatorHead
from fastdiff.distill.losses import hinge_d_loss, hinge_g_loss, r1_penalty
from fastdiff.distill.ablation import _load, TEACHER, student_configs, RECIPE_STEPS
from fastdiff.distill.conditioning import encode_captions
from fastdiff.distill.data import shapes_images
from fastdiff.distill.recipe import save_fp16, student_pipeline, training_trajectories
torch.set_num_threads(1)
seed, out, PW, MIS = int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), bool(int(sys.argv[4]))
changes = {k: eval(v) for k, v in (a.split("=", 1) for a in sys.argv[5:])}
PLR, PGAMMA, PCH = 1e-3, 1e-3, int(__import__('os').environ.get('PCH', 8))


class PixelD(nn.Module):
    def __init__(self, text_dim, ch):
        super().__init__()
        g = lambda c: nn.GroupNorm(8, c)
        self.a = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.LeakyReLU(0.2),
                               nn.Conv2d(ch, 2 * ch, 4, 2, 1), g(2 * ch), nn.LeakyReLU(0.2),
                               nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1), g(4 * ch), nn.LeakyReLU(0.2))  # 16x16
        self.b = nn.Sequential(nn.Conv2d(4 * ch, 4 * ch, 4, 2, 1), g(4 * ch), nn.LeakyReLU(0.2))  # 8x8
        self.heads = nn.ModuleList([DiscriminatorHead(4 * ch, text_dim, 32), DiscriminatorHead(4 * ch, text_dim, 32)])

    def forward(self, x, pooled):
        a = self.a(x)
        return [self.heads[0](a, pooled), self.heads[1](self.b(a), pooled)]


S = {}
orig_g, orig_d, orig_predict, orig_encode = T.generator_step, T.discriminator_step, T.predict_x0, T.encode_images


def predict_x0(*a, **k):  # keep the student's x0 with its graph (generator_step returns it detached)
    out = orig_predict(*a, **k)
    if out.requires_grad:
        S["student_x0"] = out
    return out


def encode_images(vae, images):  # keep the batch's drawn images: the pixel discriminator's real data
    S["real_pix"] = images.float()
    return orig_encode(vae, images)


def generator_step(run, x0, cond, config, path=None):
    loss, fake, logs = orig_g(run, x0, cond, config, path)
    pix = S["vae"].decode(S.pop("student_x0"), return_dict=False)[0]
    adv = hinge_g_loss(S["D"](pix, cond.pooled))
    S["fake_pix"] = pix.detach()
    logs["loss_px_g"] = adv.item()
    return loss + PW * adv, fake, logs


def discriminator_step(run, x0, cond, fake_x0, config):
    loss, logs = orig_d(run, x0, cond, fake_x0, config)
    real = S.pop("real_pix").detach().requires_grad_()
    rs, fs = S["D"](real, cond.pooled), S["D"](S.pop("fake_pix"), cond.pooled)
    ms = S["D"](real.detach(), cond.rolled().pooled) if MIS else None
    h = hinge_d_loss(rs, fs, ms)
    dl = h + 0.5 * PGAMMA * r1_penalty(rs, [real])
    S["opt"].zero_grad(set_to_none=True)
    dl.backward()
    torch.nn.utils.clip_grad_norm_(S["D"].parameters(), 1.0)
    S["opt"].step()
    S["opt"].zero_grad(set_to_none=True)
    logs["loss_px_d"] = h.item()
    return loss, logs


T.predict_x0, T.encode_images = predict_x0, encode_images
T.generator_step, T.discriminator_step = generator_step, discriminator_step
T.FIELDS = T.FIELDS + ("loss_px_g", "loss_px_d")

teacher = _load(Path(TEACHER.repo_id))
images, captions = shapes_images(4096, seed=seed)
config = dataclasses.replace(student_configs(steps=RECIPE_STEPS, seed=seed)["add"], **changes)
print(config, PW, MIS, flush=True)
S["vae"] = teacher.vae
text_dim = encode_captions(teacher, [""], height=64, width=64).pooled.shape[1]
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(1234 + seed)
    S["D"] = PixelD(text_dim, PCH)
S["opt"] = torch.optim.AdamW(S["D"].parameters(), lr=PLR, betas=(0.0, 0.99), weight_decay=0.0)
start = time.perf_counter()
cache = Path(f"/work/exp5/traj-s{seed}.pt")
if cache.is_file():
    paths = torch.load(cache)
else:
    paths = training_trajectories(teacher, captions, config)
    torch.save(paths, cache)
result = T.train(teacher, images, captions, out_dir=out / "train", config=config, trajectories=paths)
pipe = student_pipeline(teacher, result.student.float(), prediction_type=config.student_prediction)
save_fp16(pipe, out / "pipeline")
print("minutes", round((time.perf_counter() - start) / 60, 2), flush=True)
