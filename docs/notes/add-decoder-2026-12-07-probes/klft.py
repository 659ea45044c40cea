"""Issue 30 probe: the shipped AutoencoderKL's decoder fine-tuned on the drawn images of the encoded latents (+ jitter)."""
import sys, time, json, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.recipe import _loop
torch.set_num_threads(int(sys.argv[3]))
steps, out = int(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
vae = _load(Path(TEACHER.repo_id)).vae
images = images_to_tensor(make_shapes(4096, seed=0).images)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    mean = torch.cat([vae.encode(images[i:i + 256]).latent_dist.mean for i in range(0, 4096, 256)])
    z = torch.cat([mean, mean + 0.1 * mean.std() * torch.randn(mean.shape, generator=g)])
    target = torch.cat([images, images])
test = images_to_tensor(make_shapes(256, seed=99).images)
def psnr(a, b): return round(float(10 * torch.log10(4 / ((a - b) ** 2).mean())), 2)
with torch.no_grad():
    zt = vae.encode(test).latent_dist.mean; before = psnr(vae.decode(zt).sample, test)
vae.train()
params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
def loss_fn():
    idx = torch.randint(z.shape[0], (32,), generator=g)
    e = vae.decode(z[idx]).sample - target[idx]
    return e.abs().mean() + e.pow(2).mean()
s = time.perf_counter()
_loop(params, steps, 5e-4, loss_fn, out / "losses.csv")
print("minutes", round((time.perf_counter() - s) / 60, 2), flush=True)
vae.eval(); vae.save_pretrained(out / "vae")
with torch.no_grad():
    print(json.dumps({"kl_vs_real_before": before, "kl_vs_real_after": psnr(vae.decode(zt).sample, test)}), flush=True)
