"""The ablation's real-latent cache from the shipped teacher's VAE (the tiny autoencoder, expected unchanged by the
recipe's new order: check its bytes against the new teacher's before use)."""
import time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, refined_latents
from fastdiff.distill.data import shapes_images
torch.set_num_threads(1)
images, _ = shapes_images(4096, seed=0)
t = time.perf_counter()
z = refined_latents(_load(Path(TEACHER.repo_id)), images, Path("/work/exp7/ablation/real-latents-s0.pt"))
print("minutes", round((time.perf_counter() - t) / 60, 2), z.shape)
inv = torch.load("/work/exp6/inv-s0-50-0.01.pt")
print("vs the probe's (2 threads):", float((z - inv).abs().max()), float((z - inv).norm() / inv.norm()))
