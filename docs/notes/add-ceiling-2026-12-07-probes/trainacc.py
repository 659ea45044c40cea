"""Issue 30 probe (SEED=training seed, default 0): accuracy on TRAINING captions (fresh noise) vs the real data's decodes of the same captions:
is the student's held-out error a training-distribution error a discriminator could see, or a generalization one?"""
import sys, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, STUDENT, GUIDANCE
from fastdiff.distill.classifier import accuracy, shipped_classifier
from fastdiff.distill.data import shapes_images
from fastdiff.distill.evaluation import generate, HELD_OUT_SEED
from fastdiff.distill.shapes import sample_specs, caption
torch.set_num_threads(2)
from fastdiff.distill.shapes import make_shapes
SEED = int(__import__("os").environ.get("SEED", 0))
data = make_shapes(4096, seed=SEED); specs, captions = data.specs, data.captions
idx = torch.randperm(4096, generator=torch.Generator().manual_seed(7))[:192].tolist()
sub = [specs[i] for i in idx]; prompts = [captions[i] for i in idx]
clf = shipped_classifier().float()
teacher = _load(Path(TEACHER.repo_id))
real = torch.load(f"real-latents-s{SEED}.pt")[idx]
with torch.no_grad():
    dec = teacher.vae.decode(real.float(), return_dict=False)[0].clamp(-1, 1)
    enc_dec = teacher.vae.decode(teacher.vae.encode(__import__("fastdiff.distill.ablation", fromlist=["x"]).real_images(sub)).latents, return_dict=False)[0].clamp(-1, 1)
def show(name, images):
    a = accuracy(clf, images, sub); print(f"{name:28s} all {a['all']:.3f} shape {a['shape']:.3f} colour {a['color']:.3f}", flush=True)
show("refined latents decoded", dec)
show("encoder round trip", enc_dec)
for k in range(2):
    show(f"teacher@20 seed {k}", generate(teacher, prompts, steps=20, guidance=GUIDANCE, seed=HELD_OUT_SEED + k))
for name, folder in [*([("shipped ADD", STUDENT.repo_id)] if SEED == 0 else []), *[(a.split("=")[0], a.split("=")[1]) for a in sys.argv[1:]]]:
    pipe = _load(Path(folder))
    for k in range(2):
        show(f"{name}@1 seed {k}", generate(pipe, prompts, steps=1, guidance=0.0, seed=HELD_OUT_SEED + k))
