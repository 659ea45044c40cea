"""Issue 30 probe: the training images' latents refined so that the shipped tiny decoder redraws each image
(Adam on z from the encoder's latents, L1 + L2 of the decode, beta * ||z - z0||^2), saved per data seed."""
import sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.conditioning import encode_images
from fastdiff.distill.data import shapes_images
torch.set_num_threads(2)
STEPS, LR, BETA = int(sys.argv[2]), 0.05, float(sys.argv[3])
vae = _load(Path(TEACHER.repo_id)).vae.float().requires_grad_(False)
for seed in map(int, sys.argv[1].split(",")):
    images, _ = shapes_images(4096, seed=seed)
    out, t = [], time.perf_counter()
    for chunk in images.split(512):
        x = chunk.float() / 127.5 - 1.0
        with torch.no_grad():
            z0 = encode_images(vae, x).float()
        z = z0.clone().requires_grad_(True); opt = torch.optim.Adam([z], lr=LR)
        for _ in range(STEPS):
            d = vae.decode(z).sample
            loss = (d - x).abs().mean() + ((d - x) ** 2).mean() + BETA * ((z - z0) ** 2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
        out.append(z.detach())
    torch.save(torch.cat(out), f"inv-s{seed}-{STEPS}-{BETA}.pt")
    print(seed, "minutes", round((time.perf_counter() - t) / 60, 2), flush=True)
