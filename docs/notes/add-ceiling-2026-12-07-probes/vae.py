"""Issue 30 probe: does a wider KL VAE keep the small shapes? The recipe's VAE stage (train_vae, 2571 steps, seed 0)
on a VAE of BLOCKS channels; then the classifier on the round trips of 96 held-out drawings (256 new ones too) and
an MLP probe of the shape from the latents, by size. Usage: python vae.py 8,16,32,64 STEPS OUT"""
import json, sys, time, torch, diffusers
import torch.nn as nn
from pathlib import Path
from fastdiff.distill.ablation import real_images
from fastdiff.distill.classifier import images_to_tensor, shipped_classifier, accuracy
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.recipe import build_pipeline, train_vae, _encode
from fastdiff.distill.shapes import make_shapes, SHAPES
torch.set_num_threads(1)
blocks, steps, out = tuple(int(b) for b in sys.argv[1].split(",")), int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
pipe = build_pipeline(0)  # the recipe's seeding; the VAE replaced when its channels differ
vae = pipe.vae
if blocks != (8, 16, 32, 64):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=blocks, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64)
data = make_shapes(4096, seed=0)
images = images_to_tensor(data.images)
s = time.perf_counter()
train_vae(vae, images, steps, seed=0, log=out / "losses.csv")
minutes = (time.perf_counter() - s) / 60
vae.save_pretrained(out / "vae")
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
with torch.no_grad():
    z = _encode(vae, real)
    rt = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
res = {"minutes": minutes, "params": sum(p.numel() for p in vae.parameters()), "roundtrip": accuracy(clf, rt, specs),
       "psnr": float(10 * torch.log10(4 / ((rt - real) ** 2).mean()))}
ztr = _encode(vae, images).flatten(1); ytr = torch.tensor([SHAPES.index(x.shape) for x in data.specs])
te = make_shapes(512, seed=777); zte = _encode(vae, images_to_tensor(te.images)).flatten(1)
yte = torch.tensor([SHAPES.index(x.shape) for x in te.specs])
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(ztr.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
opt = torch.optim.Adam(net.parameters(), 1e-3)
for i in range(4000):
    idx = torch.randint(4096, (128,)); loss = nn.functional.cross_entropy(net(ztr[idx]), ytr[idx])
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad(): p = net(zte).argmax(1)
res["probe"] = {sz: float((p[m] == yte[m]).float().mean()) for sz in ("small", "medium", "large") if (m := torch.tensor([x.size == sz for x in te.specs])).any()}
print(json.dumps(res), flush=True)
(out / "result.json").write_text(json.dumps(res, indent=1))
