"""Issue 30 probe: are there latents the shipped tiny decoder draws right? Invert the decoder per held-out image
(Adam on z from the encoder's latents) and read the shapes of decode(z*)."""
import sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, real_images
from fastdiff.distill.classifier import shipped_classifier, accuracy
from fastdiff.distill.evaluation import held_out_specs
torch.set_num_threads(2)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
pipe = _load(Path(TEACHER.repo_id)); vae = pipe.vae.float().requires_grad_(False)
print("real", accuracy(clf, real, specs)["shape"], real.shape)
with torch.no_grad():
    z0 = vae.encode(real).latents
print("roundtrip", accuracy(clf, vae.decode(z0).sample.clamp(-1, 1), specs))
for lr, beta in [(0.05, 0.0), (0.05, 1e-2)]:
    z = z0.clone().requires_grad_(True); opt = torch.optim.Adam([z], lr=lr); t = time.perf_counter()
    for i in range(201):
        x = vae.decode(z).sample
        loss = (x - real).abs().mean() + ((x - real) ** 2).mean() + beta * ((z - z0) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        if i in (25, 50, 100, 200):
            with torch.no_grad():
                d = vae.decode(z).sample.clamp(-1, 1)
                rel = ((z - z0).norm() / z0.norm()).item()
            a = accuracy(clf, d, specs)
            print(f"lr {lr} beta {beta} step {i} loss {loss.item():.4f} rel-move {rel:.3f} shape {a['shape']:.3f} all {a['all']:.3f} {time.perf_counter()-t:.0f}s", flush=True)
