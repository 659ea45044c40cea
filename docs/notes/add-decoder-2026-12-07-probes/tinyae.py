"""Issue 30: the recipe's tiny autoencoder stage on the shipped KL latents: encoder and decoder quality, time."""
import json, sys, time, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.recipe import tiny_autoencoder, train_tiny_autoencoder, _encode
torch.set_num_threads(1)
steps, out = int(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
kl = _load(Path(TEACHER.repo_id)).vae
images = images_to_tensor(make_shapes(4096, seed=0).images)
latents = _encode(kl, images)
tiny = tiny_autoencoder(0)
s = time.perf_counter()
train_tiny_autoencoder(tiny, images, latents, steps, seed=0, log=out / "losses.csv")
print("minutes", round((time.perf_counter() - s) / 60, 2), flush=True)
tiny.save_pretrained(out / "vae")
test = images_to_tensor(make_shapes(256, seed=99).images)
with torch.no_grad():
    z = _encode(kl, test)
    zt = _encode(tiny, test)
    dec = tiny.decode(z).sample
    dec_own = tiny.decode(zt).sample
    ref = kl.decode(z / kl.config.scaling_factor).sample
def psnr(a, b): return round(float(10 * torch.log10(4 / ((a - b) ** 2).mean())), 2)
print(json.dumps({"enc_rel_mse": float(((zt - z) ** 2).mean() / z.var()), "dec_psnr": psnr(dec, test), "own_roundtrip_psnr": psnr(dec_own, test), "kl_psnr": psnr(ref, test), "params": sum(p.numel() for p in tiny.parameters())}), flush=True)
