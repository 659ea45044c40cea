"""Issue 30 probe: an AutoencoderTiny decoder (16 ch, blocks 1/1/1/0) on the shipped latent space.
mode 'real': target = the drawn image of the encoded latent (+ jitter); mode 'kl': target = the KL decoder's image."""
import sys, time, json, torch
from pathlib import Path
from diffusers import AutoencoderTiny
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.recipe import _loop
torch.set_num_threads(1)
mode, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
kl = _load(Path(TEACHER.repo_id)).vae
sf = kl.config.scaling_factor
images = images_to_tensor(make_shapes(4096, seed=0).images)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    mean = torch.cat([kl.encode(images[i:i + 256]).latent_dist.mean for i in range(0, 4096, 256)]) * sf
    zj = mean + 0.1 * mean.std() * torch.randn(mean.shape, generator=g)
    z = torch.cat([mean, zj])
    target = torch.cat([images, images]) if mode == "real" else torch.cat([kl.decode(z[i:i + 256] / sf).sample for i in range(0, len(z), 256)])
torch.manual_seed(0)
tiny = AutoencoderTiny(decoder_block_out_channels=(16,) * 4, num_decoder_blocks=(1, 1, 1, 0),
                       encoder_block_out_channels=(16,) * 4, num_encoder_blocks=(1, 1, 1, 1), scaling_factor=1.0)
tiny.train()
def loss_fn():
    idx = torch.randint(z.shape[0], (32,), generator=g)
    e = tiny.decode(z[idx]).sample - target[idx]
    return e.abs().mean() + e.pow(2).mean()
s = time.perf_counter()
_loop(list(tiny.decoder.parameters()), steps, 2e-3, loss_fn, out / "losses.csv")
print("minutes", round((time.perf_counter() - s) / 60, 2), flush=True)
tiny.eval(); tiny.save_pretrained(out / "vae")
test = images_to_tensor(make_shapes(256, seed=99).images)
with torch.no_grad():
    zt = kl.encode(test).latent_dist.mean
    ref = kl.decode(zt).sample
    dec = tiny.decode(zt * sf).sample
def psnr(a, b): return round(float(10 * torch.log10(4 / ((a - b) ** 2).mean())), 2)
print(json.dumps({"mode": mode, "tiny_vs_kl": psnr(dec, ref), "tiny_vs_real": psnr(dec, test), "kl_vs_real": psnr(ref, test)}), flush=True)
