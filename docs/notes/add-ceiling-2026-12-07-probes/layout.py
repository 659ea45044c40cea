import torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.recipe import refine_latents
from fastdiff.distill.shapes import make_shapes
torch.set_num_threads(1)
data = make_shapes(64, seed=0)
vae = _load(Path(TEACHER.repo_id)).vae
f = images_to_tensor(data.images)
print("contiguous:", f.is_contiguous())
a = refine_latents(vae, f, steps=3)
b = refine_latents(vae, f.contiguous(), steps=3)
print("non-contiguous vs contiguous max diff:", float((a - b).abs().max()))
